"""One timed sample of each figure, for a context or for bare os.fork().

Every function returns one number: nanoseconds (``time.perf_counter_ns``)
for the timed figures, kB for ``uss``.  Set-up and clean-up (pipes,
``join``) stay outside the timed region unless they are the figure.
"""

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import wait

from . import payloads

__all__ = ["CASES", "UNITS", "supports", "sample"]

# case -> what one sample is
CASES = {
    "start": "start() until the parent reads a byte the child's target wrote",
    "roundtrip": "start() + join() of a no-op process",
    "throughput": "N no-op processes, at most `alive` alive at once",
    "pool": "ProcessPoolExecutor(2 workers, max_tasks_per_child=1), N tasks",
    "executor": "N tasks, a fresh process each: warmfork.Executor(2); "
                "stdlib: ProcessPoolExecutor(2, max_tasks_per_child=1), "
                "fork: ProcessPoolExecutor(2) reusing its workers",
    "uss": "private memory (USS) of a child that used numpy",
    "burst": "per start, in a burst of starts back to back",
    "faults": "page faults a child takes on its way to the target",
    "cpu": "CPU time of the whole tree per no-op child (throughput batch)",
    "argstart": "start() with a numpy array argument until the parent reads "
                "a byte the child's target wrote",
    "arguss": "private memory (USS) of a child that read all of a numpy "
              "array argument",
}
UNITS = {"uss": "kB", "faults": "faults", "arguss": "kB"}
BURST = 8               # starts per burst sample


def supports(case, spec):
    """Return True when case can be measured with method spec."""
    from .methods import RAW, base

    name = base(spec)
    if case == "pool":
        # ProcessPoolExecutor refuses max_tasks_per_child with 'fork'.
        return name not in (RAW, "fork")
    if case == "executor":
        # max_tasks_per_child needs 3.11; fork runs reused workers; raw is
        # N bare forks, at most 2 alive: the floor of a process per task.
        return name in (RAW, "fork", "warmfork") or sys.version_info >= (
            3, 11)
    if case in ("uss", "faults", "argstart", "arguss"):
        return name != RAW
    return True


def sample(case, ctx, opts, target=None):
    """Return one sample of case; ctx None means bare os.fork()."""
    if case == "start":
        return _start(ctx, target) if ctx else _raw_start()
    if case == "roundtrip":
        return _roundtrip(ctx) if ctx else _raw_roundtrip()
    if case == "throughput":
        n, alive = opts["procs"], opts["alive"]
        return _throughput(ctx, n, alive) if ctx else _raw_throughput(n, alive)
    if case == "pool":
        return _pool(ctx, opts["tasks"])
    if case == "executor":
        n = opts["tasks"]
        return _executor(ctx, n) if ctx else _raw_throughput(n, 2)
    if case == "uss":
        return _uss(ctx)
    if case == "burst":
        return _burst(ctx) if ctx else _raw_start()
    if case == "faults":
        return _faults(ctx)
    if case == "cpu":
        return _cpu_per_child(ctx, opts["procs"], opts["alive"])
    if case == "argstart":
        return _arg_start(ctx, opts["arg"])
    if case == "arguss":
        return _uss(ctx, payloads.report_uss_after_reading, opts["arg"])
    raise ValueError(f"unknown case {case!r}")


def _start(ctx, target):
    return _timed_start(ctx, target)


def _timed_start(ctx, target, *args):
    """start() until the parent reads the byte the child's target sends
    (``target(conn, *args)``; None: the connection's own send_bytes)."""
    parent_r, child_w = ctx.Pipe(duplex=False)
    if target is None:
        p = ctx.Process(target=child_w.send_bytes, args=(b"x",))
    else:
        p = ctx.Process(target=target, args=(child_w,) + args)
    try:
        t0 = time.perf_counter_ns()
        p.start()
        parent_r.recv_bytes()
        t1 = time.perf_counter_ns()
        p.join()
    finally:
        parent_r.close()
        child_w.close()
    _check(p)
    return t1 - t0


def _raw_start():
    parent_r, child_w = os.pipe()
    try:
        t0 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(child_w, b"x")
            finally:
                os._exit(0)
        os.read(parent_r, 1)
        t1 = time.perf_counter_ns()
        os.waitpid(pid, 0)
    finally:
        os.close(parent_r)
        os.close(child_w)
    return t1 - t0


