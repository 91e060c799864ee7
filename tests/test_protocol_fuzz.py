"""The server's socket protocol against random clients (hypothesis).

One real server for the module.  Each example opens a connection and plays
a random conversation on it: optionally a HELLO (right or wrong secret),
then frames with any magic, type, nfds field and data, raw records of any
length, up to 260 attached fds (more than 253 the kernel refuses us), half
or full shutdown(), and reads of the replies; then it hangs up, at any of
those points.  Frames may be valid: an authenticated START forks a real
child.

After each example, the server must be as it was:
- alive;
- every fd that went out with a message closed again, wherever it went
  (server, idle child, started child): a pipe's write end rides along with
  each message, and its read end must reach EOF;
- its fd count back to the baseline (no fd kept from a dropped client, a
  rejected frame, or a child);
- a fresh client that proves the secret can start a child through the
  public API on that connection, and the child exits 0.
Every reply read on the way must be a well-formed frame: 56 bytes,
WF_MAGIC, WF_OK or WF_ERROR, no fds.
"""
import array
import errno
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from warmfork import client, core
from warmfork.core import lib
from warmfork.popen_warmfork import use_server

import helpers

ctx = mp.get_context("warmfork")

FRAME = struct.Struct("<IIqII32s")      # struct wf_frame, as in warmfork.h
assert FRAME.size == core.ffi.sizeof("struct wf_frame")
SCM_MAX_FD = 253                        # Linux refuses more per message
SETTLE = 5             # seconds for the server to settle, at most


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def fd_listing(pid):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            pass
    return out


def alive(pid):
    """True while our child ``pid`` has not exited (reaps it if it has)."""
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def settle_fds(pid, baseline):
    """Wait until the server holds ``baseline`` fds; return what it holds.

    Dropping a client, reaping a child and refilling the warm pool happen
    after our last byte, in the server's own time.
    """
    deadline = time.monotonic() + SETTLE
    while True:
        n = fd_count(pid)
        if n == baseline or time.monotonic() > deadline:
            return n
        time.sleep(0.005)


class FreshClient:
    """A new authenticated connection to ``srv``, in the place of its own:
    popen_warmfork starts through start(fds); whatever else it reads of
    the server (tracker_fd, environ, ...) is the server's."""

    def __init__(self, srv):
        self.srv = srv
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Kernel timeouts, not settimeout(): the C core uses the fd and
            # expects it blocking.  A server that never replies fails the
            # test with EAGAIN instead of hanging it.
            timeout = struct.pack("ll", SETTLE, 0)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 timeout)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                 timeout)
            self.sock.connect(srv.socket_path)
            hello = core.new_frame(lib.WF_HELLO, data=srv._secret)
            reply = core.request(self.sock.fileno(), hello)
            assert reply.type == lib.WF_OK and reply.arg == srv.pid
        except BaseException:
            self.sock.close()
            raise

    def start(self, fds, daemon=False):
        frame = core.new_frame(lib.WF_START, nfds=len(fds),
                               arg=lib.WF_START_DAEMON if daemon else 0)
        reply = core.request(self.sock.fileno(), frame, fds)
        assert reply.type == lib.WF_OK, os.strerror(reply.arg)
        return reply.arg

    def close(self):
        self.sock.close()

    def __getattr__(self, name):
        return getattr(self.srv, name)


def fresh_client_starts_a_child(srv):
    fresh = FreshClient(srv)
    try:
        with use_server(fresh):
            p = ctx.Process(target=helpers.exit_with, args=(0,))
            p.start()
        p.join(SETTLE)
        return p.exitcode
    finally:
        fresh.close()


