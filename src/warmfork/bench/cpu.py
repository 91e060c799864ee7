"""CPU time of a whole process tree: parent, server, children.

A child's CPU reaches its parent's "children" counters when it is reaped:
ours (fork, spawn, raw) by this process, a forkserver's or warmfork's by
their server, whose own and reaped children's time /proc/PID/stat gives.
"""
import os
import resource

__all__ = ["tree_cpu_ns", "server_pid"]

_TICK_NS = 10**9 // os.sysconf("SC_CLK_TCK")


def _own_ns():
    total = 0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        u = resource.getrusage(who)
        total += int((u.ru_utime + u.ru_stime) * 1e9)
    return total


def _proc_cpu_ns(pid):
    """utime + stime + cutime + cstime of pid (fields 14-17 of stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) * _TICK_NS


def server_pid(ctx):
    """The pid of the server that forks ctx's children, or None."""
    name = ctx.get_start_method() if ctx is not None else None
    if name == "forkserver":
        from multiprocessing import forkserver
        return forkserver._forkserver._forkserver_pid
    if name == "warmfork":
        from warmfork.popen_warmfork import default_server
        return default_server().pid
    return None


def tree_cpu_ns(ctx):
    """CPU ns used so far by this process, its reaped children, and the
    server of ctx (with the children it reaped)."""
    pid = server_pid(ctx)
    return _own_ns() + (_proc_cpu_ns(pid) if pid else 0)
