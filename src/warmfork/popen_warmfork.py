"""Start one child through the warmfork server.

Adapted from multiprocessing/popen_forkserver.py.  What changed: one
request on the persistent connection (a frame plus fds) instead of a new
connection per start, and the sentinel is a pipe of our own whose write
end the server holds and fills with the exit code.
"""
import errno
import io
import os
import struct
import threading

from multiprocessing import popen_fork, spawn, util
from multiprocessing import reduction
from multiprocessing.context import set_spawning_popen

from . import buffers, child, client, context, stdlib_compat

__all__ = ["Popen", "use_server", "warm_up_sample", "default_server",
           "replace_dead", "ensure_tracker", "prestart"]

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


def _dump(obj, popen):
    buf = io.BytesIO()
    set_spawning_popen(popen)           # the authkey may be pickled
    try:
        reduction.dump(obj, buf)
    finally:
        set_spawning_popen(None)
    return buf


def _dump_process(process_obj, popen):
    """Pickle the process object; its big buffers go as memfds, with their
    table before it (buffers.py).  Returns (bytes, what must stay open
    until the START is sent)."""
    set_spawning_popen(popen)           # the authkey may be pickled
    try:
        return buffers.dump(process_obj, popen)
    finally:
        set_spawning_popen(None)


def _dump_preparation(data, server, popen):
    """Pickle spawn's preparation ``data``, with the changes the parent
    made to its environment since ``server`` started: a spawn child
    inherits the parent's environment of the moment, ours the server's."""
    changes = stdlib_compat.environ_changes(server.environ)
    if changes:
        data = dict(data)
        data[stdlib_compat.ENVIRON_KEY] = changes
    return _dump(data, popen)


def warm_up_sample():
    """A typical start's pickle, for idle children to unpickle while they
    wait (child.warm_up): a process object of ours, no user code."""
    try:
        sample = context.WarmforkProcess(target=os.getpid, name="warm-up")
        popen = Popen.__new__(Popen)
        buf = _dump(spawn.get_preparation_data(sample._name), popen)
        buf.write(_dump(sample, popen).getbuffer())
        return buf.getvalue()
    except Exception:
        return b""                      # a nicety, never a failure


def default_server():
    """The server of the "warmfork" context for the current settings."""
    return client.server_for(context.current_preload(),
                             context.current_pool_size(), warm_up_sample)


def replace_dead(server, warn=True):
    """Replace a dead server of the "warmfork" context."""
    return client.replace_dead(server, warm_up_sample, warn)


def prestart():
    """Start the "warmfork" context's server now and return at once.

    The server preloads (``__main__`` by default, so the script's imports)
    while the caller goes on; the first start waits for what is left.  It
    uses the preload list and pool size set so far.  Does nothing while
    this process is only running ``__main__`` for another one (in the
    server, or in a child that re-runs it): a call at the top level of a
    script does not start a server from the server.
    """
    from multiprocessing import process
    if getattr(process.current_process(), "_inheriting", False):
        return
    client.prestart(context.current_preload(), context.current_pool_size(),
                    warm_up_sample)


def ensure_tracker():
    """Make our server this process's resource tracker if none runs."""
    client.ensure_tracker(context.current_preload(),
                          context.current_pool_size(), warm_up_sample)


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
    DupFd = child.DupFd

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
        # Refuses a start while __main__ is being imported, before a server
        # is looked for; then the process object, before anything starts.
        data = spawn.get_preparation_data(process_obj._name)
        # held: memfds of big buffers, open until the START has gone.
        obj, held = _dump_process(process_obj, self)
        own_server = getattr(_override, "server", None)
        for attempt in range(3):
            server = own_server or default_server()
            try:
                buf = _dump_preparation(data, server, self)
                buf.write(obj)
                data_w = self._start_on(server, process_obj)
                self._send_data(data_w, buf)
                break
            except client.ServerGone:
                # The request may have reached the dead server, and its
                # child may hold the pipes of that try: they are closed
                # now, so it reads EOF and exits without running anything.
                # A retry has pipes of its own (exactly once).  A
                # warmfork.Server's owner decides: no swap behind its back.
                if own_server is not None or attempt == 2:
                    raise
                replace_dead(server)
            except client.StartLost as e:
                # Nothing read the data, so nothing ran: safe to retry.
                if own_server is not None:
                    if own_server.is_dead(timeout=1.0):
                        raise client.ServerGone(
                            e.errno, "warmfork server (pid %s) is gone: %s"
                            % (own_server.pid, e.strerror)) from None
                    raise
                if attempt == 2:
                    raise
        del held
        # Keep a duplicate of the data pipe's write end: the child watches
        # it to tell whether its parent is alive (parent_process()).
        parent_w = os.dup(data_w)
        os.close(data_w)
        self.finalizer = util.Finalize(self, util.close_fds,
                                       (parent_w, self.sentinel))

    def _send_data(self, data_w, buf):
        """Write the pickle to the child.  EPIPE means the child exited
        before it read a byte (or never got the pipe: its server died
        between reply and hand-off): close this try's pipes and raise
        StartLost, which a retry may follow."""
        try:
            view = memoryview(buf.getvalue())
            while view:
                view = view[os.write(data_w, view):]
        except BrokenPipeError:
            pid = self.pid
            os.close(data_w)
            os.close(self.sentinel)
            self.pid = self.sentinel = None
            raise client.StartLost(errno.EPIPE, "warmfork child %s exited "
                                   "before it received its data; nothing "
                                   "ran" % pid) from None

    def _start_on(self, server, process_obj):
        """One try: fresh pipes, one START.  Sets pid and sentinel and
        returns the data pipe's write end; on failure closes every pipe."""
        from . import stdlib_tracker
        from .core import lib

        data_r, data_w = os.pipe()
        status_r, status_w = os.pipe()
        tracker_fd = stdlib_tracker.current_fd()
        fds = [-1] * lib.WF_FD_INHERITED
        fds[lib.WF_FD_STATUS] = status_w
        fds[lib.WF_FD_DATA] = data_r
        fds[lib.WF_FD_TRACKER] = (server.tracker_fd if tracker_fd is None
                                  else tracker_fd)
        try:
            self.pid = server.start(fds + self._fds,
                                    daemon=bool(process_obj.daemon))
        except BaseException:
            os.close(data_w)
            os.close(status_r)
            raise
        finally:
            os.close(data_r)
            os.close(status_w)
        self.sentinel = status_r
        return data_w

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