class Servers:
    """The module's server; replaced after a failed example, so that the
    next example (hypothesis shrinking the failure) starts clean."""

    def __init__(self):
        self.start()

    def start(self):
        srv = self.current = client.ServerProcess((), pool_size=2)
        # Baseline once a start has come and gone and the pool is full
        # again: the same count for 0.3 s.
        assert fresh_client_starts_a_child(srv) == 0
        deadline = time.monotonic() + SETTLE
        srv.baseline, since = fd_count(srv.pid), time.monotonic()
        while time.monotonic() - since < 0.3 and time.monotonic() < deadline:
            time.sleep(0.01)
            n = fd_count(srv.pid)
            if n != srv.baseline:
                srv.baseline, since = n, time.monotonic()

    def stop(self):
        srv = self.current
        srv.close()             # it exits once its children are gone
        deadline = time.monotonic() + SETTLE
        while alive(srv.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if alive(srv.pid):
            # A server in a bad state may never see its last child go.
            os.kill(srv.pid, signal.SIGKILL)
            os.waitpid(srv.pid, 0)
            shutil.rmtree(os.path.dirname(srv.socket_path),
                          ignore_errors=True)

    def replace(self):
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def servers():
    box = Servers()
    yield box
    box.stop()


# --- what a conversation is made of -------------------------------------

# Biased towards what the server accepts, so that the paths behind a valid
# magic, type and fd count (an authenticated START forks) are reached too.
FRAME_TYPES = st.one_of(
    st.sampled_from([lib.WF_HELLO, lib.WF_START, lib.WF_START, lib.WF_OK,
                     lib.WF_ERROR, 99]),
    st.integers(0, 2**32 - 1))
# Which of the attached fds is the probe pipe's write end (modulo their
# number): any slot, the data slot of a START included.
PROBE_AT = st.integers(0, 259)
NATTACH = st.one_of(st.integers(0, 4), st.integers(0, 4),
                    st.integers(0, 260),
                    st.sampled_from([lib.WF_MAX_FDS, lib.WF_MAX_FDS + 1,
                                     SCM_MAX_FD, SCM_MAX_FD + 1]))

# A frame laid out as struct wf_frame, every field chosen.  "secret" data
# is resolved against the live server; "match" nfds = fds attached.
frame_step = st.tuples(
    st.just("frame"),
    st.one_of(st.just(lib.WF_MAGIC), st.just(lib.WF_MAGIC),
              st.integers(0, 2**32 - 1)),
    FRAME_TYPES,
    st.integers(-2**63, 2**63 - 1),
    st.one_of(st.just("match"), st.just("match"), st.integers(0, 2**32 - 1),
              st.sampled_from(["plus1", "minus1"])),
    st.sampled_from(["secret", "flipped", "zeros", "random"]),
    NATTACH,
    PROBE_AT,
)
# A START as a client sends it, with 0 to 5 fds (fewer than 2: EINVAL),
# then a wait for its reply (or the server's hang-up), as a client waits.
start_step = st.tuples(
    st.just("start"), st.just(lib.WF_MAGIC), st.just(lib.WF_START),
    st.just(0), st.just("match"), st.just("zeros"), st.integers(0, 5),
    PROBE_AT)
# Any bytes: short, exactly a frame's size, or long (MSG_TRUNC).
raw_step = st.tuples(
    st.just("raw"),
    st.one_of(st.binary(max_size=FRAME.size + 8),
              st.integers(FRAME.size + 1, 200000).map(lambda n: b"\xa5" * n)),
    NATTACH,
    PROBE_AT,
)
shutdown_step = st.tuples(
    st.just("shutdown"),
    st.sampled_from([socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR]))
recv_step = st.tuples(st.just("recv"))

any_step = st.one_of(frame_step, start_step, raw_step, shutdown_step,
                     recv_step)
conversations = st.tuples(
    st.sampled_from(["none", "right", "right", "wrong"]),  # HELLO first
    # Half begin as a real client does, with STARTs, so that children are
    # forked and handed off mid-conversation; then anything.
    st.one_of(
        st.lists(any_step, max_size=6),
        st.tuples(st.lists(start_step, min_size=1, max_size=3),
                  st.lists(any_step, max_size=4)).map(lambda t: t[0] + t[1])),
    # Hang up at once (records and their fds may still be queued), or
    # shut down our side and read every reply up to the server's EOF.
    st.sampled_from(["close", "drain", "drain"]),
)


# --- playing one -----------------------------------------------------------

def build_frame(step, secret):
    _, magic, ftype, arg, nfds_field, data_kind, nattach, _ = step
    if nfds_field == "match":
        nfds_field = nattach
    elif nfds_field == "plus1":
        nfds_field = nattach + 1
    elif nfds_field == "minus1":
        nfds_field = max(nattach - 1, 0) if nattach else 2**32 - 1
    data = {"secret": secret,
            "flipped": bytes([secret[0] ^ 1]) + secret[1:],
            "zeros": bytes(32),
            "random": os.urandom(32)}[data_kind]
    return FRAME.pack(magic, ftype, arg, nfds_field, 0, data)


def check_replies(sock, server_pid, wait=None):
    """Read the replies waiting; each must be a well-formed reply frame.

    wait="one": wait for at least one reply or the server's hang-up;
    wait="eof": read every reply up to the server's hang-up.
    """
    while True:
        if not select.select([sock], [], [], SETTLE if wait else 0)[0]:
            assert not wait, "no reply from the server"
            return
        if wait == "one":
            wait = None
        try:
            data, anc, flags, _ = sock.recvmsg(
                4096, socket.CMSG_SPACE(4 * SCM_MAX_FD))
        except (ConnectionResetError, BrokenPipeError):
            return
        if not data and not anc:
            event("reply: hung up")
            return                              # the server hung up
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for fd in array.array("i", payload[:len(payload) // 4 * 4]):
                    os.close(fd)
        assert not anc, "the server sent fds in a reply"
        assert len(data) == FRAME.size, data
        magic, ftype, arg, nfds, _, _ = FRAME.unpack(data)
        assert magic == lib.WF_MAGIC
        assert ftype in (lib.WF_OK, lib.WF_ERROR)
        assert nfds == 0
        if ftype == lib.WF_ERROR:
            assert arg in errno.errorcode, arg
            event("reply: error %s" % errno.errorcode[arg])
        elif arg == server_pid:
            event("reply: ok to HELLO")
        else:
            event("reply: ok to START, a child forked")


def send(sock, payload, nattach, probe_at, devnull, probes):
    """Send one record with nattach fds: copies of /dev/null, and the
    write end of a probe pipe in slot probe_at % nattach."""
    fds = []
    if nattach:
        r, w = os.pipe()
        probes.append(r)
        fds = [devnull] * nattach
        fds[probe_at % nattach] = w
    try:
        if fds:
            sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      array.array("i", fds))])
        else:
            sock.send(payload)
    except OSError as e:
        # Ours to expect: more than SCM_MAX_FD fds (EINVAL), a record over
        # the socket buffer (EMSGSIZE), a peer that already hung up or a
        # socket we shut down ourselves (EPIPE, ECONNRESET).
        assert e.errno in (errno.EINVAL, errno.EMSGSIZE, errno.EPIPE,
                           errno.ECONNRESET, errno.ENOTCONN), e
        if e.errno == errno.EINVAL:
            assert nattach > SCM_MAX_FD, e
        event("send: %s" % errno.errorcode[e.errno])
    finally:
        if fds:
            os.close(w)


