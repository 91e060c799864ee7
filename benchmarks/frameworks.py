"""Frameworks on each start method: fork, spawn, forkserver, warmfork.

    python benchmarks/frameworks.py                   # every case, one run
    python benchmarks/frameworks.py --cases dataloader,ppe --runs 3

Each figure is one fresh interpreter running one scenario (the scripts
below) under one method; methods are interleaved, and with --runs N the
median is printed.  Cases whose framework is not installed are skipped.

- dataloader: torch imported at the top level; DataLoader(num_workers=2,
  persistent_workers=False), 10 epochs of 64 items, batch 8: two worker
  starts per epoch.  Time from the first iter() to the end of epoch 10.
- ppe: concurrent.futures.ProcessPoolExecutor(max_workers=2,
  max_tasks_per_child=1), 40 tasks: one process start per task
  (3.11+; "fork" refuses max_tasks_per_child).
- dask: LocalCluster(n_workers=2, processes=True) with a Client, until
  both workers answered one task.  Dask and distributed at the top level.
- joblib: 5 x Parallel(n_jobs=2, backend=ctx) of 16 tasks; the
  multiprocessing backend makes a Pool(2) per call.

Prints seconds and the ratio to warmfork (>1: slower than warmfork).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

METHODS = ("fork", "spawn", "forkserver", "warmfork")

SCENARIOS = {
    "dataloader": ("torch", '''
        import sys, time
        import torch
        from torch.utils.data import DataLoader
        import warmfork

        class Items:
            def __len__(self):
                return 64

            def __getitem__(self, i):
                return torch.full((16,), i)

        if __name__ == "__main__":
            loader = DataLoader(Items(), batch_size=8, num_workers=2,
                                persistent_workers=False,
                                multiprocessing_context=sys.argv[1])
            t = time.perf_counter()
            first = None
            for epoch in range(10):
                for batch in loader:
                    pass
                if first is None:
                    first = time.perf_counter() - t
            print(json.dumps({"total": time.perf_counter() - t,
                              "first_epoch": first}))
    '''),
    "ppe": (None, '''
        import sys, time
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        import warmfork

        def square(x):
            return x * x

        if __name__ == "__main__":
            ctx = mp.get_context(sys.argv[1])
            t = time.perf_counter()
            with ProcessPoolExecutor(max_workers=2, mp_context=ctx,
                                     max_tasks_per_child=1) as ex:
                assert list(ex.map(square, range(40))) == [
                    x * x for x in range(40)]
            print(json.dumps({"total": time.perf_counter() - t}))
    '''),
    "dask": ("distributed", '''
        import sys, time
        import dask
        from dask.distributed import Client, LocalCluster
        import warmfork

        def one(_):
            return 1

        if __name__ == "__main__":
            dask.config.set({"distributed.worker.multiprocessing-method":
                             sys.argv[1]})
            t = time.perf_counter()
            with LocalCluster(n_workers=2, threads_per_worker=1,
                              processes=True, dashboard_address=None) as c:
                with Client(c) as client:
                    client.wait_for_workers(2)
                    client.run(one, 0)
                    total = time.perf_counter() - t
            print(json.dumps({"total": total}))
    '''),
    "joblib": ("joblib", '''
        import sys, time
        import multiprocessing as mp
        from joblib import Parallel, delayed
        import warmfork

        def square(x):
            return x * x

        if __name__ == "__main__":
            ctx = mp.get_context(sys.argv[1])
            t = time.perf_counter()
            for _ in range(5):
                Parallel(n_jobs=2, backend=ctx)(
                    delayed(square)(i) for i in range(16))
            print(json.dumps({"total": time.perf_counter() - t}))
    '''),
}


def available(module):
    if module is None:
        return True
    import importlib.util
    return importlib.util.find_spec(module) is not None


def supported(case, method):
    if case == "ppe":
        return sys.version_info >= (3, 11) and method != "fork"
    return True


def measure(script, method, timeout):
    out = subprocess.run([sys.executable, script, method], text=True,
                         capture_output=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("%s under %s failed:\n%s"
                           % (script, method, out.stderr[-2000:]))
    return json.loads(out.stdout.splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(SCENARIOS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="write the raw figures here")
    opts = ap.parse_args(argv)
    methods = opts.methods.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in opts.cases.split(","):
            module, source = SCENARIOS[case]
            if not available(module):
                print("%s: skipped (%s is not installed)" % (case, module))
                continue
            script = os.path.join(tmp, "bench_%s.py" % case)
            with open(script, "w") as f:
                f.write("import json\n" + textwrap.dedent(source))
            runs = {m: [] for m in methods if supported(case, m)}
            for i in range(opts.runs):
                order = list(runs)
                order = order[i % len(order):] + order[:i % len(order)]
                for method in order:
                    runs[method].append(measure(script, method,
                                                opts.timeout))
            results[case] = runs
            print_case(case, runs, methods)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)


def print_case(case, runs, methods):
    keys = list(next(iter(runs.values()))[0])
    for key in keys:
        med = {m: statistics.median(r[key] for r in runs[m]) for m in runs}
        base = med.get("warmfork")
        cells = []
        for m in methods:
            if m not in med:
                cells.append("%s n/a" % m)
            elif base:
                cells.append("%s %.2fs (%.2fx)" % (m, med[m], med[m] / base))
            else:
                cells.append("%s %.2fs" % (m, med[m]))
        print("%-10s %-12s %s" % (case, key, " | ".join(cells)), flush=True)


if __name__ == "__main__":
    main()
