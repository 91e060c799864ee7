#!/usr/bin/env python3
"""A PyTorch DataLoader whose dataset holds a big numpy array (issue 11).

4 workers, ``persistent_workers=False``, 5 epochs: every epoch starts 4 new
workers, and each one gets the dataset, array included, in its process
object (under fork: inherited).  For each start method, in a fresh
process of its own, this prints the wall time of the 5 epochs (after one
no-op process that starts the method's server, timed apart) and the
peak extra memory of the whole process tree: the sum of PSS
(``/proc/PID/smaps_rollup``) over this process and all its descendants
(servers, trackers, workers), sampled every 50 ms, minus that sum before
the DataLoader was made; and, apart, what servers and trackers still hold
once the workers are gone.  PSS counts a page shared by n processes as 1/n
in each, so the sum counts it once: warmfork's memfd copy of the array
once, the fork workers' inherited pages not at all.

    python benchmarks/dataloader_big_array.py [--mb 200] [--workers 4]
        [--epochs 5] [--methods fork,warmfork,forkserver,spawn] [--json F]

Every method runs with its defaults, as a user would: warmfork preloads
``__main__`` (this script, so torch too); the stdlib forkserver's default
preload does not take on 3.11 to 3.13 (see README), and spawn re-imports
this script, torch included, in every worker.  Exits 0 with a note when
torch or numpy is not installed.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

try:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset
except ImportError as e:            # pragma: no cover - depends on the env
    np = torch = None
    _MISSING = str(e)
    Dataset = object

ROW = 1024                          # float32 values per item: 4 KB


class BigArrayDataset(Dataset):
    """Rows of one big float32 array; a worker returns row i as a tensor."""

    def __init__(self, mb):
        rows = (mb << 20) // (ROW * 4)
        self.data = np.random.default_rng(0).random((rows, ROW),
                                                    dtype=np.float32)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return torch.from_numpy(self.data[i])


def _children():
    """ppid -> [pid] for every process we can see."""
    tree = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def tree_pss_kb(root=None, descendants_only=False):
    """Sum of PSS over root (default: us) and all its descendants."""
    tree = _children()
    root = root or os.getpid()
    todo = list(tree.get(root, [])) if descendants_only else [root]
    total = 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass                    # gone meanwhile
    return total


class PeakSampler(threading.Thread):
    def __init__(self, interval=0.05):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, tree_pss_kb())
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join()
        self.peak = max(self.peak, tree_pss_kb())
        return self.peak


def run_one(method, mb, workers, epochs, batch):
    import multiprocessing as mp
    import warnings
    # torch warns when workers outnumber cores (4 > 2 here): it is the case.
    warnings.filterwarnings("ignore", message=".*worker processes in total")
    if method == "warmfork":
        import warmfork  # noqa: F401  (registers the method)
    ctx = mp.get_context(method)
    # One no-op process first: it starts the server (warmfork: importing
    # this script, so torch, in it; forkserver: its server), which a
    # program pays once, not per worker.  Reported apart as warm_up_s.
    t0 = time.perf_counter()
    p = ctx.Process(target=time.sleep, args=(0,))
    p.start()
    p.join()
    warm_up = time.perf_counter() - t0
    dataset = BigArrayDataset(mb)
    base = tree_pss_kb()
    sampler = PeakSampler()
    sampler.start()
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers,
                        persistent_workers=False, multiprocessing_context=ctx)
    checksum = 0.0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            checksum += float(b[0, 0])
    elapsed = time.perf_counter() - t0
    peak = sampler.stop()
    del loader
    time.sleep(0.5)                 # the last epoch's workers exit
    out = {"method": method, "seconds": elapsed, "warm_up_s": warm_up,
           "peak_extra_mb": (peak - base) / 1024, "checksum": checksum,
           # What stays once the workers are gone: servers, trackers.
           "servers_mb": tree_pss_kb(descendants_only=True) / 1024,
           "mb": mb, "workers": workers, "epochs": epochs,
           "python": sys.version.split()[0], "torch": torch.__version__}
    if method == "warmfork":
        from warmfork import buffers
        out["buffers"] = buffers.stats()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, default=200)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--methods", default="fork,warmfork,forkserver,spawn")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if torch is None:
        print("dataloader_big_array: skipped, %s" % _MISSING)
        return 0
    if args.one:
        print(json.dumps(run_one(args.one, args.mb, args.workers,
                                 args.epochs, args.batch)))
        return 0
    results = []
    for method in [m for m in args.methods.split(",") if m]:
        # A fresh parent per method: its servers, its baseline memory.
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--one", method,
             "--mb", str(args.mb), "--workers", str(args.workers),
             "--epochs", str(args.epochs), "--batch", str(args.batch)],
            stdout=subprocess.PIPE, check=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print("%-10s %6.2f s (+%4.2f s warm-up)   peak extra memory %5.0f "
              "MB (servers, trackers %4.0f MB)%s"
              % (method, r["seconds"], r["warm_up_s"], r["peak_extra_mb"],
                 r["servers_mb"],
                 "   buffers %s" % r["buffers"] if "buffers" in r else ""),
              flush=True)
    by = {r["method"]: r for r in results}
    if "warmfork" in by:
        w = by["warmfork"]["seconds"]
        for m in ("fork", "forkserver", "spawn"):
            if m in by:
                print("warmfork / %-10s time %.2f" % (m, w / by[m]["seconds"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "settings": vars(args)}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
