"""Order statistics for benchmark samples (no numpy needed)."""

import math

__all__ = ["percentile", "summarize", "ratio"]


def percentile(samples, q):
    """Return the q-th percentile (0..100), linear interpolation like numpy."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q!r}")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples):
    """Return n, min, p50, p90, p99, max and mean of samples as a dict."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "min": min(samples),
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples),
        "mean": sum(samples) / len(samples),
    }


def ratio(value, reference):
    """Return value / reference, or None when either is missing or zero."""
    if value is None or not reference:
        return None
    return value / reference
