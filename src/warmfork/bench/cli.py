"""``python -m warmfork bench``: run the figures, print the table."""

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

from . import goals, methods, plan, report, runner

__all__ = ["main"]


def _csv(text):
    return [x for x in text.split(",") if x]


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m warmfork bench",
        description="Fork-latency benchmarks: warmfork against the stdlib "
        "start methods, interleaved round by round, as ratios.")
    p.add_argument("--quick", action="store_true",
                   help="few rounds and small batches (CI smoke, < 60 s)")
    p.add_argument("--rounds", type=int, help="rounds of latency figures")
    p.add_argument("--batch-rounds", type=int,
                   help="rounds of throughput/pool figures")
    p.add_argument("--warmup", type=int, help="warm-up rounds, discarded")
    p.add_argument("--methods", type=_csv,
                   help="start methods (default: fork,spawn,forkserver and "
                   "warmfork when importable); a spec may add a preload "
                   "list: forkserver[numpy+mymod]")
    p.add_argument("--cases", type=_csv, default=list(plan.SELECTABLE),
                   help="figures to run, from: " + ",".join(plan.SELECTABLE))
    p.add_argument("--mem-mb", type=lambda t: tuple(int(x) for x in _csv(t)),
                   help="parent sizes for the memory figure (default "
                   "512,2048)")
    p.add_argument("--arg-mb", type=lambda t: tuple(int(x) for x in _csv(t)),
                   help="numpy argument sizes for the args figure (default "
                   "1,50,200; --quick: 1,50)")
    p.add_argument("--target-method", default="warmfork",
                   help="method whose targets are checked (default warmfork)")
    p.add_argument("--json", metavar="PATH", help="write all samples as JSON")
    p.add_argument("--plot", metavar="PATH",
                   help="write a PNG of latency against parent memory")
    return p


def _settings(args):
    s = plan.Settings.quick() if args.quick else plan.Settings()
    for name in ("rounds", "batch_rounds", "warmup"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    if args.rounds is not None:
        s.script_rounds = max(1, min(s.script_rounds, args.rounds))
    if args.mem_mb:
        s.mems = args.mem_mb
    if args.arg_mb:
        s.arg_mbs = args.arg_mb
    if args.rounds is not None:
        s.arg_rounds = max(1, min(s.arg_rounds, args.rounds))
    return s


def main(argv=None):
    """Run the benchmark; return the exit status."""
    args = _parser().parse_args(argv)
    unknown = set(args.cases) - set(plan.SELECTABLE)
    if unknown:
        sys.exit(f"unknown case(s): {', '.join(sorted(unknown))}")
    s = _settings(args)
    specs = args.methods or methods.default_methods()
    notes = []
    if "warmfork" not in specs and not args.methods:
        notes.append("warmfork is not importable: measured the stdlib only")
    have_numpy = importlib.util.find_spec("numpy") is not None
    groups, more = plan.build(s, specs, args.cases, have_numpy)
    notes += more
    t0 = time.monotonic()
    progress = runner.Progress(len(groups))
    results = []
    try:
        for g in groups:
            results.append((g, runner.run_group(g, s, progress)))
    finally:
        progress.done()
    rows = report.assemble(results)
    goal_rows = goals.evaluate(rows, args.target_method)
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "elapsed_s":
            time.monotonic() - t0, "methods": specs,
            "quick": args.quick, "settings": vars(s) | {
                "mems": list(s.mems), "arg_mbs": list(s.arg_mbs)},
            "workers": [{"group": g.name, "pid": d["pid"], "mem_mb":
                         d["mem_mb"], "rss_kb": d["rss_kb"], "imports":
                         d["imports"]} for g, d in results]}
    sys.stdout.write(report.table(rows, goal_rows, notes, meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "targets": goal_rows,
                       "notes": notes}, f, indent=1)
    if args.plot:
        from .plot import plot

        plot(rows, args.plot)
    return 0
