"""The parent's side of a warmfork server: launch it, keep one connection.

One server per parent and preload set.  The parent keeps one persistent,
authenticated connection to it (DESIGN.md section 6) instead of a new
connection per start; a lock makes it safe under threads.  This module
knows nothing of multiprocessing's process objects: callers pass the
settings (preload, pool size, warm-up sample) and the START's fds.
"""
import atexit
import errno
import json
import os
import secrets
import socket
import tempfile
import threading
import time
import warnings

from . import core

__all__ = ["ServerProcess", "ServerGone", "StartLost", "PreloadWarning",
           "server_for", "prestart", "replace_dead", "forget_all"]

# errnos that mean the server is gone rather than that a request was bad.
_GONE_ERRNOS = {errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED,
                errno.ENOTCONN, errno.ENOENT}

# How long to wait for a server that hung up to become a zombie we can
# reap (it is exiting: its last act was closing our connection).
_REAP_TIMEOUT = 2.0


class ServerGone(OSError):
    """The warmfork server died or hung up."""


class StartLost(OSError):
    """The child exited before it received its data: nothing ran."""


class PreloadWarning(RuntimeWarning):
    """The server's preload failed, or left threads running."""


def _parent_config():
    """What the server needs of the parent to run its __main__ as a spawn
    child would: where __main__ comes from, sys.path, sys.argv, cwd."""
    from multiprocessing import spawn
    data = spawn.get_preparation_data("ignore")
    return {"main_path": data.get("init_main_from_path"),
            "main_name": data.get("init_main_from_name"),
            "sys_path": data.get("sys_path"),
            "sys_argv": data.get("sys_argv"),
            "dir": data.get("dir")}


def _tracker_channel():
    """The resource tracker's channel: a pipe in packet mode, so that its
    EOF means "no holder left" and records never merge (wf_tracker.c)."""
    return os.pipe2(os.O_DIRECT | os.O_CLOEXEC)


