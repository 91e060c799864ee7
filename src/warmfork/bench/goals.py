"""The issue's targets, as ratios read from one run's rows (never asserted)."""

from .methods import RAW, base

__all__ = ["evaluate"]


def _p50(rows, figure, method, by_base=False):
    for r in rows:
        if r["figure"] != figure:
            continue
        if r["method"] == method or by_base and base(r["method"]) == method:
            return r["stats"].get("p50")
    return None


def _biggest_mem(rows):
    mems = [r["mem_mb"] for r in rows if r["figure"].startswith("start@")]
    return max(mems) if mems else None


def _biggest_arg(rows):
    mbs = [r["arg_mb"] for r in rows
           if r["figure"].startswith("start+arg@")]
    return max(mbs) if mbs else None


def evaluate(rows, m="warmfork"):
    """Return one dict per target: name, value, op, limit, status."""
    def p(fig, meth, by_base=False):
        return _p50(rows, fig, meth, by_base)

    def quot(a, b):
        return a / b if a is not None and b else None

    big = _biggest_mem(rows)
    big_fig = f"start@{big}MB" if big else None
    goals = [   # issue 10's targets
        (f"isolated start {m} / raw fork+byte", "<=", 0.5,
         quot(p("start", m), p("start", RAW))),
        (f"back-to-back start {m} / raw fork+byte", "<=", 0.8,
         quot(p("burst", m), p("start", RAW))),
        (f"forkserver start / {m} start", ">=", 4,
         quot(p("start", "forkserver"), p("start", m))),
        (f"round trip {m} / raw fork+_exit+waitpid", "<=", 1.3,
         quot(p("roundtrip", m), p("roundtrip", RAW))),
        (f"throughput {m} / forkserver (procs/s)", ">=", 1.5,
         quot(p("throughput", "forkserver"), p("throughput", m))),
        (f"CPU per child {m} / fork", "<=", 1.0,
         quot(p("cpu", m), p("cpu", "fork"))),
        (f"start at {big or '?'} MB parent / at 0 MB ({m})", "<=", 1.1,
         quot(p(big_fig, m), p("start", m)) if big_fig else None),
        (f"start numpy preloaded / no numpy ({m})", "<=", 1.2,
         quot(p("start+numpy", m, by_base=True), p("start", m))),
        # issue 12's: a fresh process per task
        (f"executor {m} / forkserver pool, 1 task per child", "<=", 0.2,
         quot(p("executor", m), p("executor", "forkserver"))),
        (f"executor {m} / fork pool, workers reused", "<=", 3.0,
         quot(p("executor", m), p("executor", "fork"))),
    ]
    arg = _biggest_arg(rows)
    if arg:                 # issue 11's, only when the "args" figure ran
        fig = f"start+arg@{arg}MB"
        goals += [
            (f"start with a {arg} MB array {m} / fork", "<=", 1.5,
             quot(p(fig, m, by_base=True), p(fig, "fork"))),
            (f"start with a {arg} MB array {m} / forkserver", "<=", 0.1,
             quot(p(fig, m, by_base=True), p(fig, "forkserver",
                                               by_base=True))),
        ]
    out = []
    for name, op, limit, value in goals:
        if value is None:
            status = "n/a"
        elif op == "<=":
            status = "PASS" if value <= limit else "MISS"
        else:
            status = "PASS" if value >= limit else "MISS"
        out.append({"target": name, "op": op, "limit": limit,
                    "value": value, "status": status})
    return out
