"""Turn worker output into rows with stats and ratios, and into a table."""

from . import cases, stats
from .methods import RAW, base

__all__ = ["assemble", "table", "fmt_value"]

_RAW_LABEL = {"start": "raw os.fork()+1 byte", "burst": "raw os.fork()+1 byte",
              "roundtrip": "raw os.fork()+_exit+waitpid",
              "throughput": "raw os.fork()", "cpu": "raw os.fork()+_exit",
              "executor": "raw os.fork(), <= 2 alive"}


def _title(figure, row):
    if figure == "start":
        return ("isolated start: start() until the target's byte is read "
                "(the pool has refilled)")
    if figure == "burst":
        return (f"back-to-back starts: per start, in bursts of "
                f"{cases.BURST}")
    if figure == "faults":
        return "page faults on the child's way to its target"
    if figure == "cpu":
        return (f"CPU per child, whole tree (parent, server, children): "
                f"{row['procs']} no-op processes")
    if figure == "roundtrip":
        return "round trip: start() + join() of a no-op"
    if figure == "throughput":
        return (f"throughput: {row['procs']} no-op processes, "
                f"<= {row['alive']} alive")
    if figure == "pool":
        return (f"ProcessPoolExecutor(2, max_tasks_per_child=1): "
                f"{row['procs']} trivial tasks")
    if figure == "executor":
        return (f"Executor(2), a fresh process per task: {row['procs']} "
                f"trivial tasks (fork: reused workers)")
    if figure.startswith("start@"):
        return f"start latency, parent holds {row['mem_mb']} MB touched"
    if figure == "start+numpy":
        return "start latency, numpy imported and preloaded"
    if figure == "uss":
        return "private memory (USS) per child, numpy preloaded"
    if figure == "script":
        return "realistic script: __main__ imports numpy, target uses it"
    if figure.startswith("start+arg@"):
        return (f"start latency with a {row['arg_mb']} MB numpy array "
                "argument, the same array each start")
    if figure.startswith("uss+arg@"):
        return (f"private memory (USS) of a child that read all of a "
                f"{row['arg_mb']} MB numpy array argument")
    return figure


def _kind(figure):
    """Return the worker case whose raw lower bound applies to figure."""
    if figure in ("roundtrip", "throughput", "cpu", "executor"):
        return figure
    if figure.startswith("start") or figure in ("script", "burst"):
        return "start"
    return None


def assemble(results):
    """Return table rows from [(group, worker_json, figures)] in run order."""
    rows = []
    for group, data in results:
        for r in data["rows"]:
            figure = group.figures[r["case"]]
            rows.append(dict(r, figure=figure, group=group.name,
                             mem_mb=data["mem_mb"], rss_kb=data["rss_kb"],
                             arg_mb=data.get("arg_mb", 0),
                             stats=stats.summarize(r["samples"])))
    p50 = {(r["figure"], r["method"]): r["stats"].get("p50") for r in rows}
    for r in rows:
        fig = r["figure"]
        r["title"] = _title(fig, r)
        fs = p50.get((fig, "forkserver"))
        if fs is None:
            fs = next((p50[(f, m)] for f, m in p50
                       if f == fig and base(m) == "forkserver"), None)
        kind = _kind(fig)
        lb = p50.get((kind, RAW)) if kind else None
        r["ratio_forkserver"] = stats.ratio(r["stats"].get("p50"), fs)
        r["ratio_lower_bound"] = stats.ratio(r["stats"].get("p50"), lb)
    return rows


def fmt_value(v, unit):
    """Format one figure: ns as us/ms/s, kB as MB."""
    if v is None:
        return "-"
    if unit == "kB":
        return f"{v / 1024:.1f} MB"
    if unit == "faults":
        return f"{v:.0f}"
    if v >= 1e9:
        return f"{v / 1e9:.2f} s"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    return f"{v / 1e3:.0f} us"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _label(r):
    if r["method"] == RAW:
        return _RAW_LABEL.get(r["case"], "raw os.fork()")
    return r["method"]


def table(rows, goals, notes=(), meta=None):
    """Return the readable report: one block per figure, then the targets."""
    head = (f"  {'method':<42} {'p50':>9} {'p90':>9} {'p99':>9} {'n':>4}"
            f" {'x fsrv':>7} {'x lower':>7}  note")
    out = []
    if meta:
        out.append(f"warmfork bench: Python {meta['python']}, "
                   f"{meta['cpus']} CPUs, {meta['elapsed_s']:.0f} s")
    figure = None
    for r in rows:
        if r["figure"] != figure:
            figure = r["figure"]
            out += ["", f"{r['title']}  [{figure}]", head]
        s, u = r["stats"], r["unit"]
        note = ""
        if r["case"] in ("throughput", "pool", "executor") and s.get("p50"):
            note = f"{r['procs'] / (s['p50'] / 1e9):.0f} procs/s"
        elif r.get("first") is not None:
            note = f"first start {fmt_value(r['first'], u)}"
        out.append(f"  {_label(r):<42} {fmt_value(s.get('p50'), u):>9}"
                   f" {fmt_value(s.get('p90'), u):>9}"
                   f" {fmt_value(s.get('p99'), u):>9} {s['n']:>4}"
                   f" {_x(r['ratio_forkserver']):>7}"
                   f" {_x(r['ratio_lower_bound']):>7}  {note}".rstrip())
    out += ["", "x fsrv / x lower: p50 divided by the p50 of stdlib "
            "forkserver in the same figure / of the raw os.fork() lower "
            "bound from the small parent (lower is better)."]
    if goals:
        out += ["", "targets (reported, never asserted)"]
        for g in goals:
            v = "-" if g["value"] is None else f"{g['value']:.2f}"
            out.append(f"  {g['target']:<52} {v:>6}  {g['op']} "
                       f"{g['limit']:<4} {g['status']}")
    for n in notes:
        out.append(f"note: {n}")
    return "\n".join(out) + "\n"