def _roundtrip(ctx):
    p = ctx.Process()
    t0 = time.perf_counter_ns()
    p.start()
    p.join()
    t1 = time.perf_counter_ns()
    _check(p)
    return t1 - t0


def _raw_roundtrip():
    t0 = time.perf_counter_ns()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter_ns() - t0


def _throughput(ctx, n, alive):
    live = {}  # sentinel -> process
    started = 0
    t0 = time.perf_counter_ns()
    while started < n or live:
        while started < n and len(live) < alive:
            p = ctx.Process()
            p.start()
            live[p.sentinel] = p
            started += 1
        for sentinel in wait(list(live)):
            p = live.pop(sentinel)
            p.join()
            _check(p)
            p.close()
    return time.perf_counter_ns() - t0


def _raw_throughput(n, alive):
    live = set()
    started = 0
    t0 = time.perf_counter_ns()
    while started < n or live:
        while started < n and len(live) < alive:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            live.add(pid)
            started += 1
        # Only our children exit here: servers and trackers stay alive.
        pid, _ = os.waitpid(-1, 0)
        live.discard(pid)
    return time.perf_counter_ns() - t0


def _pool(ctx, tasks):
    t0 = time.perf_counter_ns()
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx,
                             max_tasks_per_child=1) as ex:
        for _ in ex.map(abs, range(tasks)):
            pass
    return time.perf_counter_ns() - t0


_executor_servers: dict = {}   # preload -> warmfork.Server, kept for the run


def _executor(ctx, tasks):
    """``tasks`` tiny tasks, each in a fresh process (fork: reused workers).

    warmfork.Executor uses a Server started before the clock, as the
    stdlib's forkserver is already running for its pool.
    """
    name = ctx.get_start_method()
    if name == "warmfork":
        import warmfork
        from warmfork.context import current_preload
        preload = current_preload()
        if preload not in _executor_servers:
            _executor_servers[preload] = warmfork.Server(preload)
        server = _executor_servers[preload]
    t0 = time.perf_counter_ns()
    if name == "warmfork":
        ex = warmfork.Executor(2, server=server)
    elif name == "fork":
        ex = ProcessPoolExecutor(max_workers=2, mp_context=ctx)
    else:
        ex = ProcessPoolExecutor(max_workers=2, mp_context=ctx,
                                 max_tasks_per_child=1)
    with ex:
        for _ in ex.map(abs, range(tasks)):
            pass
    return time.perf_counter_ns() - t0


def _arg_start(ctx, arg):
    """_start with an argument: the same array each time, as a dataset goes
    to each DataLoader worker."""
    return _timed_start(ctx, payloads.send_byte, arg)


def _uss(ctx, target=payloads.report_uss, *args):
    parent_r, child_w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=target, args=(child_w,) + args)
    try:
        p.start()
        kb = parent_r.recv()
        p.join()
    finally:
        parent_r.close()
        child_w.close()
    _check(p)
    return kb


def _burst(ctx):
    """Mean start latency of BURST starts back to back: the warm pool
    has no time to refill between them."""
    pipes = [ctx.Pipe(duplex=False) for _ in range(BURST)]
    procs = [ctx.Process(target=w.send_bytes, args=(b"x",))
             for _, w in pipes]
    try:
        t0 = time.perf_counter_ns()
        for p, (r, _) in zip(procs, pipes):
            p.start()
            r.recv_bytes()
        t1 = time.perf_counter_ns()
        for p in procs:
            p.join()
    finally:
        for r, w in pipes:
            r.close()
            w.close()
    for p in procs:
        _check(p)
    return (t1 - t0) // BURST


def _faults(ctx):
    parent_r, child_w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=payloads.report_faults, args=(child_w,))
    try:
        p.start()
        faults = parent_r.recv()
        p.join()
    finally:
        parent_r.close()
        child_w.close()
    _check(p)
    return faults


def _cpu_per_child(ctx, n, alive):
    """Run the throughput batch; return the tree's CPU ns per child."""
    from .cpu import tree_cpu_ns
    before = tree_cpu_ns(ctx)
    if ctx is None:
        _raw_throughput(n, alive)
    else:
        _throughput(ctx, n, alive)
    return (tree_cpu_ns(ctx) - before) // n


def _check(p):
    if p.exitcode != 0:
        raise RuntimeError(f"benchmark child {p.pid} exited with {p.exitcode}")
