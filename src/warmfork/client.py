"""The parent's side of a warmfork server: launch it, keep one connection.

One server per parent and preload set.  The parent keeps one persistent,
authenticated connection to it (DESIGN.md section 6) instead of a new
connection per start; a lock makes it safe under threads.
"""
import atexit
import errno
import json
import os
import secrets
import socket
import tempfile
import threading
import warnings

from . import core

__all__ = ["ServerProcess", "ServerGone", "PreloadWarning",
           "server_for", "forget_all"]

# errnos that mean the server is gone rather than that a request was bad.
_GONE_ERRNOS = {errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED,
                errno.ENOTCONN, errno.ENOENT}


class ServerGone(OSError):
    """The warmfork server died or hung up."""


class PreloadWarning(RuntimeWarning):
    """A module in the preload list failed to import in the server."""


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _main_module_config():
    """Where the parent's __main__ comes from, as spawn.prepare would use."""
    from multiprocessing import spawn
    data = spawn.get_preparation_data("ignore")
    return {"main_path": data.get("init_main_from_path"),
            "main_name": data.get("init_main_from_name"),
            "sys_path": data.get("sys_path")}


class ServerProcess:
    """A running warmfork server and this process's connection to it."""

    def __init__(self, preload=(), pool_size=None):
        from .context import current_pool_size
        self.preload = tuple(preload)
        self.pool_size = (current_pool_size() if pool_size is None
                          else pool_size)
        self.pid = None
        self.socket_path = None
        self._secret = None
        self.tracker_fd = -1      # children and the parent's tracker client
        self._sock = None
        self._alive_w = -1
        self._lock = threading.Lock()
        self._start_frame = core.new_frame(core.lib.WF_START)
        self._launch()

    def _launch(self):
        from multiprocessing import spawn, util

        secret = secrets.token_bytes(core.SECRET_SIZE)
        socket_dir = tempfile.mkdtemp(prefix="warmfork-")   # mode 0700
        socket_path = os.path.join(socket_dir, "server.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tracker_server, tracker_client = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_SEQPACKET)
        alive_r, alive_w = os.pipe()
        config_r, config_w = os.pipe()
        ready_r, ready_w = os.pipe()
        to_close = [alive_r, config_r, ready_w, config_w, ready_r]
        try:
            listener.bind(socket_path)
            listener.listen(64)
            config = dict(_main_module_config(),
                          preload=list(self.preload),
                          pool_size=self.pool_size,
                          listen_fd=listener.fileno(), alive_fd=alive_r,
                          tracker_fd=tracker_server.fileno(),
                          tracker_client_fd=tracker_client.fileno(),
                          ready_fd=ready_w, secret=secret.hex(),
                          socket_path=socket_path, socket_dir=socket_dir)
            exe = spawn.get_executable()
            args = [exe] + util._args_from_interpreter_flags()
            args += ["-c", "from warmfork.server import main; main(%d)"
                     % config_r]
            fds_to_pass = [listener.fileno(), alive_r, config_r, ready_w,
                           tracker_server.fileno(), tracker_client.fileno()]
            self.pid = util.spawnv_passfds(exe, args, fds_to_pass)
            for fd in (alive_r, config_r, ready_w):
                os.close(fd)
                to_close.remove(fd)
            os.write(config_w, json.dumps(config).encode())
            os.close(config_w)
            to_close.remove(config_w)
            ready = _read_all(ready_r)
            if not ready:
                self._reap_if_dead()
                raise RuntimeError("the warmfork server (pid %s) exited "
                                   "while starting; its stderr says why"
                                   % self.pid)
            ready = json.loads(ready.decode())
            for module, error in ready["failures"]:
                warnings.warn("warmfork: preloading %r failed in the server: "
                              "%s" % (module, error), PreloadWarning,
                              stacklevel=4)
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._sock.connect(socket_path)
            hello = core.new_frame(core.lib.WF_HELLO, data=secret)
            reply = core.request(self._sock.fileno(), hello)
            if reply.type != core.lib.WF_OK:
                raise OSError(reply.arg, "warmfork server refused us: %s"
                              % os.strerror(reply.arg))
            self.tracker_fd = os.dup(tracker_client.fileno())
            self.socket_path, self._secret = socket_path, secret
            self._alive_w, alive_w = alive_w, -1
        except BaseException:
            if alive_w >= 0:
                os.close(alive_w)     # a server that did start now exits
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            for remove, path in ((os.unlink, socket_path),
                                 (os.rmdir, socket_dir)):
                try:
                    remove(path)
                except OSError:
                    pass
            raise
        finally:
            for fd in to_close:
                os.close(fd)
            listener.close()
            tracker_server.close()
            tracker_client.close()

    def _reap_if_dead(self):
        """Return the server's exit code if it has exited, else None."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return "unknown"
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def start(self, fds):
        """Ask the server to fork a child holding ``fds``; return its pid.

        ``fds[0]`` must be the child's end of the data pipe and ``fds[1]``
        the status pipe's write end (the server reports the exit code there).
        """
        with self._lock:
            if self._sock is None:
                raise ServerGone(errno.ENOTCONN, "warmfork server is closed")
            self._start_frame.nfds = len(fds)
            try:
                reply = core.request(self._sock.fileno(), self._start_frame,
                                     fds)
            except OSError as e:
                if e.errno in _GONE_ERRNOS:
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
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            for name in ("_alive_w", "tracker_fd"):
                fd = getattr(self, name)
                setattr(self, name, -1)
                if fd >= 0:
                    os.close(fd)

    def forget(self):
        """In a forked child: drop inherited copies without a word."""
        self._lock = threading.Lock()
        self.close()


# Servers of this process, by preload tuple.
_servers = {}
_servers_lock = threading.Lock()


def server_for(preload, replacing=None):
    """Return the running server for this preload set, starting it if need be.

    ``replacing``: a dead server this one takes over from (as tracker too).
    """
    key = tuple(preload)
    with _servers_lock:
        server = _servers.get(key)
        if server is None:
            server = _servers[key] = ServerProcess(key)
            from . import stdlib_tracker
            stdlib_tracker.adopt(server, replacing)
        return server


def replace_dead(server):
    """Forget ``server`` after it failed, warn, and return a new one."""
    with _servers_lock:
        if _servers.get(server.preload) is server:
            del _servers[server.preload]
    code = server._reap_if_dead()
    server.close()
    warnings.warn("warmfork: the server (pid %s) died (exit code %s); "
                  "starting a new one; names it tracked may leak"
                  % (server.pid, code), RuntimeWarning, stacklevel=3)
    return server_for(server.preload, replacing=server)


def ensure_tracker(preload):
    """Make sure this process has a resource tracker, ours if none runs."""
    from . import stdlib_tracker
    if not stdlib_tracker.is_running():
        stdlib_tracker.adopt(server_for(preload))


def forget_all():
    """After fork(): the child must not share the parent's connections."""
    global _servers_lock
    _servers_lock = threading.Lock()
    for server in list(_servers.values()):
        server.forget()
    _servers.clear()


def _close_all():
    """At exit: hang up; each server exits after its last child."""
    for server in list(_servers.values()):
        server.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_all)
atexit.register(_close_all)
