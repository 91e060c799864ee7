"""The server under misuse: wrong peer, bad frames, deaths, fd limits."""
import errno
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import time

import pytest

import warmfork
from warmfork import client, core
from warmfork.core import lib
from warmfork.context import DEFAULT_POOL_SIZE
from warmfork.popen_warmfork import default_server

import helpers
from procinfo import alive

ctx = mp.get_context("warmfork")


@pytest.fixture
def server():
    srv = client.ServerProcess((), DEFAULT_POOL_SIZE)
    yield srv
    srv.close()


def start_noop(srv):
    """Start helpers.exit_with(0) on ``srv`` through the public API (a
    warmfork Process on that server); return its exit code."""
    from warmfork.popen_warmfork import use_server
    p = ctx.Process(target=helpers.exit_with, args=(0,))
    with use_server(srv):
        p.start()
    p.join(20)
    return p.exitcode


def connect(srv):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(srv.socket_path)
    return sock


def hung_up(sock, timeout=10):
    """True when the server closed ``sock`` (after any replies)."""
    sock.settimeout(timeout)
    while True:
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            return True
        if not data:
            return True


def test_socket_in_private_directory(server):
    mode = os.stat(os.path.dirname(server.socket_path)).st_mode & 0o777
    assert mode == 0o700
    assert not server.socket_path.startswith("\0")


def test_wrong_secret_is_dropped_and_its_fds_closed(server):
    sock = connect(server)
    hello = core.new_frame(lib.WF_HELLO, data=b"\0" * 32)
    reply = core.request(sock.fileno(), hello)
    assert reply.type == lib.WF_ERROR and reply.arg == errno.EACCES
    assert hung_up(sock)
    sock.close()
    # A START before HELLO, carrying a pipe's write end: the server must
    # close that fd, so our read end sees EOF.
    sock = connect(server)
    r, w = os.pipe()
    core.send_frame(sock.fileno(), core.new_frame(lib.WF_START, nfds=1), [w])
    os.close(w)
    assert hung_up(sock)
    assert os.read(r, 1) == b""
    os.close(r)
    sock.close()
    assert start_noop(server) == 0          # the real client is unharmed


@pytest.mark.parametrize("garbage", [b"x", b"\xff" * 56, b"y" * 4000])
def test_bad_frames_drop_only_that_client(server, garbage):
    sock = connect(server)
    sock.send(garbage)
    assert hung_up(sock)
    sock.close()
    assert start_noop(server) == 0


def test_unknown_frame_type_after_auth_is_dropped(server):
    sock = connect(server)
    hello = core.new_frame(lib.WF_HELLO, data=server._secret)
    assert core.request(sock.fileno(), hello).type == lib.WF_OK
    reply = core.request(sock.fileno(), core.new_frame(99))
    assert reply.type == lib.WF_ERROR and reply.arg == errno.EBADMSG
    assert hung_up(sock)
    sock.close()


def test_start_with_too_few_fds_is_refused(server):
    sock = connect(server)
    hello = core.new_frame(lib.WF_HELLO, data=server._secret)
    core.request(sock.fileno(), hello)
    r, w = os.pipe()
    reply = core.request(sock.fileno(), core.new_frame(lib.WF_START, nfds=1),
                         [r])
    assert reply.type == lib.WF_ERROR and reply.arg == errno.EINVAL
    assert core.request(sock.fileno(), core.new_frame(lib.WF_START, nfds=1),
                        [r]).type == lib.WF_ERROR   # still connected
    os.close(r)
    os.close(w)
    sock.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as "
                    "another user")
def test_peer_of_another_uid_is_dropped_before_it_is_heard(server):
    # Open the private directory to everyone, so that only SO_PEERCRED
    # stands between user "nobody" and the server.
    os.chmod(os.path.dirname(server.socket_path), 0o755)
    os.chmod(server.socket_path, 0o777)
    hello = core.new_frame(lib.WF_HELLO, data=server._secret)
    r, w = os.pipe()
    pid = lib.wf_fork()     # os.fork() would warn about pytest's threads
    if pid == 0:
        code = 1
        try:
            os.setuid(65534)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sock.connect(server.socket_path)
            try:
                core.send_frame(sock.fileno(), hello)   # the right secret
            except OSError:
                pass
            os.write(w, b"dropped" if hung_up(sock) else b"served")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    verdict = os.read(r, 100)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert verdict == b"dropped"   # even the right secret is not heard
    assert start_noop(server) == 0


