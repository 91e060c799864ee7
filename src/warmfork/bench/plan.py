"""What each measuring worker runs, for the default and ``--quick`` runs.

A *group* is one fresh worker process: one parent memory size, one set
of imports and preloads, the methods interleaved inside it.  A *figure*
is one row group of the table (``start@512MB``); its name says where it
came from.
"""

import dataclasses
from typing import Optional
import sys

from .methods import RAW

__all__ = ["Settings", "Group", "SELECTABLE", "build"]

SELECTABLE = ("start", "burst", "faults", "roundtrip", "throughput", "cpu",
              "pool", "executor", "memory", "numpy", "uss", "script", "args")
NEEDS_NUMPY = ("numpy", "uss", "script", "args")
# Preloaded for the numpy figures: numpy, and the module of the USS target.
NUMPY_PRELOAD = "numpy+warmfork.bench.payloads"


@dataclasses.dataclass
class Settings:
    rounds: int = 40          # latency figures
    script_rounds: int = 15   # realistic script: spawn imports numpy each time
    batch_rounds: int = 3     # throughput and pool
    spawn_batch_rounds: int = 1   # spawn is ~10x slower than the rest
    warmup: int = 3
    procs: int = 500
    alive: int = 8
    tasks: int = 200
    mems: tuple = (512, 2048)
    # A numpy argument of each size (figure "args"); spawn and forkserver
    # take ~1.5 s per start at 200 MB here, hence fewer rounds.
    arg_mbs: tuple = (1, 50, 200)
    arg_rounds: int = 9
    arg_warmup: int = 2     # warmfork: 1st start copies, 2nd compares

    @classmethod
    def quick(cls):
        return cls(rounds=6, script_rounds=3, batch_rounds=1, warmup=1,
                   procs=100, tasks=40, arg_mbs=(1, 50), arg_rounds=3)


@dataclasses.dataclass
class Group:
    name: str
    figures: dict           # worker case -> figure name
    methods: list
    mem_mb: int = 0
    imports: tuple = ()
    script: bool = False
    rounds: int = 0
    arg_mb: int = 0
    warmup: Optional[int] = None      # None: the settings' warmup

    def worker_args(self, s):
        warmup = s.warmup if self.warmup is None else self.warmup
        args = ["--cases", ",".join(self.figures),
                "--methods", ",".join(self.methods),
                "--rounds", str(self.rounds), "--warmup", str(warmup),
                "--batch-rounds", str(s.batch_rounds),
                "--batch-cap", f"spawn={s.spawn_batch_rounds}",
                "--mem-mb", str(self.mem_mb), "--procs", str(s.procs),
                "--alive", str(s.alive), "--tasks", str(s.tasks)]
        for name in self.imports:
            args += ["--import", name]
        if self.arg_mb:
            args += ["--arg-mb", str(self.arg_mb)]
        return args


def _preloaded(specs, preload):
    """Give the preloading methods of specs an explicit preload list."""
    return [f"{m}[{preload}]" if m in ("forkserver", "warmfork") else m
            for m in specs]


def build(s, methods, selected, have_numpy):
    """Return (groups, notes) for the selected figures and methods."""
    notes = []
    sel = set(selected)
    if not have_numpy and sel & set(NEEDS_NUMPY):
        notes.append("numpy is not installed: skipped "
                     + ", ".join(c for c in NEEDS_NUMPY if c in sel))
        sel -= set(NEEDS_NUMPY)
    if "pool" in sel and sys.version_info < (3, 11):
        notes.append("pool skipped: max_tasks_per_child needs Python >= 3.11")
        sel.discard("pool")
    # "start" at 0 MB is the reference of every start figure.
    if sel & {"memory", "numpy", "script"}:
        sel.add("start")
    groups = []
    base_cases = [c for c in ("start", "burst", "faults", "roundtrip",
                              "throughput", "cpu", "pool", "executor")
                  if c in sel]
    if base_cases:
        groups.append(Group("base", {c: c for c in base_cases},
                            [RAW] + methods, rounds=s.rounds))
    if "memory" in sel:
        for mb in s.mems:
            groups.append(Group(f"{mb} MB", {"start": f"start@{mb}MB"},
                                [RAW] + methods, mem_mb=mb, rounds=s.rounds))
    numpy_cases = {}
    if "numpy" in sel:
        numpy_cases["start"] = "start+numpy"
    if "uss" in sel:
        numpy_cases["uss"] = "uss"
    if numpy_cases:
        specs = [RAW] + _preloaded(methods, NUMPY_PRELOAD)
        if "start" not in numpy_cases:
            specs.remove(RAW)
        groups.append(Group("numpy", numpy_cases, specs, imports=("numpy",),
                            rounds=s.rounds))
    if "args" in sel:
        # One fresh parent per size; numpy preloaded, as in "numpy".
        for mb in s.arg_mbs:
            groups.append(Group(
                f"arg {mb} MB", {"argstart": f"start+arg@{mb}MB",
                                 "arguss": f"uss+arg@{mb}MB"},
                _preloaded(methods, NUMPY_PRELOAD), imports=("numpy",),
                rounds=s.arg_rounds, arg_mb=mb, warmup=s.arg_warmup))
    if "script" in sel:
        fam = [m for m in methods if m in ("forkserver", "warmfork")]
        # Until the 2025 fix on the 3.13/3.14 branches (gh-126631, gh-137996)
        # the stdlib's '__main__' preload is dead code: children re-run the
        # script anyway.
        # Preloading numpy as well shows what a working preload saves.
        variants = [methods] + [_preloaded(fam, p)
                                for p in ("__main__", "__main__+numpy")]
        for i, specs in enumerate(v for v in variants if v):
            groups.append(Group(f"script {i + 1}", {"start": "script"},
                                specs, script=True, rounds=s.script_rounds))
    return groups, notes
