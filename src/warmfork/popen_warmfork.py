"""Start one child through the warmfork server.

Adapted from multiprocessing/popen_forkserver.py.  What changed: one
request on the persistent connection (a frame plus fds) instead of a new
connection per start, and the sentinel is a pipe of our own whose write
end the server holds and fills with the exit code.
"""
import io
import os
import struct
import threading

from multiprocessing import popen_fork, spawn, util
from multiprocessing.context import reduction, set_spawning_popen

from . import client

__all__ = ["Popen", "use_server"]

_EXIT_CODE = struct.Struct("q")    # what the server writes: int64 exit code
_override = threading.local()


class use_server:
    """Within this block, this thread starts children on ``server``."""

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        self.saved = getattr(_override, "server", None)
        _override.server = self.server

    def __exit__(self, *exc):
        _override.server = self.saved


class _DupFd:
    """An fd the child finds among the ones it inherited."""

    def __init__(self, ind):
        self.ind = ind

    def detach(self):
        from .server import get_inherited_fds
        return get_inherited_fds()[self.ind]


def _read_exit_code(fd):
    data = b""
    while len(data) < _EXIT_CODE.size:
        chunk = os.read(fd, _EXIT_CODE.size - len(data))
        if not chunk:
            raise EOFError("unexpected EOF")
        data += chunk
    return _EXIT_CODE.unpack(data)[0]


class Popen(popen_fork.Popen):
    method = "warmfork"
    DupFd = _DupFd

    def __init__(self, process_obj):
        self._fds = []
        # Process.start() in any thread polls every child (process._cleanup),
        # so two threads may read one sentinel.  The stdlib's forkserver Popen
        # lets the loser read EOF and overwrite the real code with 255; we
        # let one thread read it.
        self._poll_lock = threading.Lock()
        super().__init__(process_obj)

    def duplicate_for_child(self, fd):
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj):
        from .context import current_preload

        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)

        server = getattr(_override, "server", None)
        embedded = server is not None        # started by a warmfork.Server
        data_r, data_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            if not embedded:
                server = client.server_for(current_preload())
            try:
                self.pid = server.start(self._fds_to_send(server, data_r,
                                                          status_w))
            except client.ServerGone:
                if embedded:
                    raise                # its owner decides, no silent swap
                server = client.replace_dead(server)
                self.pid = server.start(self._fds_to_send(server, data_r,
                                                          status_w))
        except BaseException:
            os.close(data_w)
            os.close(status_r)
            raise
        finally:
            os.close(data_r)
            os.close(status_w)
        self.sentinel = status_r
        # Keep a duplicate of the data pipe's write end: the child watches
        # it to tell whether its parent is alive (parent_process()).
        parent_w = os.dup(data_w)
        self.finalizer = util.Finalize(self, util.close_fds,
                                       (parent_w, self.sentinel))
        with open(data_w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())

    def _fds_to_send(self, server, data_r, status_w):
        """[data pipe, status pipe, resource tracker, the object's fds]."""
        from . import stdlib_tracker
        tracker_fd = stdlib_tracker.current_fd()
        if tracker_fd is None:
            tracker_fd = server.tracker_fd
        return [data_r, status_w, tracker_fd] + self._fds

    def poll(self, flag=os.WNOHANG):
        if self.returncode is None:
            from multiprocessing.connection import wait
            timeout = 0 if flag == os.WNOHANG else None
            if not wait([self.sentinel], timeout):
                return None
            with self._poll_lock:
                if self.returncode is None:
                    try:
                        self.returncode = _read_exit_code(self.sentinel)
                    except (OSError, EOFError):
                        # The server died before it could report: as the
                        # stdlib's forkserver does, call it 255.
                        self.returncode = 255
        return self.returncode
