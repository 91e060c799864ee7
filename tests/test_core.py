"""The C core on its own: frames, fd passing, errors, fork semantics."""
import errno
import json
import os
import random
import socket
import struct
import threading

import pytest

from warmfork import core
from warmfork.core import ffi, lib

from conftest import open_fds


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def make_pipes(n):
    fds = []
    for _ in range(n):
        fds.extend(os.pipe())
    return fds[:n], fds[n:]


def same_file(fd1, fd2):
    s1, s2 = os.fstat(fd1), os.fstat(fd2)
    return (s1.st_dev, s1.st_ino) == (s2.st_dev, s2.st_ino)


def assert_rejected_closing_fds(sock, err, maxfds=lib.WF_MAX_FDS):
    """recv_frame fails with ``err`` and no received fd stays open."""
    before = open_fds()
    with pytest.raises(OSError) as info:
        core.recv_frame(sock.fileno(), maxfds=maxfds)
    assert info.value.errno == err
    assert open_fds() == before


@pytest.mark.parametrize("nfds", [0, 1, 250])
def test_frame_with_fds_roundtrip(pair, nfds, no_fd_leak):
    a, b = pair
    sent, spare = make_pipes(nfds)
    frame = core.new_frame(lib.WF_START, arg=12345, data=b"x" * 32,
                           nfds=nfds)
    core.send_frame(a.fileno(), frame, sent)
    got, fds = core.recv_frame(b.fileno())
    try:
        assert got.type == lib.WF_START and got.arg == 12345
        assert bytes(ffi.buffer(got.data)) == b"x" * 32
        assert len(fds) == nfds
        for mine, theirs in zip(sent, fds):
            assert mine != theirs and same_file(mine, theirs)
            # MSG_CMSG_CLOEXEC: received fds must not leak into exec'd code.
            import fcntl
            assert fcntl.fcntl(theirs, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        for fd in sent + spare + fds:
            os.close(fd)


def test_too_many_fds_for_receiver_is_error_and_closes_them(pair, no_fd_leak):
    a, b = pair
    sent, spare = make_pipes(3)
    core.send_frame(a.fileno(), core.new_frame(lib.WF_START, nfds=3), sent)
    assert_rejected_closing_fds(b, errno.EMSGSIZE, maxfds=2)
    for fd in sent + spare:
        os.close(fd)


def test_truncated_control_data_is_error_and_closes_them(pair, no_fd_leak):
    # A raw sender attaches more fds than the core's control buffer holds:
    # the kernel truncates (MSG_CTRUNC), which must be an error, not a loss.
    a, b = pair
    fd = os.open("/dev/null", os.O_RDONLY)
    frame = bytes(ffi.buffer(core.new_frame(lib.WF_START, nfds=253)))
    a.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                         struct.pack("253i", *([fd] * 253)))])
    assert_rejected_closing_fds(b, errno.EMSGSIZE)
    os.close(fd)


@pytest.mark.parametrize("payload", [b"short", b"\0" * 100])
def test_wrong_size_frame_is_bad_message(pair, payload, no_fd_leak):
    a, b = pair
    r, w = os.pipe()
    a.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                           struct.pack("i", r))])
    assert_rejected_closing_fds(b, errno.EBADMSG)
    os.close(r)
    os.close(w)


def test_wrong_magic_and_fd_count_mismatch_are_bad_messages(pair):
    a, b = pair
    frame = core.new_frame(lib.WF_START)
    frame.magic = 0x12345678
    core.send_frame(a.fileno(), frame)
    with pytest.raises(OSError) as info:
        core.recv_frame(b.fileno())
    assert info.value.errno == errno.EBADMSG
    r, w = os.pipe()
    core.send_frame(a.fileno(), core.new_frame(lib.WF_START, nfds=2), [r])
    with pytest.raises(OSError) as info:
        core.recv_frame(b.fileno())
    assert info.value.errno == errno.EBADMSG
    os.close(r)
    os.close(w)


def test_closed_peer(pair):
    a, b = pair
    a.close()
    assert core.recv_frame(b.fileno()) == (None, [])
    with pytest.raises(OSError) as info:
        core.send_frame(b.fileno(), core.new_frame(lib.WF_OK))
    assert info.value.errno == errno.EPIPE


def test_request_to_peer_that_hangs_up_is_connreset(pair):
    a, b = pair

    def hang_up():
        core.recv_frame(b.fileno())
        b.close()
    t = threading.Thread(target=hang_up)
    t.start()
    with pytest.raises(OSError) as info:
        core.request(a.fileno(), core.new_frame(lib.WF_START))
    t.join()
    assert info.value.errno == errno.ECONNRESET


def test_more_fds_than_limit_refused_in_python(pair):
    with pytest.raises(ValueError):
        core.send_frame(pair[0].fileno(), core.new_frame(lib.WF_START),
                        [0] * (lib.WF_MAX_FDS + 1))


def test_bad_fd_is_oserror_with_errno():
    with pytest.raises(OSError) as info:
        core.send_frame(987654, core.new_frame(lib.WF_OK))
    assert info.value.errno == errno.EBADF


def _fork_and_report(fork, probe):
    """Fork with ``fork``; return what ``probe()`` returned in the child
    (as JSON: lists for tuples)."""
    r, w = os.pipe()
    pid = fork()
    if pid == 0:
        try:
            os.write(w, json.dumps(probe()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with open(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return json.loads(out)


def test_wf_fork_runs_at_fork_hooks_like_os_fork():
    calls = []
    os.register_at_fork(before=lambda: calls.append("before"),
                        after_in_parent=lambda: calls.append("parent"),
                        after_in_child=lambda: calls.append("child"))
    del calls[:]
    out = _fork_and_report(lib.wf_fork, lambda: list(calls))
    assert out == ["before", "child"]
    assert calls == ["before", "parent"]


def test_wf_fork_child_reseeds_random_and_resets_threading():
    lock = threading.Lock()
    lock.acquire()
    try:
        state = random.getstate()
        out = _fork_and_report(
            lib.wf_fork,
            lambda: (random.getstate() != state,
                     threading.current_thread() is threading.main_thread(),
                     threading.active_count()))
    finally:
        lock.release()
    assert out == [True, True, 1]


def test_wf_fork_child_can_run_threads_and_import():
    def probe():
        result = []
        t = threading.Thread(target=lambda: result.append(
            __import__("json").dumps([1])))
        t.start()
        t.join()
        return result
    assert _fork_and_report(lib.wf_fork, probe) == ["[1]"]
