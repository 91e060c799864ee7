"""The Python face of the C core: one choke point from errno to OSError."""
import errno
import os

from ._core import ffi, lib

__all__ = ["ffi", "lib", "check", "new_frame", "send_frame", "recv_frame",
           "recv_reply", "request", "MAX_FDS", "SECRET_SIZE"]

MAX_FDS = lib.WF_MAX_FDS
SECRET_SIZE = lib.WF_SECRET_SIZE


def check(rc):
    """Raise OSError from the C core's errno when ``rc`` is -1."""
    if rc == -1:
        err = ffi.errno
        raise OSError(err, os.strerror(err))
    return rc


def new_frame(frame_type, arg=0, data=b"", nfds=0):
    """Return a ``struct wf_frame *`` of the given type."""
    if len(data) > SECRET_SIZE:
        raise ValueError("frame data is at most %d bytes" % SECRET_SIZE)
    frame = ffi.new("struct wf_frame *")
    frame.magic = lib.WF_MAGIC
    frame.type = frame_type
    frame.arg = arg
    frame.nfds = nfds
    if data:
        ffi.memmove(frame.data, data, len(data))
    return frame


def _fd_array(fds):
    if len(fds) > MAX_FDS:
        raise ValueError("at most %d fds per frame, got %d"
                         % (MAX_FDS, len(fds)))
    return ffi.new("int[]", list(fds)) if fds else ffi.NULL


def _retry_eintr(call, *args):
    """Call the C core until it is not interrupted.  Looping here, in
    Python, lets signal handlers run between tries: Ctrl-C raises
    KeyboardInterrupt out of a start that waits on a stalled server."""
    while True:
        rc = call(*args)
        if rc != -1 or ffi.errno != errno.EINTR:
            return check(rc)


def send_frame(sock_fd, frame, fds=()):
    """Send ``frame`` with ``fds`` attached (SCM_RIGHTS)."""
    _retry_eintr(lib.wf_send_frame, sock_fd, frame, _fd_array(fds), len(fds))


def recv_frame(sock_fd, maxfds=MAX_FDS):
    """Return ``(frame, fds)``, or ``(None, [])`` at end of file."""
    frame = ffi.new("struct wf_frame *")
    fds = ffi.new("int[]", max(maxfds, 1))
    nfds = ffi.new("int *")
    if _retry_eintr(lib.wf_recv_frame, sock_fd, frame, fds, maxfds,
                    nfds) == 0:
        return None, []
    return frame, [fds[i] for i in range(nfds[0])]


def recv_reply(sock_fd):
    """Return the server's reply frame; ECONNRESET if it hung up first."""
    frame, _ = recv_frame(sock_fd, maxfds=0)
    if frame is None:
        raise OSError(errno.ECONNRESET, "the warmfork server hung up "
                      "without a reply")
    return frame


def request(sock_fd, frame, fds=()):
    """Send ``frame`` with ``fds`` and return the server's reply frame."""
    send_frame(sock_fd, frame, fds)
    return recv_reply(sock_fd)
