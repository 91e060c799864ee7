"""A/B of start latency between two builds, starts interleaved in one run.

    python benchmarks/ab_start.py VENV_A/bin/python VENV_B/bin/python \
        [--starts 300] [--gap-ms 30] [--method warmfork] [--runs 2]

Each interpreter runs this file as a worker (one warmfork server each);
the driver asks them for one start at a time, A and B alternating, plus a
raw os.fork() + 1 byte in A as the floor.  A start is timed from before
Process.start() until the parent reads a byte the child's target wrote.
--gap-ms spaces the starts (an isolated start: the pool has refilled);
--gap-ms 0 is back to back.  Prints p50/p90 per build and B/A ratios;
repeat with --runs to see the noise (these VMs are shared).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time


def _write_byte(w):
    os.write(w.fileno(), b"x")


def _worker(method):
    import multiprocessing as mp
    if method == "warmfork":
        import warmfork  # noqa: F401
    ctx = mp.get_context(method)
    for line in sys.stdin:
        what = line.strip()
        if what == "start":
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_write_byte, args=(w,))
            t0 = time.perf_counter_ns()
            p.start()
            os.read(r.fileno(), 1)
            t = time.perf_counter_ns() - t0
            w.close()
            p.join()
            r.close()
        elif what == "throughput":      # 100 no-op children, <= 8 alive
            from multiprocessing.connection import wait
            live, started = {}, 0
            t0 = time.perf_counter_ns()
            while started < 100 or live:
                while started < 100 and len(live) < 8:
                    p = ctx.Process()
                    p.start()
                    live[p.sentinel] = p
                    started += 1
                for s in wait(list(live)):
                    live.pop(s).join()
            t = (time.perf_counter_ns() - t0) // 100
        elif what == "raw":
            rfd, wfd = os.pipe()
            t0 = time.perf_counter_ns()
            pid = os.fork()
            if pid == 0:
                os.write(wfd, b"x")
                os._exit(0)
            os.read(rfd, 1)
            t = time.perf_counter_ns() - t0
            os.waitpid(pid, 0)
            os.close(rfd)
            os.close(wfd)
        else:
            break
        print(t, flush=True)


def _ask(proc, what):
    proc.stdin.write(what + "\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


def _pcts(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[int(len(xs) * 0.9)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("python_a")
    ap.add_argument("python_b")
    ap.add_argument("--starts", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--gap-ms", type=float, default=30)
    ap.add_argument("--method", default="warmfork")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--case", choices=("start", "throughput"),
                    default="start", help="throughput: ns per child of "
                    "100 no-op children, <= 8 alive")
    args = ap.parse_args()
    for run in range(args.runs):
        procs = [subprocess.Popen([py, __file__, "--worker", args.method],
                                  stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True,
                                  cwd=os.path.dirname(os.path.abspath(
                                      __file__)))
                 for py in (args.python_a, args.python_b)]
        samples = {"raw": [], "A": [], "B": []}
        try:
            for i in range(args.warmup + args.starts):
                got = {"raw": _ask(procs[0], "raw")}
                time.sleep(args.gap_ms / 1000)
                order = ("A", "B") if i % 2 == 0 else ("B", "A")
                for name in order:
                    got[name] = _ask(procs[0 if name == "A" else 1],
                                     args.case)
                    time.sleep(args.gap_ms / 1000)
                if i >= args.warmup:
                    for name, t in got.items():
                        samples[name].append(t / 1e6)
        finally:
            for p in procs:
                p.stdin.close()
                p.wait()
        p50 = {k: _pcts(v)[0] for k, v in samples.items()}
        print("run %d: %d starts each, gap %.0f ms" % (run + 1, args.starts,
                                                       args.gap_ms))
        for name in ("raw", "A", "B"):
            med, p90 = _pcts(samples[name])
            print("  %-4s p50 %.3f ms  p90 %.3f ms  p50/raw %.2f"
                  % (name, med, p90, med / p50["raw"]))
        print("  B/A p50 ratio: %.2f" % (p50["B"] / p50["A"]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        main()
