"""Where one start's time goes, as seen from Python (for benchmarks/README).

``time.perf_counter_ns`` is CLOCK_MONOTONIC on Linux, shared by all
processes, so the child's target stamps the moment it runs and the start
splits into three phases:

- ``start()``: the parent's ``Process.start()`` call, until it returns;
- ``to target``: from ``start()`` returning until the child's target runs
  (server fork, child set-up, unpickling the process object);
- ``to parent``: from the target's write until the parent has read it.

Run ``python -m warmfork.bench.breakdown [--rounds N] [METHOD ...]``.  The
stamp target's module is preloaded for forkserver and warmfork, so that no
child pays for importing it.
"""

import argparse
import os
import sys
import time

from . import methods, payloads, stats

__all__ = ["breakdown", "main"]

_PRELOAD = "warmfork.bench.payloads"


def _one(ctx):
    parent_r, child_w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=payloads.stamp, args=(child_w,))
    try:
        t0 = time.perf_counter_ns()
        p.start()
        t1 = time.perf_counter_ns()
        t_target = int.from_bytes(parent_r.recv_bytes(), "little")
        t2 = time.perf_counter_ns()
        p.join()
    finally:
        parent_r.close()
        child_w.close()
    return t1 - t0, t_target - t1, t2 - t_target, t2 - t0


def breakdown(specs, rounds, warmup=3):
    """Return {spec: {phase: p50 ns}} with methods interleaved per round."""
    ctxs = {s: methods.make_context(s) for s in specs}
    phases = ("start()", "to target", "to parent", "total")
    got = {s: {ph: [] for ph in phases} for s in specs}
    for i in range(warmup + rounds):
        for spec in specs[i % len(specs):] + specs[:i % len(specs)]:
            values = _one(ctxs[spec])
            if i >= warmup:
                for ph, v in zip(phases, values):
                    got[spec][ph].append(v)
    return {s: {ph: stats.percentile(v, 50) for ph, v in d.items()}
            for s, d in got.items()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m warmfork.bench.breakdown")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("methods", nargs="*")
    args = p.parse_args(argv)
    names = args.methods or methods.default_methods()
    specs = [f"{m}[{_PRELOAD}]" if m in ("forkserver", "warmfork") else m
             for m in names]
    result = breakdown(specs, args.rounds)
    print(f"p50 per phase, us ({args.rounds} interleaved rounds)")
    print(f"{'method':<40} {'start()':>9} {'to target':>9} "
          f"{'to parent':>9} {'total':>9}")
    for spec, d in result.items():
        print(f"{spec:<40}" + "".join(f" {v / 1e3:9.0f}" for v in d.values()))
    return 0


if __name__ == "__main__":
    # Under -m, forkserver-style children would re-run this module as
    # __mp_main__ on every start (see worker.py): re-execute through -c.
    _CMD = ("import sys; from warmfork.bench.breakdown import main; "
            "sys.exit(main())")
    os.execv(sys.executable, [sys.executable, "-c", _CMD] + sys.argv[1:])
