"""The warmfork server process: preload, then hand the loop to the C core.

Adapted from multiprocessing/forkserver.py (``main`` and ``_serve_one``).
What changed:
- the loop (accept, check peer, fork or hand off, reply, reap, report exit
  codes) runs in C (csrc/wf_server.c); Python runs only at start-up, in
  each new child (child.py), at shutdown, and to report a notice;
- the server never unpickles anything: requests are fixed-size frames, and
  the pickled process object travels parent -> child through a pipe;
- the server is also the resource tracker (csrc/wf_tracker.c), so there is
  no separate tracker process; like the stdlib's tracker it ignores SIGINT
  and SIGTERM, and lives until every holder of its channel is gone;
- a module that fails to preload, or threads left running by the preload,
  are reported to the parent, not passed over.
"""
import gc
import json
import os
import signal
import sys
import threading
import traceback
import warnings

__all__ = ["main", "remove_socket"]

# What nearly every child unpickles (Connection, Queue, our process class
# and DupFd, what maps big buffers): imported once, here, not in every child.
CHILD_IMPORTS = ("multiprocessing.connection", "multiprocessing.queues",
                 "warmfork.context", "warmfork.child", "warmfork.buffers")

# Back-off after a transient error in the loop (csrc/wf_server.c).
RETRY_MIN_MS = 10
RETRY_MAX_MS = 1000
# Refill the warm pool this long after a hand-off, once the start it
# served is under way (benchmarks/README.md: "Deferred refill").
REFILL_DELAY_MS = 3


def _report(message):
    """Print a warning line on the server's stderr (the parent's stderr).

    Not warnings.warn: the parent's -W flags reach us, and "-W error" must
    not turn a report into the server's death.
    """
    try:
        sys.stderr.write(warnings.formatwarning(message, UserWarning,
                                                "warmfork-server", 0))
        sys.stderr.flush()
    except Exception:
        pass


def _read_config(config_fd):
    with open(config_fd, "rb") as f:
        return json.loads(f.read().decode())


def _as_the_parent(config):
    """What the parent's top-level code can observe, as spawn.prepare sets
    it in a spawn child: sys.argv, sys.path and the working directory."""
    if config.get("sys_path") is not None:
        sys.path[:] = config["sys_path"]
    if config.get("sys_argv") is not None:
        sys.argv[:] = config["sys_argv"]
    if config.get("dir"):
        try:
            os.chdir(config["dir"])
        except OSError:
            pass                # as spawn.prepare: keep going elsewhere


def _preload(config):
    """Import the preload modules.  Return [(module, error text), ...] and,
    if __main__'s top-level code starts a process, its traceback."""
    from . import stdlib_compat

    _as_the_parent(config)
    failures = []
    starts_processes = None
    for name in config["preload"]:
        try:
            if name == "__main__":
                stdlib_compat.run_main_as(config.get("main_path"),
                                          config.get("main_name"))
            else:
                __import__(name)
        except BaseException as e:   # SystemExit from a script counts too
            failures.append((name, "%s: %s" % (type(e).__name__, e)))
            if name == "__main__" and stdlib_compat.is_start_while_importing(
                    e):
                starts_processes = "".join(traceback.format_exception(
                    type(e), e, e.__traceback__))
    for name in CHILD_IMPORTS:
        __import__(name)
    return failures, starts_processes


# fcntl.F_SETPIPE_SZ (Linux 2.6.35; the name is in fcntl from 3.10).
F_SETPIPE_SZ = 1031
# The tracker pipe's size while the preload runs: one page per record in
# packet mode, and the stdlib client writes two records (a PROBE, then the
# REGISTER) per name, so 1 MB holds 128 names.
PRELOAD_PIPE_SIZE = 1 << 20


def _tracker_fd_for_preload(tracker_client_fd):
    """The tracker channel for names the preload creates (a Lock at the top
    of __main__): a nonblocking description of the same packet-mode pipe.
    Nobody reads it before the loop runs: a preload that registers more
    than the pipe holds fails the stdlib client's probe (it then warns and
    starts a tracker of its own) instead of hanging the server.  None if
    /proc cannot reopen it."""
    import fcntl
    try:
        fd = os.open("/proc/self/fd/%d" % tracker_client_fd,
                     os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL,
                    fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError:
        os.close(fd)                # records could merge: do without
        return None
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PRELOAD_PIPE_SIZE)
    except OSError:
        pass                        # over the user's pipe limits: 16 pages
    return fd


def _other_threads():
    """Threads the preload left running: forking with them is unsafe."""
    return sorted(t.name for t in threading.enumerate()
                  if t is not threading.main_thread() and t.is_alive())


