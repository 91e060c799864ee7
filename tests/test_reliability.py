"""Contracts that hold under faults (DESIGN.md section 6b; issue 8).

One test per failure of issue 8 (the number is in each docstring), each of
which fails on the code before the fixes (c836cf1), and "exactly once":
the server SIGKILLed at each step of a start.  Faults are real: SIGKILL,
SIGSTOP, prlimit, and tests/faults/faultshim.c, an LD_PRELOAD library that
fails or kills the server at its Nth call of a syscall (it acts in the
server process only; its header says how to drive it).  No mocks.

So that they could be run against c836cf1, the few places that reach into
warmfork's internals go through ``context_server`` and ``start_fds``.
"""
import contextlib
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings

import pytest

import warmfork
from warmfork import client, context, core

from procinfo import wait_until
from warmfork.core import lib

import fault_targets
import helpers

ctx = mp.get_context("warmfork")
HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_SOURCE = os.path.join(HERE, "faults", "faultshim.c")
SYS_RECVMSG = {"x86_64": 47, "aarch64": 212}.get(os.uname().machine)


# --- processes, as /proc shows them ------------------------------------

def stat_of(pid):
    """(state, ppid) of ``pid``, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def alive(pid):
    st = stat_of(pid)
    return st is not None and st[0] != "Z"


def children(pid):
    """Live (not zombie) children of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = stat_of(int(entry))
            if st and st[1] == pid and st[0] != "Z":
                out.append(int(entry))
    return out


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reap(pid):
    """Reap ``pid`` if it is our dead child (a server we killed)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- the fault shim ------------------------------------------------------

@pytest.fixture(scope="session")
def faultshim(tmp_path_factory):
    """Build tests/faults/faultshim.c with the system compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build tests/faults/faultshim.c")
    lib_path = str(tmp_path_factory.mktemp("faultshim") / "faultshim.so")
    build = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-o",
                            lib_path, SHIM_SOURCE, "-ldl"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return lib_path


@contextlib.contextmanager
def faults(shim, spec):
    """Servers launched in this block run under the shim with ``spec``
    (WF_FAULT).  Yields a tag found in the environment of that server and
    of every process it forks, so that its orphans can be found."""
    tag = uuid.uuid4().hex
    names = ("LD_PRELOAD", "WF_FAULT", "WF_FAULT_TAG")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(LD_PRELOAD=shim, WF_FAULT=spec, WF_FAULT_TAG=tag)
    try:
        yield tag
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def tagged(tag):
    """Live processes whose environment holds ``tag``."""
    needle = ("WF_FAULT_TAG=%s" % tag).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                if needle in f.read() and alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            pass
    return found


# --- servers ---------------------------------------------------------------

def context_server():
    """The drop-in context's server for the current settings."""
    try:
        from warmfork.popen_warmfork import default_server
    except ImportError:                                   # c836cf1
        return client.server_for(context.current_preload())
    return default_server()


@pytest.fixture(autouse=True, scope="module")
def tracker_first():
    # Make the default server this process's resource tracker now, so that
    # the servers these tests kill or close are never it.
    ctx.Lock()


@contextlib.contextmanager
def own_context_server(pool_size, preload=("fault_targets",)):
    """In this block the drop-in context uses a server of its own (a
    preload set no other test uses), closed at the end."""
    saved = context.current_preload(), context.current_pool_size()
    warmfork.set_preload(list(preload))
    warmfork.set_pool_size(pool_size)
    try:
        yield
    finally:
        warmfork.set_preload(list(saved[0]))
        warmfork.set_pool_size(saved[1])
        server = client._servers.pop(tuple(preload), None)
        if server is not None:
            server.close()
            reap(server.pid)


def wait_for_pool(server_pid, pool_size):
    assert wait_until(lambda: len(children(server_pid)) >= pool_size), \
        "the warm pool never filled"


def start_fds(status_w, data_r, tracker_fd):
    """A START's first fds, in the slots of the installed version."""
    if not hasattr(lib, "WF_FD_STATUS"):                 # c836cf1
        return [data_r, status_w, tracker_fd]
    fds = [-1] * lib.WF_FD_INHERITED
    fds[lib.WF_FD_STATUS] = status_w
    fds[lib.WF_FD_DATA] = data_r
    fds[lib.WF_FD_TRACKER] = tracker_fd
    return fds