def play(srv, hello, steps, ending, devnull, probes):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # A server that stops reading fails the example instead of hanging it.
    sock.settimeout(SETTLE)
    sock.connect(srv.socket_path)
    try:
        if hello != "none":
            secret = srv._secret if hello == "right" else bytes(32)
            send(sock, FRAME.pack(lib.WF_MAGIC, lib.WF_HELLO, 0, 0, 0,
                                  secret), 0, 0, devnull, probes)
        for step in steps:
            if step[0] in ("frame", "start"):
                send(sock, build_frame(step, srv._secret), step[6], step[7],
                     devnull, probes)
                if step[0] == "start":
                    check_replies(sock, srv.pid, wait="one")
            elif step[0] == "raw":
                send(sock, step[1], step[2], step[3], devnull, probes)
            elif step[0] == "shutdown":
                sock.shutdown(step[1])
            else:
                check_replies(sock, srv.pid)
        if ending == "drain":
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError as e:
                assert e.errno == errno.ENOTCONN, e   # it hung up first
            check_replies(sock, srv.pid, wait="eof")
    finally:
        sock.close()


def probe_closed(r):
    """True once every copy of the probe pipe's write end is closed."""
    deadline = time.monotonic() + SETTLE
    while select.select([r], [], [], max(deadline - time.monotonic(), 0))[0]:
        if not os.read(r, 4096):     # a status pipe gets an exit code first
            return True
    return False


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(conversation=conversations)
def test_random_conversations_leave_the_server_whole(servers, conversation):
    hello, steps, ending = conversation
    event("hello: %s" % hello)
    server = servers.current
    devnull = os.open(os.devnull, os.O_RDONLY)
    probes = []
    try:
        play(server, hello, steps, ending, devnull, probes)
        for i, r in enumerate(probes):
            assert probe_closed(r), "fds of message %d still open" % i
        assert alive(server.pid), "the server died"
        held = settle_fds(server.pid, server.baseline)
        assert held == server.baseline, (held, fd_listing(server.pid))
        assert fresh_client_starts_a_child(server) == 0
    except BaseException:
        servers.replace()
        raise
    finally:
        os.close(devnull)
        for r in probes:
            os.close(r)


