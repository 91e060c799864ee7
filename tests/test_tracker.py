"""Named semaphores and shared memory: tracked by the server, never leaked.

Each scenario runs in a fresh parent process. The SIGKILL scenarios (and
the shape of the tree) are in test_leaks.py.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

import helpers
from procinfo import wait_gone


def shm_path(name):
    """Where Linux keeps a POSIX name: semaphores get a 'sem.' prefix."""
    name = name.lstrip("/")
    if name.startswith("mp-"):
        return "/dev/shm/sem." + name
    return "/dev/shm/" + name


BAD_INPUT = r'''
import os, sys, json, time
import multiprocessing as mp
from multiprocessing import resource_tracker, shared_memory
import warmfork, helpers

if __name__ == "__main__":
    ctx = mp.get_context("warmfork")
    p = ctx.Process(target=helpers.noop); p.start(); p.join()
    fd = resource_tracker._resource_tracker._fd
    bad = [b"REGISTER:/" + b"x" * 300 + b":semaphore\n",   # too long
           b"REGISTER:/a/b:semaphore\n",                    # '/' inside
           b"REGISTER:/a\0b:semaphore\n",                   # NUL
           b"REGISTER:/abc:frobnicator\n",                  # unknown kind
           b"REGISTER:/half",                               # cut short
           b"UNREGISTER:/never-registered:semaphore\n",
           b"SHOUT:/abc:semaphore\n",
           b"x" * 5000]                                     # over-long record
    for msg in bad:
        os.write(fd, msg)
    # A flood: more registrations than the table holds.
    for i in range(int(sys.argv[1])):
        os.write(fd, b"REGISTER:/wf-flood-%d:dummy\n" % i)
    for i in range(int(sys.argv[1])):
        os.write(fd, b"UNREGISTER:/wf-flood-%d:dummy\n" % i)
    # After all that, the server still tracks a real segment...
    shm = shared_memory.SharedMemory(create=True, size=4096)
    # ...and still starts children.
    p = ctx.Process(target=helpers.exit_with, args=(9,)); p.start(); p.join()
    from warmfork.popen_warmfork import default_server
    srv = default_server()
    print(json.dumps({"shm": shm.name, "code": p.exitcode,
                      "server": srv.pid}), flush=True)
    os._exit(0)      # leak the segment on purpose
'''


def test_bad_tracker_input_is_reported_and_harmless(tmp_path):
    from warmfork.core import lib
    script = tmp_path / "bad.py"
    script.write_text(BAD_INPUT)
    env = helpers.test_env()
    proc = subprocess.run([sys.executable, str(script),
                           str(lib.WF_MAX_TRACKED + 10)], env=env,
                          capture_output=True, text=True, timeout=120)
    info = json.loads(proc.stdout)
    assert info["code"] == 9
    assert wait_gone(info["server"])
    assert not os.path.exists(shm_path(info["shm"]))
    err = proc.stderr
    for expected in ["ignored an invalid name", "NUL byte",
                     "unknown resource type frobnicator",
                     "malformed message REGISTER:/half",
                     "cannot unregister /never-registered",
                     "unrecognized command SHOUT",
                     "longer than", "table full"]:
        assert expected in err, (expected, err[-3000:])


SHM_BEFORE_WARMFORK = r'''
import os, sys, time
import multiprocessing as mp
from multiprocessing import shared_memory
import warmfork

def child(name, conn):
    shm = shared_memory.SharedMemory(name=name)
    conn.send("attached")
    time.sleep(1.5)                       # the parent is killed meanwhile
    # One write(): two children print at once, and print() may split.
    os.write(1, b"%r\n" % os.path.exists("/dev/shm/" + name))
    shm.close()

if __name__ == "__main__":
    ctx = mp.get_context("warmfork")      # not the default method
    # Registered with a stdlib tracker: warmfork is not running yet.
    shm = shared_memory.SharedMemory(create=True, size=4096)
    for _ in range(2):
        r, w = ctx.Pipe(duplex=False)
        ctx.Process(target=child, args=(shm.name, w)).start()
        r.recv()
    os.kill(os.getpid(), 9)
'''


def test_children_share_a_stdlib_tracker_the_parent_already_had(tmp_path):
    # Children must use the parent's tracker, whichever it is; otherwise a
    # stdlib tracker that only knows the parent unlinks the segment while
    # the children still use it.
    script = tmp_path / "shm_first.py"
    script.write_text(SHM_BEFORE_WARMFORK)
    out = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr


STOP_AND_RESTART = r'''
import multiprocessing as mp, sys
from multiprocessing import resource_tracker, util
import warmfork, helpers
if __name__ == "__main__":
    ctx = mp.get_context("warmfork")
    lock = ctx.Lock()
    tracker = resource_tracker._resource_tracker
    # multiprocessing.util._cleanup_tests() (CPython's own test teardown)
    # calls _stop(): with our server as tracker it must not wait on it.
    tracker._stop()
    assert tracker._fd is None
    lock2 = ctx.Lock()                     # adopts the same server again
    p = ctx.Process(target=helpers.exit_with, args=(6,)); p.start(); p.join()
    print(tracker._fd is not None, p.exitcode)
'''


def test_stop_on_our_tracker_hangs_up_without_waiting(tmp_path):
    script = tmp_path / "stop.py"
    script.write_text(STOP_AND_RESTART)
    env = helpers.test_env()
    out = subprocess.run([sys.executable, str(script)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "6"], out.stderr
    assert "resource_tracker" not in out.stderr   # no stdlib tracker, no leak


TRACKER_DEATH = r'''
import gc, os, signal, sys, time, warnings
import multiprocessing as mp
from multiprocessing.resource_tracker import _resource_tracker
import warmfork

if __name__ == "__main__":
    mp.set_start_method("warmfork")
    _resource_tracker.ensure_running()
    pid = _resource_tracker._pid
    os.kill(pid, int(sys.argv[1]))
    time.sleep(0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sem = mp.get_context("spawn").Semaphore()
        sem.acquire(); sem.release()
        del sem; gc.collect()
    new_pid = _resource_tracker._pid
    with open("/proc/%d/cmdline" % new_pid, "rb") as f:
        cmdline = f.read()
    print(pid, new_pid, b"warmfork.server" in cmdline,
          [str(w.message) for w in caught], flush=True)
'''


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM,
                                    signal.SIGKILL])
def test_tracker_outlives_sigint_sigterm_and_is_replaced_after_sigkill(
        tmp_path, signum):
    # CPython's TestResourceTracker.check_resource_tracker_death, under
    # warmfork: the tracker is the server and must behave as the stdlib's.
    script = tmp_path / "death.py"
    script.write_text(TRACKER_DEATH)
    proc = subprocess.run([sys.executable, str(script), str(int(signum))],
                          env=helpers.test_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid, new_pid, is_server, warned = proc.stdout.split(" ", 3)
    assert is_server == "True"          # a warmfork server, not the stdlib's
    if signum == signal.SIGKILL:
        assert new_pid != pid
        assert "resource_tracker: process died unexpectedly" in warned
        assert warned.count("'") == 2, warned      # exactly one warning
    else:
        assert new_pid == pid and warned.strip() == "[]"