def _stdin_from_devnull():
    """Point fd 0 at /dev/null (util._close_stdin leaves an extra fd open)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(0, encoding="utf-8", closefd=False)


def main(config_fd):
    """Run a warmfork server; the parent passes its config through a pipe."""
    config = _read_config(config_fd)
    # The fds the parent passed crossed an exec, so they are inheritable:
    # a preloaded module that runs a program (os.system at import time)
    # must not hand it our listener, tracker ends, alive or ready pipe.
    # wf_server_init sets the same flags, but only after the preload.
    for name in ("listen_fd", "alive_fd", "tracker_fd", "tracker_client_fd",
                 "ready_fd"):
        os.set_inheritable(config[name], False)
    # As the stdlib's resource tracker: ^C in the terminal and a group
    # SIGTERM reach every process; the server stays until its holders are
    # gone, then unlinks what they leaked.  (The C core resets both in
    # each child it forks.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    from . import core, stdlib_tracker
    from multiprocessing import process

    # While __main__ runs here, the server is not the main process: the
    # `current_process().name == "MainProcess"` guard skips as in a spawn
    # child, and a Lock at its top level registers with our own tracker
    # (no second server, no stdlib tracker process).
    process.current_process().name = "WarmforkServer"
    preload_fd = _tracker_fd_for_preload(config["tracker_client_fd"])
    if preload_fd is not None:
        stdlib_tracker.use_in_child(preload_fd)
    failures, starts_processes = _preload(config)
    threads = _other_threads()
    # Children inherit this and talk to our tracker with the stdlib client.
    stdlib_tracker.use_in_child(config["tracker_client_fd"])
    _stdin_from_devnull()
    # Keep preloaded objects out of the GC's reach, so that children do not
    # un-share their pages by scanning them (DESIGN.md section 5).
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()

    srv = core.ffi.new("struct wf_server *")
    srv.listen_fd = config["listen_fd"]
    srv.alive_fd = config["alive_fd"]
    srv.tracker_fd = config["tracker_fd"]
    srv.tracker_client_fd = config["tracker_client_fd"]
    srv.pool_target = config["pool_size"]
    srv.refill_delay_ms = REFILL_DELAY_MS
    srv.retry_min_ms = RETRY_MIN_MS
    srv.retry_max_ms = RETRY_MAX_MS
    secret = bytes.fromhex(config["secret"])
    core.ffi.memmove(srv.secret, secret, len(secret))
    core.check(core.lib.wf_server_init(srv))

    try:
        with open(config["ready_fd"], "wb") as ready:
            ready.write(json.dumps({
                "pid": os.getpid(), "failures": failures, "threads": threads,
                "main_starts_processes": starts_processes}).encode())
    except BrokenPipeError:
        pass    # the parent is gone or gave up on us: serve until its EOF
    _serve(srv, core, config)


def _serve(srv, core, config):
    from . import child

    lib = core.lib
    warm_up_sample = bytes.fromhex(config.get("warm_up", ""))
    if os.environ.get("WARMFORK_PREFAULT", "1") != "0":
        child.prefault = child.Prefault(_prefault_path(config["socket_path"]))
    while True:
        event = lib.wf_server_run(srv)
        if event == lib.WF_EV_IDLE:
            child.warm_up(warm_up_sample)
            child.prefault.apply()
            lib.wf_idle_wait(srv)                 # returns with a start
            child.run(srv, lib)                   # never returns
        elif event == lib.WF_EV_CHILD:
            child.run(srv, lib)                   # never returns
        elif event == lib.WF_EV_NOTICE:
            _report("warmfork server: " + core.ffi.string(srv.notice).decode(
                "utf-8", "replace"))
        elif event == lib.WF_EV_EXIT:
            from . import stdlib_compat
            # Semaphores the preload made (a Lock at the top of __main__)
            # belong to the server and its children, all gone now: unlinked
            # with the rest, not reported as leaks.
            _unlink_leftovers(srv, core, stdlib_compat.drop_own_semaphores())
            lib.wf_server_close(srv)
            remove_socket(config["socket_path"])
            sys.exit(0)
        else:
            # The loop is broken, not just short of something: holders may
            # still be alive, so no name is unlinked (a leak, never an
            # early unlink).
            _report("warmfork server: event loop failed: %s; tracked names "
                    "are left in place" % os.strerror(core.ffi.errno))
            lib.wf_server_close(srv)
            sys.exit(1)


def _prefault_path(socket_path):
    """Where children keep the learned page list: the private directory."""
    return os.path.join(os.path.dirname(socket_path), "prefault.pages")


def remove_socket(socket_path):
    """Remove the server's socket and its private directory, if there."""
    for remove, path in ((os.unlink, socket_path),
                         (os.unlink, _prefault_path(socket_path)),
                         (os.rmdir, os.path.dirname(socket_path))):
        try:
            remove(path)
        except OSError:
            pass


def _unlink_leftovers(srv, core, own=()):
    """Unlink names nobody unregistered, and say so (as the stdlib does),
    but for the server's ``own`` names."""
    lib, ffi = core.lib, core.ffi
    kinds = {lib.WF_KIND_SEMAPHORE: "semaphore",
             lib.WF_KIND_SHARED_MEMORY: "shared_memory",
             lib.WF_KIND_DUMMY: "dummy"}
    count = lib.wf_tracker_unlink_all(srv)
    leaked = {}
    for i in range(count):
        entry = srv.tracked[i]
        name = ffi.string(entry.name).decode("ascii", "replace")
        if name in own and not entry.unlink_errno:
            continue
        leaked.setdefault(kinds[entry.kind], []).append(
            (name, entry.unlink_errno))
    for kind, entries in leaked.items():
        if kind == "dummy":
            continue    # the stdlib tests' kind, expected to leak silently
        _report("resource_tracker: There appear to be %d leaked %s objects "
                "to clean up at shutdown: %r"
                % (len(entries), kind, {name for name, _ in entries}))
        for name, err in entries:
            if err:
                _report("resource_tracker: %r: %s" % (name, os.strerror(err)))
