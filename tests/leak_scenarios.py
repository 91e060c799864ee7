"""SIGKILL scenarios on a tree that holds named semaphores and shared memory.

One scenario runs a fresh parent process (a generated script, in its own
session) that holds a Lock and a SharedMemory and starts 2 children; each
child uses both and creates a Lock and a segment of its own. Then some of
the tree is SIGKILLed, and `run` reports what the tree looked like, which
names vanished while a process still used them, which outlived everybody
(the server and the tracker included), and what the tracker warned of.

Used by tests/test_leaks.py and by tools/leakreport.py.
"""
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import procinfo
from procinfo import wait_until

SCENARIOS = {
    "0": "control: nobody killed, all clean up",
    "a": "children SIGKILLed, parent exits normally",
    "b": "parent SIGKILLed, children exit 1.5 s later",
    "c": "parent and children SIGKILLed at once",
}
# How the parent picks the method and what it creates first.
#   default: set_start_method(method), SharedMemory first -- it registers
#            with the global tracker, before any start or Lock.
#   context: ctx = get_context(method), Lock first.
VARIANTS = ("default", "context")
CHILD_LINGER = 1.5      # b: the children outlive their parent this long
PARENT_WATCH = 0.5      # a: we watch the parent's names this long
TIMEOUT = 30            # readiness, and the server/tracker's exit

WARNING = re.compile(r"There appear to be (\d+) leaked (\w+) objects")

# Children re-import this as __mp_main__ (spawn, forkserver): hence the guard.
PARENT_SCRIPT = r'''
import json, os, sys, time
import multiprocessing as mp
from multiprocessing import shared_memory

SAFETY = 60     # nobody started here outlives this, even if the harness dies


def record(role, lock, shm):
    names = ["sem." + lock._semlock.name.lstrip("/"), shm.name.lstrip("/")]
    path = "names-%s-%d.json" % (role, os.getpid())
    with open(path + ".tmp", "w") as f:
        json.dump({"role": role, "names": names}, f)
    os.rename(path + ".tmp", path)     # the harness never reads half a file


def wait_for(path):
    deadline = time.monotonic() + SAFETY
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit("scenario: no " + path)
        time.sleep(0.01)


def child(method, scenario, lock, shm_name):
    theirs = shared_memory.SharedMemory(name=shm_name)
    with lock:
        theirs.buf[1] += 1
    own_lock = mp.get_context(method).Lock()
    own_shm = shared_memory.SharedMemory(create=True, size=4096)
    own_lock.acquire()
    record("child", own_lock, own_shm)
    if scenario == "0":
        wait_for("go")
        own_lock.release()
        own_shm.close()
        own_shm.unlink()
        theirs.close()
        return                     # own_lock's finalizer unlinks it
    if scenario == "b":
        mp.parent_process().join(SAFETY)
        time.sleep(float(sys.argv[4]))
        # From here on our own Lock may go (its finalizer unlinks it).
        open("leaving-%d" % os.getpid(), "w").close()
        own_shm.close()            # never unlinked: left to the tracker
        theirs.close()
        return
    time.sleep(SAFETY)


if __name__ == "__main__":
    method, scenario, variant = sys.argv[1:4]
    if method == "warmfork":
        import warmfork    # not the .pth hook: an editable install has none
    if variant == "default":
        mp.set_start_method(method)
        shm = shared_memory.SharedMemory(create=True, size=4096)
        ctx = mp.get_context()
        lock = ctx.Lock()
    else:
        ctx = mp.get_context(method)
        lock = ctx.Lock()
        shm = shared_memory.SharedMemory(create=True, size=4096)
    record("parent", lock, shm)
    procs = [ctx.Process(target=child, args=(method, scenario, lock, shm.name))
             for _ in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + SAFETY
    while sum(n.startswith("names-child-") for n in os.listdir(".")) < 2:
        if time.monotonic() > deadline:
            raise SystemExit("scenario: children did not get ready")
        time.sleep(0.01)
    with open("ready.tmp", "w") as f:
        json.dump({"parent": os.getpid(), "children": [p.pid for p in procs]},
                  f)
    os.rename("ready.tmp", "ready.json")
    if scenario in ("0", "a"):
        wait_for("go")
        for p in procs:
            p.join(SAFETY)
        shm.close()
        shm.unlink()
        sys.exit(0)
    time.sleep(SAFETY)             # b, c: SIGKILLed before this ends
'''

Result = collections.namedtuple(
    "Result", "roles names at_kill too_early after still_alive warned "
              "exit_seconds stderr")


class ScenarioFailed(Exception):
    """The scenario could not be set up; not a finding about leaks."""