def raw_connection(server_process):
    """A second authenticated connection to a server (a ServerProcess)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(server_process.socket_path)
        hello = core.new_frame(lib.WF_HELLO, data=server_process._secret)
        assert core.request(sock.fileno(), hello).type == lib.WF_OK
    except BaseException:
        sock.close()
        raise
    return sock


def ran_in(path):
    """The pids in which fault_targets.append_pid ran."""
    with open(path) as f:
        return [int(line) for line in f.read().split()]


# --- exactly once ------------------------------------------------------------

# sendmsg #1 of a fresh server is the reply to our HELLO.  With the pool,
# a start is hand-off (sendmsg #2) then reply (#3); without, fork #1 then
# reply (#2).
STEPS = {
    # With the pool the server replies first (sendmsg 2), then hands off
    # (sendmsg 3); sendmsg 1 answered the HELLO.
    2: {"before-reply": "sendmsg:2:kill-before",
        "after-reply": "sendmsg:2:kill-after",          # = before hand-off
        "after-handoff": "sendmsg:3:kill-after"},
    0: {"before-fork": "fork:1:kill-before",
        "after-fork": "fork:1:kill-after",
        "before-reply": "sendmsg:2:kill-before",
        "after-reply": "sendmsg:2:kill-after"},
}


def start_with_server_killed(shim, path, api, pool_size, rule):
    """Start fault_targets.append_pid(path) on a server that SIGKILLs
    itself at ``rule``; return what happened."""
    out = {"raised": None, "pid": None, "exitcode": None, "warned": False}
    with contextlib.ExitStack() as stack:
        if api == "context":
            stack.enter_context(own_context_server(pool_size))
        with faults(shim, rule) as tag:
            if api == "server":
                srv = warmfork.Server(pool_size=pool_size)
                stack.callback(srv.close)
                server_pid = srv.pid
            else:
                server_pid = context_server().pid
        stack.callback(reap, server_pid)
        wait_for_pool(server_pid, pool_size)
        process = ctx.Process(target=fault_targets.append_pid,
                              args=(str(path),))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if api == "server":
                    process = srv.spawn(fault_targets.append_pid,
                                        str(path))._process
                else:
                    process.start()
            out["warned"] = any(issubclass(w.category, RuntimeWarning)
                                and "died" in str(w.message) for w in caught)
        except client.ServerGone as e:
            out["raised"] = e
        else:
            out["pid"] = process.pid
            process.join(10)
            out["exitcode"] = process.exitcode
            if process.exitcode is None:
                process.kill()
        # Every process the killed server left behind must end by itself.
        out["orphans"] = [] if wait_until(
            lambda: not set(tagged(tag)) - {server_pid}) else tagged(tag)
        for pid in out["orphans"]:
            os.kill(pid, signal.SIGKILL)
    out["ran"] = ran_in(path)
    return out


@pytest.mark.parametrize("api", ["context", "server"])
@pytest.mark.parametrize("pool_size,step", [(2, s) for s in STEPS[2]]
                         + [(0, s) for s in STEPS[0]])
def test_exactly_once_when_the_server_dies_during_a_start(
        faultshim, tmp_path, api, pool_size, step):
    path = tmp_path / "ran"
    path.write_text("")
    out = start_with_server_killed(faultshim, path, api, pool_size,
                                   STEPS[pool_size][step])
    assert out["orphans"] == []
    if (pool_size, step) == (2, "after-reply") and out["raised"] is None \
            and out["exitcode"] == 255:
        # The reply came, then the server died.  Either before the
        # hand-off, our data going into the pipe before its read end
        # closed: that pid never runs; or the idle child was not READY yet
        # and the server had forked it, so it ran.  At most once, in the
        # pid start() reported, and 255.  (If the write found the read end
        # closed, EPIPE, the start was retried or raised: the branches
        # below.)
        assert out["ran"] in ([], [out["pid"]])
        return
    if (pool_size, step) in ((0, "after-reply"), (2, "after-handoff")):
        # The parent has the pid and the child its pipes: the child runs,
        # unsupervised; its exit code is unknowable, as under the stdlib.
        assert out["raised"] is None and not out["warned"]
        assert out["ran"] == [out["pid"]]
        assert out["exitcode"] == 255
    elif api == "context":
        # The drop-in context replaces the dead server and starts afresh.
        assert out["warned"] and out["raised"] is None
        assert out["ran"] == [out["pid"]]
        assert out["exitcode"] == 0
    else:
        # A warmfork.Server is not replaced behind its owner's back: the
        # start could not be guaranteed, so it raised, and nothing ran.
        assert isinstance(out["raised"], client.ServerGone)
        assert out["ran"] == []


# --- issue 8, one test per failure -----------------------------------------

@pytest.mark.parametrize("pool_size", [2, 0])
def test_start_retried_on_a_new_server_runs_once_and_joins(
        faultshim, tmp_path, pool_size):
    """8.2: the server dies after the fork or hand-off, before its reply.
    The retry on a new server must not reuse the pipes the orphan holds."""
    path = tmp_path / "ran"
    path.write_text("")
    out = start_with_server_killed(faultshim, path, "context", pool_size,
                                   STEPS[pool_size]["before-reply"])
    assert out["warned"]
    assert out["exitcode"] == 0           # join() returned
    assert out["ran"] == [out["pid"]]
    assert out["orphans"] == []


FAKE_HANGUP = r'''
import json, os, socket, sys, time
import multiprocessing as mp
from multiprocessing import resource_tracker, shared_memory
import warmfork

def shm_path(name):
    name = name.lstrip("/")
    return "/dev/shm/" + ("sem." + name if name.startswith("mp-") else name)

def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:             # ESRCH if it goes while we read
        return False

def grandchild(lock, shm, report, parent):
    """Outlive the parent and the child; keep using their names."""
    while alive(parent):
        time.sleep(0.02)
    time.sleep(0.5)             # the server has seen the parent go
    out = {"names": [lock._semlock.name, shm.name]}
    out["early"] = [os.path.exists(shm_path(n)) for n in out["names"]]
    with lock:
        shm.buf[0] = 7
    # A registration after the fake hang-up: it must reach our server, not
    # a stdlib tracker launched because the channel looked dead.
    extra = shared_memory.SharedMemory(create=True, size=4096)
    out["names"].append(extra.name)
    out["stdlib_tracker_pid"] = resource_tracker._resource_tracker._pid
    time.sleep(0.5)
    out["late"] = [os.path.exists(shm_path(n)) for n in out["names"]]
    with open(report, "w") as f:
        json.dump(out, f)
    os._exit(0)                 # leave the names to the tracker

def child(how, report, parent):
    lock = mp.get_context("warmfork").Lock()
    shm = shared_memory.SharedMemory(create=True, size=4096)
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(w)
        os.read(r, 1)           # until the hang-up is faked
        grandchild(lock, shm, report, parent)
    fd = resource_tracker._resource_tracker._fd
    if how == "empty-write":
        os.write(fd, b"")
    else:
        dup = os.dup(fd)
        try:
            socket.socket(fileno=dup).shutdown(socket.SHUT_WR)
        except OSError:         # ENOTSOCK: the channel is a pipe
            os.close(dup)
    os.close(w)
    os._exit(0)                 # no cleanup: the grandchild uses them

if __name__ == "__main__":
    ctx = mp.get_context("warmfork")
    ctx.Lock()                  # our server is this process's tracker
    p = ctx.Process(target=child, args=(sys.argv[1], sys.argv[2],
                                        os.getpid()))
    p.start()
    p.join()
    from warmfork import client
    server, = client._servers.values()
    print(json.dumps({"server": server.pid, "child": p.exitcode}),
          flush=True)
    os._exit(0)
'''


def shm_path(name):
    name = name.lstrip("/")
    return "/dev/shm/" + ("sem." + name if name.startswith("mp-") else name)


@pytest.mark.parametrize("how", ["empty-write", "shutdown"])
def test_fake_tracker_hangup_does_not_unlink_names_still_in_use(tmp_path,
                                                                how):
    """8.1: a holder writes an empty record or shuts the channel down."""
    script = tmp_path / "hangup.py"
    script.write_text(FAKE_HANGUP)
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=HERE)
    with subprocess.Popen([sys.executable, str(script), how, str(report)],
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as parent:
        info = json.loads(parent.stdout.readline())
        parent.wait(30)
        assert info["child"] == 0
        assert wait_until(report.exists, 20), "the grandchild never reported"
        assert wait_until(lambda: not alive(info["server"]), 20)
        stderr = parent.stderr.read()
    out = json.loads(report.read_text())
    # While the grandchild lived, past the parent, its names were there...
    assert out["early"] == [True, True]
    assert out["late"] == [True, True, True]
    # ...and its registration reached our server, no stdlib tracker.
    assert out["stdlib_tracker_pid"] is None
    assert "relaunching" not in stderr
    # Once the last holder is gone, nothing is left.
    assert [n for n in out["names"] if os.path.exists(shm_path(n))] == []


TRANSIENT = {     # faultshim rules: one failure each
    "accept4-ENOMEM": "accept4:2:ENOMEM",
    "accept4-ENOBUFS": "accept4:2:ENOBUFS",
    "poll-ENOMEM": "poll:3:ENOMEM",
    "request-recvmsg-ENOMEM": "recvmsg:2:ENOMEM",
    "tracker-read-ENOMEM": "tracker:1:ENOMEM",
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
def test_transient_error_is_a_notice_not_the_end(faultshim, tmp_path, capfd,
                                                 fault):
    """8.3: one ENOMEM/ENOBUFS (accept4, poll, a request's recvmsg, the
    tracker's read) must not end the server nor unlink live names."""
    name = "/wf-transient-%s" % uuid.uuid4().hex[:12]
    open(shm_path(name), "w").close()
    try:
        with faults(faultshim, TRANSIENT[fault]):
            srv = warmfork.Server(pool_size=0)
        server_pid = srv.pid
        try:
            proc = srv._server
            # The tracker keeps this name until the server's end.
            os.write(proc.tracker_fd, b"REGISTER:%s:shared_memory\n"
                     % name.encode())
            if fault.startswith("accept4"):
                raw_connection(proc).close()       # accepted after all
            time.sleep(0.2)
            assert alive(srv.pid), "the server ended"
            assert srv.spawn(helpers.exit_with, 3).wait(10) == 3
            assert os.path.exists(shm_path(name))
        finally:
            srv.close()
        assert wait_until(lambda: not alive(server_pid))
        reap(server_pid)
        assert not os.path.exists(shm_path(name))  # the record was kept
        assert "retrying" in capfd.readouterr().err
    finally:
        if os.path.exists(shm_path(name)):
            os.unlink(shm_path(name))


def test_pool_refill_failure_backs_off_without_spinning(faultshim, capfd):
    """8.4: the pool cannot refill (socketpair fails with EMFILE)."""
    with faults(faultshim, "socketpair:3+*:EMFILE"):
        srv = warmfork.Server(pool_size=2)
    try:
        wait_for_pool(srv.pid, 2)
        os.kill(children(srv.pid)[0], signal.SIGKILL)   # now refill fails
        cpu = cpu_seconds(srv.pid)
        time.sleep(1.5)
        cpu = cpu_seconds(srv.pid) - cpu
        assert srv.spawn(helpers.exit_with, 4).wait(10) == 4
        notices = [line for line in capfd.readouterr().err.splitlines()
                   if "refill" in line]
    finally:
        srv.close()
    assert cpu < 0.3, "the server spun: %.2f s of CPU in 1.5 s" % cpu
    # Back-off doubles from 10 ms to at most 1 s: about 8 tries in 1.5 s.
    assert 1 <= len(notices) <= 15, notices[:20]


def test_pool_resumes_after_a_failed_refill_fork(faultshim):
    """8.4: one EAGAIN from a refill's fork must not disable the pool."""
    with faults(faultshim, "fork:3:EAGAIN"):
        srv = warmfork.Server(pool_size=2)
    try:
        wait_for_pool(srv.pid, 2)
        os.kill(children(srv.pid)[0], signal.SIGKILL)   # refill fork fails
        assert wait_until(lambda: len(children(srv.pid)) == 2, 5), \
            "the pool did not refill"
    finally:
        srv.close()


def test_tracker_flood_does_not_stall_starts():
    """8.5: a child registers 16,000 names, then repeats one record."""
    with warmfork.Server(pool_size=0) as srv:
        channel = multiprocessing.connection.Connection(os.dup(srv._server.tracker_fd))
        mine, theirs = ctx.Pipe()
        flooder = srv.spawn(fault_targets.flood_tracker, channel, 16000,
                            8.0, theirs)
        channel.close()
        theirs.close()
        assert mine.poll(30) and mine.recv() == "flooding"
        took = []
        for _ in range(20):
            t = time.monotonic()
            handle = srv.spawn(helpers.noop)
            took.append(time.monotonic() - t)
            assert handle.wait(10) == 0
        with contextlib.suppress(BrokenPipeError):   # already over
            mine.send("stop")
        assert flooder.wait(20) == 0
        mine.close()
    took.sort()
    assert took[len(took) // 2] < 0.1 and took[-1] < 0.5, took


def _in_recvmsg(tid):
    try:
        with open("/proc/self/task/%d/syscall" % tid) as f:
            return f.read().split()[0] == str(SYS_RECVMSG)
    except OSError:
        return False


@pytest.mark.skipif(SYS_RECVMSG is None, reason="syscall number unknown "
                    "for this machine")
def test_ctrl_c_interrupts_a_start_on_a_stalled_server(tmp_path):
    """8.6: KeyboardInterrupt raises out of start() while the server is
    stopped; the next start reconnects."""
    path = tmp_path / "ran"
    path.write_text("")
    main = threading.main_thread()
    with warmfork.Server(pool_size=0) as srv:
        assert srv.spawn(helpers.exit_with, 0).wait(10) == 0
        os.kill(srv.pid, signal.SIGSTOP)

        def interrupt():
            # Once start() waits for the reply, press Ctrl-C.
            if wait_until(lambda: _in_recvmsg(main.native_id), 5):
                signal.pthread_kill(main.ident, signal.SIGINT)
        # Whatever happens, do not leave the server stopped.
        resume = threading.Timer(5, os.kill, (srv.pid, signal.SIGCONT))
        pressing = threading.Thread(target=interrupt)
        resume.start()
        pressing.start()
        t = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                srv.spawn(fault_targets.append_pid, str(path))
            took = time.monotonic() - t
        finally:
            pressing.join()
            resume.cancel()
            os.kill(srv.pid, signal.SIGCONT)
        assert took < 2, "start() ignored Ctrl-C for %.1f s" % took
        assert srv.spawn(helpers.exit_with, 5).wait(10) == 5
    time.sleep(0.3)
    assert ran_in(path) == []        # the interrupted start never ran


def test_full_status_pipe_does_not_block_the_server(capfd):
    """8.7: the exit code goes into a status pipe a client filled."""
    with warmfork.Server(pool_size=0) as srv:
        status_r, status_w = os.pipe()
        os.set_blocking(status_w, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(status_w, b"x" * 4096)
        os.set_blocking(status_w, True)      # as a client could leave it
        data_r, data_w = os.pipe()
        sock = raw_connection(srv._server)
        fds = start_fds(status_w, data_r, srv._server.tracker_fd)
        reply = core.request(sock.fileno(), core.new_frame(
            lib.WF_START, nfds=len(fds)), fds)
        assert reply.type == lib.WF_OK
        for fd in (status_w, data_r, data_w):  # the child reads EOF, exits
            os.close(fd)
        assert wait_until(lambda: not alive(reply.arg), 10)
        done = []
        later = threading.Thread(target=lambda: done.append(
            srv.spawn(helpers.exit_with, 6).wait(10)))
        later.start()
        try:
            later.join(5)
            assert done == [6], "the server is wedged on a full pipe"
        finally:
            # Unwedge a server that blocked, so that this test ends.
            os.set_blocking(status_r, False)
            with contextlib.suppress(BlockingIOError):
                while os.read(status_r, 65536):
                    pass
            later.join(10)
            os.close(status_r)
            sock.close()
    assert "status pipe is full" in capfd.readouterr().err


RUNS_PROGRAMS = '''
import os, sys
OUT = %r

def listing(tag):
    # What a program the server runs finds open, beyond stdio.
    os.system("ls -l /proc/self/fd/ > %%s-%%s 2>&1" %% (OUT, tag))

listing("import")
_forked = []

def _after_fork():
    if not _forked:
        _forked.append(1)
        listing("at-fork")

os.register_at_fork(after_in_parent=_after_fork)
'''


@pytest.mark.parametrize("when", ["import", "at-fork"])
def test_server_fds_do_not_reach_programs_the_preload_runs(tmp_path,
                                                           monkeypatch, when):
    """8.8: listener, tracker ends and the alive pipe are close-on-exec,
    at import time of a preloaded module and after."""
    module = "wf_runs_programs_%s" % uuid.uuid4().hex[:8]
    (tmp_path / (module + ".py")).write_text(
        RUNS_PROGRAMS % str(tmp_path / "fds"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with warmfork.Server(preload=[module], pool_size=1) as srv:
        wait_for_pool(srv.pid, 1)         # one fork: the at-fork hook ran
        listing = tmp_path / ("fds-" + when)
        assert wait_until(listing.exists, 10)
        assert srv.spawn(helpers.exit_with, 0).wait(10) == 0
    inherited = [line for line in listing.read_text().splitlines()
                 if "socket:" in line or "pipe:" in line]
    # The program's own stdio may be pipes (pytest's); nothing beyond.
    inherited = [line for line in inherited
                 if not any(" %d -> " % fd in line for fd in (0, 1, 2))]
    assert inherited == []


SLOW_EXIT = '''
import atexit, time
atexit.register(time.sleep, 0.5)
'''


@pytest.mark.parametrize("how", ["killed", "exits-slowly"])
def test_dead_server_is_reaped_and_its_socket_dir_removed(tmp_path,
                                                          monkeypatch, how):
    """8.9: no zombie (reaped even when it takes a while to exit), and no
    socket directory left under the temp dir."""
    module = "wf_slow_exit_%s" % uuid.uuid4().hex[:8]
    (tmp_path / (module + ".py")).write_text(SLOW_EXIT)
    monkeypatch.syspath_prepend(str(tmp_path))
    with own_context_server(0, preload=(module,)):
        old = context_server()
        if how == "killed":
            os.kill(old.pid, signal.SIGKILL)
        else:
            # poll() fails with EINVAL once it watches more fds than the
            # limit: a fatal error.  The server hangs up, then lingers in
            # its atexit handler.
            soft, hard = resource.prlimit(old.pid, resource.RLIMIT_NOFILE)
            resource.prlimit(old.pid, resource.RLIMIT_NOFILE, (2, hard))
            os.write(old.tracker_fd, b"PROBE:0:noop\n")   # wake it up
            time.sleep(0.1)
        try:
            with pytest.warns(RuntimeWarning, match="died"):
                p = ctx.Process(target=helpers.exit_with, args=(2,))
                p.start()
            p.join(10)
            assert p.exitcode == 2
            time.sleep(1.0 if how == "exits-slowly" else 0.1)
            assert stat_of(old.pid) is None, "the old server is a zombie"
            assert not os.path.exists(os.path.dirname(old.socket_path))
        finally:
            reap(old.pid)


@pytest.mark.skipif(SYS_RECVMSG is None, reason="syscall number unknown "
                    "for this machine")
def test_idle_child_that_cannot_receive_its_start_exits_255(capfd):
    """8.10: the idle child's hand-off receive fails (its fd table is
    full): the start it was given must not look like a success."""
    with warmfork.Server(pool_size=1) as srv:
        wait_for_pool(srv.pid, 1)
        idle, = children(srv.pid)

        def parked():
            try:
                with open("/proc/%d/syscall" % idle) as f:
                    return f.read().split()[0] == str(SYS_RECVMSG)
            except OSError:
                return False
        assert wait_until(parked, 10)
        # No fd it receives can be installed: MSG_CTRUNC.
        hard = resource.prlimit(idle, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(idle, resource.RLIMIT_NOFILE, (3, hard))
        # A start by hand, so that we hold its status pipe and the data
        # pipe stays open: the exit code is the child's own verdict.
        status_r, status_w = os.pipe()
        data_r, data_w = os.pipe()
        sock = raw_connection(srv._server)
        try:
            fds = start_fds(status_w, data_r, srv._server.tracker_fd)
            reply = core.request(sock.fileno(), core.new_frame(
                lib.WF_START, nfds=len(fds)), fds)
            os.close(status_w)
            os.close(data_r)
            assert reply.type == lib.WF_OK and reply.arg == idle
            assert select.select([status_r], [], [], 10)[0]
            code, = struct.unpack("q", os.read(status_r, 8))
        finally:
            for fd in (status_r, data_w):
                os.close(fd)
            sock.close()
    assert code == 255
    assert "could not receive its start" in capfd.readouterr().err


# --- found by tools/soak.py ------------------------------------------------

@pytest.mark.parametrize("pool_size", [0, 2])
def test_terminate_right_after_start_is_not_lost(pool_size):
    """The server ignores SIGTERM; a child forked from it must not drop a
    SIGTERM that arrives before it takes the default back."""
    with warmfork.Server(pool_size=pool_size) as srv:
        codes = []
        for _ in range(10):
            handle = srv.spawn(helpers.sleep, 30)
            handle.terminate()
            codes.append(handle.wait(5))
            if codes[-1] is None:
                handle.kill()
                handle.wait(5)
    assert codes == [-signal.SIGTERM] * 10
