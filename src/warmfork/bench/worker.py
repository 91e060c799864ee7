"""The measuring subprocess: one fresh parent per memory size and preload set.

It touches ``--mem-mb`` of memory, imports ``--import`` modules, then for
each case runs warm-up rounds and measured rounds, every method once per
round, rotating the order each round.  Progress goes to stderr as
``@progress`` lines; the result goes to stdout as one JSON document.

Run as ``python -m warmfork.bench.worker``, it re-executes itself through
``-c``: with ``-m``, spawn and forkserver children would re-run this module
as ``__mp_main__`` on every start and charge that to the method.
"""

import argparse
import gc
import importlib
import json
import os
import sys

from . import cases, methods

__all__ = ["main", "grow", "rss_kb"]

PAGE = os.sysconf("SC_PAGE_SIZE")
_CMD = "import sys; from warmfork.bench.worker import main; sys.exit(main())"
_ballast = None  # keeps the touched memory alive for the whole run


def grow(mb):
    """Allocate mb MiB and write to every page so that it is resident."""
    if mb <= 0:
        return None
    buf = bytearray(mb << 20)
    buf[::PAGE] = b"\x01" * len(range(0, len(buf), PAGE))
    return buf


def rss_kb():
    """Return this process's resident set size in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m warmfork.bench.worker")
    p.add_argument("--cases", required=True, help="comma-separated cases")
    p.add_argument("--methods", required=True, help="comma-separated specs")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch-rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-cap", action="append", default=[],
                   metavar="SPEC=N",
                   help="measure SPEC in at most N batch rounds (spawn)")
    p.add_argument("--mem-mb", type=int, default=0)
    p.add_argument("--import", dest="imports", action="append", default=[])
    p.add_argument("--procs", type=int, default=500)
    p.add_argument("--alive", type=int, default=8)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--arg-mb", type=int, default=0,
                   help="numpy array (float64, every page written) passed to "
                   "the argstart and arguss children")
    return p.parse_args(argv)


def _progress(case, done, total):
    print(f"@progress {case} {done} {total}", file=sys.stderr, flush=True)


def _measure(case, specs, contexts, args, caps, target, arg=None):
    opts = {"procs": args.procs, "alive": args.alive, "tasks": args.tasks,
            "arg": arg}
    batch = case in ("throughput", "cpu", "pool", "executor")
    rounds = args.batch_rounds if batch else args.rounds
    # A batch is too long to repeat for warm-up: warm up with round trips.
    warm_case = "roundtrip" if batch else case
    samples = {spec: [] for spec in specs}
    first = {}
    want = {s: min(rounds, caps.get(s, rounds)) if batch else rounds
            for s in specs}
    total = args.warmup + rounds
    for i in range(total):
        measured = i >= args.warmup
        k = i % len(specs)
        for spec in specs[k:] + specs[:k]:
            if measured and len(samples[spec]) >= want[spec]:
                continue
            value = cases.sample(case if measured else warm_case,
                                 contexts[spec], opts, target)
            first.setdefault(spec, value)
            if measured:
                samples[spec].append(value)
        _progress(case, i + 1, total)
    return samples, first


def main(argv=None, target=None):
    """Run the cases in argv; target replaces the start case's byte writer."""
    global _ballast
    args = _parse(sys.argv[1:] if argv is None else argv)
    _ballast = grow(args.mem_mb)
    for name in args.imports:
        importlib.import_module(name)
    specs = [s for s in args.methods.split(",") if s]
    caps = {k: int(v)
            for k, _, v in (c.partition("=") for c in args.batch_cap)}
    contexts = {s: None if methods.base(s) == methods.RAW
                else methods.make_context(s) for s in specs}
    arg = None
    if args.arg_mb:
        import numpy
        arg = numpy.arange((args.arg_mb << 20) // 8, dtype=numpy.float64)
        # Start the servers now, so that the first start with the array
        # (kept as "first": warmfork copies it then) is only that.
        for spec in specs:
            if contexts[spec] is not None:
                cases.sample("roundtrip", contexts[spec], {})
    out = {"pid": os.getpid(), "mem_mb": args.mem_mb, "rss_kb": rss_kb(),
           "imports": args.imports, "python": sys.version.split()[0],
           "arg_mb": args.arg_mb, "rows": []}
    for case in [c for c in args.cases.split(",") if c]:
        here = [s for s in specs if cases.supports(case, s)]
        gc.collect()
        samples, first = _measure(case, here, contexts, args, caps, target,
                                  arg)
        for spec in here:
            row = {
                "case": case, "method": spec,
                "unit": cases.UNITS.get(case, "ns"),
                "samples": samples[spec],
                "procs": args.procs if case in ("throughput", "cpu") else
                args.tasks if case in ("pool", "executor") else 1,
                "alive": args.alive,
            }
            if case == "argstart":
                row["first"] = first[spec]   # warmfork copies the array here
            out["rows"].append(row)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-c", _CMD] + sys.argv[1:])