def role_counts(tree, parent, started):
    """Count the tree's processes by role: parent, server and tracker (the
    parent's children, told apart by command line), child (the server's,
    started by the parent), idle (the server's, never started) and other
    (anything else). `tree` lists parents before their children."""
    counts = dict.fromkeys(("parent", "server", "tracker", "child", "idle",
                            "other"), 0)
    servers = set()
    for st in tree:
        cmd = procinfo.cmdline(st.pid)
        if st.pid == parent:
            role = "parent"
        elif st.ppid == parent and "resource_tracker" in cmd:
            role = "tracker"
        elif st.ppid == parent and ("forkserver" in cmd
                                    or "warmfork.server" in cmd):
            role = "server"
            servers.add(st.pid)
        elif st.ppid in servers:
            role = "child" if st.pid in started else "idle"
        else:
            role = "other"
        counts[role] += 1
    return counts


def read_names(workdir):
    """{name in /dev/shm: role of its creator} for every name the scenario
    made."""
    names = {}
    for entry in os.listdir(workdir):
        if entry.startswith("names-") and entry.endswith(".json"):
            with open(os.path.join(workdir, entry)) as f:
                rec = json.load(f)
            for name in rec["names"]:
                names[name] = rec["role"]
    return names


def in_shm(names):
    return sorted(n for n in names if os.path.exists("/dev/shm/" + n))


def watch(names, keep_going):
    """While keep_going(): the names of `names` that went missing."""
    gone = set()
    while keep_going():
        missing = set(names) - set(in_shm(names))
        if missing and keep_going():   # still in the window after the look
            gone |= missing
        time.sleep(0.02)
    return sorted(gone)


def run(method, scenario, variant, workdir, python=sys.executable):
    """Run one scenario in workdir (an empty directory); return a Result."""
    script = os.path.join(workdir, "parent.py")
    with open(script, "w") as f:
        f.write(PARENT_SCRIPT)
    err_path = os.path.join(workdir, "stderr.txt")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [python, script, method, scenario, variant, str(CHILD_LINGER)],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            start_new_session=True)
    tree = []
    try:
        ready = os.path.join(workdir, "ready.json")
        if not wait_until(lambda: os.path.exists(ready)
                          or proc.poll() is not None, TIMEOUT) \
                or not os.path.exists(ready):
            raise ScenarioFailed("the parent did not get ready: %s"
                                 % _read(err_path)[-2000:])
        with open(ready) as f:
            info = json.load(f)
        parent, started = info["parent"], info["children"]
        tree = procinfo.descendants(parent)
        roles = role_counts(tree, parent, started)
        names = read_names(workdir)
        parents_names = [n for n, role in names.items() if role == "parent"]
        victims = {"0": [], "a": started, "b": [parent],
                   "c": [parent] + started}[scenario]
        if scenario == "c":
            # Stopped first, so that nobody sees the others die and reacts.
            for pid in victims:
                os.kill(pid, signal.SIGSTOP)
        # Taken before the kill: in c the server may unlink everything
        # before we could look again.
        at_kill = in_shm(names)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        kill_time = time.monotonic()
        too_early = []
        if scenario == "a":
            # The parent lives on and uses its names: none may go.
            too_early = watch(parents_names, lambda: time.monotonic()
                              < kill_time + PARENT_WATCH)
        elif scenario == "b":
            # Until a child starts to leave, every name is in use by both
            # children (the parent's) or by its creator (their own).
            too_early = watch(names, lambda: not any(
                n.startswith("leaving-") for n in os.listdir(workdir))
                and any(procinfo.alive(pid) for pid in started))
        if scenario in ("0", "a"):
            open(os.path.join(workdir, "go"), "w").close()
        proc.wait(TIMEOUT)
        # The server and the tracker clean up once everybody else is gone.
        wait_until(lambda: not any(procinfo.alive(st.pid, st.start)
                                   for st in tree), TIMEOUT)
        exit_seconds = time.monotonic() - kill_time
        still_alive = [st.pid for st in tree
                       if procinfo.alive(st.pid, st.start)]
        after = in_shm(names)
    finally:
        _kill_leftovers(proc, tree)
        # Whatever leaked goes now, so that a failing run leaks nothing.
        for name in in_shm(read_names(workdir)):
            os.unlink("/dev/shm/" + name)
    stderr = _read(err_path)
    warned = collections.Counter()
    for count, kind in WARNING.findall(stderr):
        warned[kind] += int(count)
    return Result(roles, names, at_kill, too_early, after, still_alive,
                  dict(warned), exit_seconds, stderr)


def _kill_leftovers(proc, tree):
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for st in tree:
        if procinfo.alive(st.pid, st.start):
            try:
                os.kill(st.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass            # it exited since we looked


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")