# --- what the fuzzing found ----------------------------------------------

def _children_of(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


def test_idle_child_with_unreadable_data_fd_fails_as_a_forked_one_does():
    # Found while writing this module: with a pipe's write end as its data
    # fd (read end still open), an idle child polled for POLLIN forever,
    # where a forked child reads, gets EBADF and exits 1 at once; the pool
    # promises the same semantics (fixed in df66442).  Retried until the
    # start is really handed off (its pid is an idle child's): a child
    # still warming up is passed over for a fork.
    srv = client.ServerProcess((), pool_size=1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    fresh = FreshClient(srv)
    pid, ran, status_r, opened = None, False, -1, []
    try:
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            idle = _children_of(srv.pid)
            r, w = os.pipe()
            status_r, status_w = os.pipe()
            opened += [r, w, status_r]
            fds = [devnull] * lib.WF_FD_INHERITED
            fds[lib.WF_FD_STATUS] = status_w
            fds[lib.WF_FD_DATA] = w         # a write end: never readable
            try:
                pid = fresh.start(fds)
            finally:
                os.close(status_w)
            ran = bool(select.select([status_r], [], [], 3)[0])
            if pid in idle:
                break
            assert ran, "forked child %d never ran" % pid
            time.sleep(0.05)
        else:
            pytest.fail("no start was handed to an idle child")
        assert ran, "idle child %d never ran" % pid
        assert os.read(status_r, 8) == struct.pack("q", 1)
    finally:
        if pid and not ran:
            os.kill(pid, signal.SIGKILL)    # it would wait forever
        for fd in opened + [devnull]:
            os.close(fd)
        fresh.close()
        srv.close()


def test_empty_tracker_write_does_not_close_the_channel():
    # Found while fuzzing c836cf1, where the channel was a SOCK_SEQPACKET
    # socket: an empty record read as EOF, and the server closed the
    # channel under every live holder (DESIGN.md 6b: no bytes may fake the
    # holders' end).  The packet-mode pipe of 00cff75 ended that; this
    # keeps it so.
    srv = client.ServerProcess((), pool_size=0)
    fd = os.dup(srv.tracker_fd)
    try:
        os.write(fd, b"")
        # One start: the server has polled the tracker channel since.
        assert fresh_client_starts_a_child(srv) == 0
        os.write(fd, b"REGISTER:/wf-fuzz-empty-write:dummy\n")
        os.write(fd, b"UNREGISTER:/wf-fuzz-empty-write:dummy\n")
    finally:
        os.close(fd)
        srv.close()
