"""What warmfork.prestart() saves: the first DataLoader batch and Pool(8).

    python benchmarks/prestart.py                 # one run, --work 2.0
    python benchmarks/prestart.py --runs 3 --work 1.0

The scenario imports torch at the top level (so every server or child that
runs __main__ imports it too), does WORK seconds of its own CPU work (what
a training script does before its first batch: build the model, read an
index...), then either takes the first batch of a DataLoader(num_workers=2)
or creates a Pool(8) and waits until its 8 workers have run their
initializer.  Methods: fork, forkserver, warmfork, and warmfork with
warmfork.prestart() called first thing in main, so that the server's
preload (torch) overlaps the parent's own work.  Each figure is one fresh
interpreter; methods are interleaved; medians of --runs.

Prints the time of the first batch (or of Pool(8)) after the parent's own
work, and its ratio to fork.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

SCENARIO = '''
    import time
    T0 = time.perf_counter()
    import json, os, sys
    import multiprocessing as mp
    import torch
    from torch.utils.data import DataLoader
    import warmfork
    IMPORT = time.perf_counter() - T0

    class Items:
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return torch.full((16,), i)

    def up(queue):
        queue.put(os.getpid())

    def own_work(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    if __name__ == "__main__":
        method, case, prestart, work = sys.argv[1:5]
        t_main = time.perf_counter()
        if prestart == "1":
            warmfork.prestart()
        own_work(float(work))
        t = time.perf_counter()
        if case == "dataloader":
            loader = DataLoader(Items(), batch_size=8, num_workers=2,
                                multiprocessing_context=method)
            next(iter(loader))
            first = time.perf_counter() - t
        else:
            ctx = mp.get_context(method)
            queue = ctx.Queue()
            pool = ctx.Pool(8, initializer=up, initargs=(queue,))
            for _ in range(8):
                queue.get()
            first = time.perf_counter() - t
            pool.terminate()
        print(json.dumps({"first": first,
                          "since_main": time.perf_counter() - t_main,
                          "import": IMPORT}))
'''

VARIANTS = (("fork", "fork", "0"), ("forkserver", "forkserver", "0"),
            ("warmfork", "warmfork", "0"),
            ("warmfork+prestart", "warmfork", "1"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="dataloader,pool")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--work", type=float, default=2.0,
                    help="seconds of the parent's own work (default 2.0)")
    ap.add_argument("--json", help="write the raw figures here")
    opts = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "prestart_scenario.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(SCENARIO))
        for case in opts.cases.split(","):
            runs = {name: [] for name, _, _ in VARIANTS}
            for i in range(opts.runs):
                order = VARIANTS[i % len(VARIANTS):] + VARIANTS[
                    :i % len(VARIANTS)]
                for name, method, prestart in order:
                    out = subprocess.run(
                        [sys.executable, script, method, case, prestart,
                         str(opts.work)],
                        text=True, capture_output=True, timeout=600)
                    if out.returncode != 0:
                        raise RuntimeError("%s %s failed:\n%s" % (
                            case, name, out.stderr[-2000:]))
                    runs[name].append(json.loads(out.stdout.splitlines()[-1]))
            results[case] = runs
            base = statistics.median(r["first"] for r in runs["fork"])
            for name, _, _ in VARIANTS:
                first = statistics.median(r["first"] for r in runs[name])
                since = statistics.median(r["since_main"] for r in runs[name])
                print("%-10s %-18s first %6.2fs (%5.2fx fork)   main to "
                      "first %6.2fs" % (case, name, first, first / base,
                                         since), flush=True)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