class ServerProcess:
    """A running warmfork server and this process's connection to it.

    ``wait=False`` launches the server and returns at once, while it
    preloads; ``wait_ready()`` (called by ``start()``) then waits for it.
    """

    def __init__(self, preload=(), pool_size=0, warm_up=b"", wait=True):
        self.preload = tuple(preload)
        self.pool_size = pool_size
        self.pid = None
        self._exit_code = None
        self.socket_path = None
        self._secret = None
        self.tracker_fd = -1      # children and the parent's tracker client
        self._sock = None
        self._alive_w = -1
        self._ready_r = -1        # open until the server said it is ready
        self._ready_chunks = []
        self.environ = {}         # the environment the server inherited
        self._lock = threading.Lock()
        self._start_frame = core.new_frame(core.lib.WF_START)
        self._launch(warm_up)
        if wait:
            self.wait_ready()

    @property
    def pending(self):
        """True while the server preloads and wait_ready() has not seen
        its answer."""
        return self._ready_r >= 0

    def _launch(self, warm_up):
        from multiprocessing import spawn, util
        from . import stdlib_compat

        secret = secrets.token_bytes(core.SECRET_SIZE)
        socket_dir = tempfile.mkdtemp(prefix="warmfork-")   # mode 0700
        socket_path = os.path.join(socket_dir, "server.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tracker_r, tracker_w = _tracker_channel()
        alive_r, alive_w = os.pipe()
        config_r, config_w = os.pipe()
        ready_r, ready_w = os.pipe()
        to_close = [alive_r, config_r, ready_w, config_w, ready_r,
                    tracker_r, tracker_w]
        try:
            listener.bind(socket_path)
            listener.listen(64)
            config = dict(_parent_config(),
                          preload=list(self.preload),
                          pool_size=self.pool_size,
                          warm_up=warm_up.hex(),
                          listen_fd=listener.fileno(), alive_fd=alive_r,
                          tracker_fd=tracker_r, tracker_client_fd=tracker_w,
                          ready_fd=ready_w, secret=secret.hex(),
                          socket_path=socket_path)
            exe = spawn.get_executable()
            # What the server, and so every child, inherits; a start sends
            # the changes since (popen_warmfork._preparation_data).
            self.environ = stdlib_compat.environ_snapshot()
            args = [exe] + stdlib_compat.interpreter_flags()
            args += ["-c", "from warmfork.server import main; main(%d)"
                     % config_r]
            fds_to_pass = [listener.fileno(), alive_r, config_r, ready_w,
                           tracker_r, tracker_w]
            self.pid = util.spawnv_passfds(exe, args, fds_to_pass)
            for fd in (alive_r, config_r, ready_w, tracker_r):
                os.close(fd)
                to_close.remove(fd)
            os.write(config_w, json.dumps(config).encode())
            os.close(config_w)
            to_close.remove(config_w)
            # The server preloads now; wait_ready() reads its answer.
            self._ready_r = ready_r
            to_close.remove(ready_r)
            self.socket_path, self._secret = socket_path, secret
            self.tracker_fd, tracker_w = tracker_w, -1
            to_close.remove(self.tracker_fd)
            self._alive_w, alive_w = alive_w, -1
        except BaseException:
            if alive_w >= 0:
                os.close(alive_w)     # a server that did start now exits
            from .server import remove_socket
            remove_socket(socket_path)
            raise
        finally:
            for fd in to_close:
                os.close(fd)
            listener.close()

    def wait_ready(self):
        """Wait until the server has preloaded and connect to it (once).

        Raises RuntimeError if it died while starting, or if the parent's
        __main__, run in the server, starts a process; the server is then
        closed and its socket directory removed.  Interruptible: a Ctrl-C
        leaves the server pending, and the next call waits on.
        """
        if self._ready_r < 0:
            return
        while True:
            chunk = os.read(self._ready_r, 65536)
            if not chunk:
                break
            self._ready_chunks.append(chunk)
        os.close(self._ready_r)
        self._ready_r = -1
        ready = b"".join(self._ready_chunks)
        self._ready_chunks = []
        try:
            if not ready:
                self._reap()
                raise RuntimeError("the warmfork server (pid %s) exited "
                                   "while starting; its stderr says why"
                                   % self.pid)
            self._warn_about(json.loads(ready.decode()))
            self._connect()
        except BaseException:
            self.close()
            from .server import remove_socket
            remove_socket(self.socket_path)
            raise

    @staticmethod
    def _warn_about(ready):
        if ready.get("main_starts_processes"):
            # Every child would run __main__ again and fail the same way
            # (spawn and forkserver children do, one after the other, for
            # as long as a Pool replaces them): say it here, once.
            raise RuntimeError(
                "warmfork: the server ran the top-level code of __main__ "
                "(as spawn children do) and it starts a process; put that "
                "code under `if __name__ == '__main__':`.  In the server:"
                "\n%s" % ready["main_starts_processes"])
        for module, error in ready["failures"]:
            warnings.warn("warmfork: preloading %r failed in the server: %s"
                          % (module, error), PreloadWarning, stacklevel=5)
        if ready.get("threads"):
            warnings.warn("warmfork: the preload left threads running in "
                          "the server (%s); forking a process with threads "
                          "is unsafe" % ", ".join(ready["threads"]),
                          PreloadWarning, stacklevel=5)

    def _connect(self):
        """Open and authenticate our connection (again, after an
        interrupted request left a reply in flight on the old one)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(self.socket_path)
            hello = core.new_frame(core.lib.WF_HELLO, data=self._secret)
            core.send_frame(sock.fileno(), hello)
            reply = core.recv_reply(sock.fileno())
        except BaseException:
            sock.close()
            raise
        if reply.type != core.lib.WF_OK:
            sock.close()
            raise OSError(reply.arg, "warmfork server refused us: %s"
                          % os.strerror(reply.arg))
        self._sock = sock

    def _drop_connection(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _reap(self, timeout=_REAP_TIMEOUT):
        """Reap the server if it has exited (waiting up to ``timeout`` for
        a server that is on its way out); return its exit code, or None
        while it runs."""
        deadline = time.monotonic() + timeout
        while self._exit_code is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self._exit_code = "unknown"     # reaped by someone else
                break
            if pid:
                self._exit_code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.001)
        return self._exit_code

    def is_dead(self, timeout=0.0):
        """True if the server process has exited (or does within
        ``timeout``: a dying process closes its fds before it is a
        zombie)."""
        return self._reap(timeout) is not None

    def start(self, fds, daemon=False):
        """Ask the server to start a child holding ``fds`` (by WF_FD_*
        slot); return its pid.  Raises ServerGone if the server hung up:
        the request may then have been delivered, so a retry must not
        reuse its pipes."""
        with self._lock:
            if self._secret is None:
                raise ServerGone(errno.ENOTCONN, "warmfork server is closed")
            self.wait_ready()
            frame = self._start_frame
            frame.nfds = len(fds)
            frame.arg = core.lib.WF_START_DAEMON if daemon else 0
            try:
                if self._sock is None:
                    self._connect()
                core.send_frame(self._sock.fileno(), frame, fds)
                try:
                    reply = core.recv_reply(self._sock.fileno())
                except BaseException:
                    # Interrupted (Ctrl-C) or failed after the request went
                    # out: its reply must not be read as the next one's.
                    self._drop_connection()
                    raise
            except OSError as e:
                if e.errno in _GONE_ERRNOS:
                    self._drop_connection()
                    raise ServerGone(e.errno, "warmfork server (pid %s) is "
                                     "gone: %s" % (self.pid, e.strerror))
                raise
        if reply.type != core.lib.WF_OK:
            why = os.strerror(reply.arg)
            if reply.arg == errno.EMSGSIZE:
                why = ("the fds for the child did not all arrive (the "
                       "server's fd table is full?)")
            raise OSError(reply.arg, "warmfork server could not start a "
                          "child: %s" % why)
        return reply.arg

    def close(self):
        """Drop our connection; the server exits after its last child."""
        with self._lock:
            self._drop_connection()
            self._secret = None
            for name in ("_alive_w", "tracker_fd", "_ready_r"):
                fd = getattr(self, name)
                setattr(self, name, -1)
                if fd >= 0:
                    os.close(fd)

    def forget(self):
        """In a forked child: drop inherited copies without a word."""
        self._lock = threading.Lock()
        self.close()


# Servers of this process, by preload tuple.
_servers: "dict[tuple, ServerProcess]" = {}
_servers_lock = threading.Lock()


def server_for(preload, pool_size, warm_up, replacing=None):
    """Return the running server for this preload set, starting it if need
    be (``warm_up()`` gives its warm-up sample).

    ``replacing``: a dead server this one takes over from (as tracker too).
    """
    key = tuple(preload)
    with _servers_lock:
        server = _servers.get(key)
        if server is None:
            server = _servers[key] = ServerProcess(key, pool_size, warm_up(),
                                                   wait=False)
        if server.pending:
            # Started here or by prestart(): it becomes this process's
            # tracker once it is ready.
            try:
                server.wait_ready()
            except BaseException:
                if server._secret is None:      # it failed: forget it
                    del _servers[key]
                raise
            from . import stdlib_tracker
            stdlib_tracker.adopt(server, replacing)
        elif replacing is not None:
            # Another thread replaced the dead server first: the tracker
            # must move to the live one all the same.
            from . import stdlib_tracker
            stdlib_tracker.adopt(server, replacing)
        return server


def prestart(preload, pool_size, warm_up):
    """Launch the server for this preload set, if none runs, and return at
    once: it preloads while the caller goes on.  The first start (or
    Lock) waits for it to be ready."""
    key = tuple(preload)
    with _servers_lock:
        if key not in _servers:
            _servers[key] = ServerProcess(key, pool_size, warm_up(),
                                          wait=False)


def replace_dead(server, warm_up, warn=True):
    """Forget ``server`` after it failed, warn, and return a new one."""
    with _servers_lock:
        if _servers.get(server.preload) is server:
            del _servers[server.preload]
    code = server._reap()
    server.close()
    from .server import remove_socket
    remove_socket(server.socket_path)
    if warn:
        warnings.warn("warmfork: the server (pid %s) died (exit code %s); "
                      "starting a new one; names it tracked may leak"
                      % (server.pid, code), RuntimeWarning, stacklevel=4)
    return server_for(server.preload, server.pool_size, warm_up,
                      replacing=server)


def ensure_tracker(preload, pool_size, warm_up):
    """Make sure this process has a resource tracker, ours if none runs."""
    from . import stdlib_tracker
    if not stdlib_tracker.is_running():
        stdlib_tracker.adopt(server_for(preload, pool_size, warm_up))


def forget_all():
    """After fork(): the child must not share the parent's connections."""
    global _servers_lock
    _servers_lock = threading.Lock()
    for server in list(_servers.values()):
        server.forget()
    _servers.clear()


def _hang_up_all():
    """At exit: hang up.  The alive pipes stay open until the process is
    really gone: the server takes their EOF as the owner's death, after
    which it terminates daemonic children, and multiprocessing's own exit
    handler (which runs after this one) must find them as it left them."""
    for server in list(_servers.values()):
        with server._lock:
            server._drop_connection()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_all)
atexit.register(_hang_up_all)