def test_killed_server_is_replaced_with_a_warning():
    p = ctx.Process(target=helpers.sleep, args=(30,))
    p.start()
    old = default_server()
    os.kill(old.pid, 9)
    os.waitpid(old.pid, 0)
    with pytest.warns(RuntimeWarning, match="died"):
        q = ctx.Process(target=helpers.exit_with, args=(4,))
        q.start()
    q.join(20)
    assert q.exitcode == 4
    assert default_server() is not old
    # The orphan's exit code is unknowable; as the stdlib says, 255.
    os.kill(p.pid, 9)
    p.join(20)
    assert p.exitcode == 255


def test_preload_failure_is_reported_and_server_still_serves():
    warmfork.set_preload(["json", "warmfork_no_such_module"])
    try:
        with pytest.warns(warmfork.PreloadWarning,
                          match="warmfork_no_such_module.*ModuleNotFound"):
            p = ctx.Process(target=helpers.exit_with, args=(0,))
            p.start()
        p.join(20)
        assert p.exitcode == 0
    finally:
        warmfork.set_preload(warmfork.DEFAULT_PRELOAD)


def test_preloaded_module_is_already_in_child():
    warmfork.set_preload(["wave"])
    try:
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=helpers.is_module_loaded, args=("wave", w))
        p.start()
        assert r.recv() is True
        p.join(20)
    finally:
        warmfork.set_preload(warmfork.DEFAULT_PRELOAD)


def test_full_fd_table_in_parent_is_a_clear_error_and_loses_nothing():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    default_server()
    opened = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        with pytest.raises(OSError) as info:
            while True:
                opened.append(os.open(os.devnull, os.O_RDONLY))
        assert info.value.errno == errno.EMFILE
        with pytest.raises(OSError) as info:
            ctx.Process(target=helpers.noop).start()
        assert info.value.errno == errno.EMFILE
    finally:
        for fd in opened:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    p = ctx.Process(target=helpers.exit_with, args=(2,))
    p.start()
    p.join(20)
    assert p.exitcode == 2


def test_full_fd_table_in_server_refuses_then_recovers(server):
    # Cap the server's fd table at what it holds now: a new connection is
    # accepted and hung up (not spun on), a start's fds cannot arrive and
    # the start is refused with a clear error, and afterwards all is well.
    from warmfork.popen_warmfork import use_server
    held = [int(fd) for fd in os.listdir("/proc/%d/fd" % server.pid)]
    soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (max(held) + 1, hard))
    # Fill the holes below the cap with idle connections.
    fillers = [connect(server) for _ in range(max(held) + 1 - len(held))]
    try:
        deadline = time.monotonic() + 10
        while (len(os.listdir("/proc/%d/fd" % server.pid)) <= max(held)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        sock = connect(server)
        assert hung_up(sock)
        sock.close()
        with pytest.raises(OSError) as info:
            with use_server(server):
                ctx.Process(target=helpers.noop).start()
        assert info.value.errno == errno.EMSGSIZE
        assert "fd table" in str(info.value)
    finally:
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
        for sock in fillers:
            sock.close()
    assert start_noop(server) == 0


SERVER_LIFETIME_SCRIPT = """
import multiprocessing as mp, os, sys, time
import warmfork, helpers
from warmfork.popen_warmfork import default_server
if __name__ == "__main__":
    ctx = mp.get_context("warmfork")
    p = ctx.Process(target=helpers.sleep, args=(float(sys.argv[1]),))
    p.start()
    srv = default_server()
    print(srv.pid, p.pid, os.path.dirname(srv.socket_path), flush=True)
    os._exit(0)    # the parent vanishes without cleaning up
"""


def test_server_outlives_parent_until_last_child_then_cleans_up(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(SERVER_LIFETIME_SCRIPT)
    env = helpers.test_env()
    # Read one line, not to EOF: the server and child hold stdout too.
    with subprocess.Popen([sys.executable, str(script), "2"], env=env,
                          stdout=subprocess.PIPE, text=True) as parent:
        server_pid, child_pid, socket_dir = parent.stdout.readline().split()
        parent.wait(60)
    server_pid, child_pid = int(server_pid), int(child_pid)
    assert alive(server_pid) and alive(child_pid)
    assert os.path.isdir(socket_dir)
    deadline = time.monotonic() + 30
    while alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child_pid)
    assert not alive(server_pid)
    assert not os.path.exists(socket_dir)


def test_server_that_dies_while_starting_is_a_clear_error_and_leaves_nothing(
        tmp_path, monkeypatch):
    import tempfile
    # A temp dir of our own: other servers on this machine come and go.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError, match="exited while starting"):
        client.ServerProcess((), pool_size=999)   # wf_server_init: EINVAL
    assert os.listdir(tmp_path) == []
