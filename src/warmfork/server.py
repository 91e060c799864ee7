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
import warnings

__all__ = ["main", "remove_socket"]

# What nearly every child unpickles (Connection, Queue, our process class
# and DupFd): imported once, here, not in every child.
CHILD_IMPORTS = ("multiprocessing.connection", "multiprocessing.queues",
                 "warmfork.context", "warmfork.child")

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
    """Import the preload modules; return [(module, error text), ...]."""
    from . import stdlib_compat

    _as_the_parent(config)
    failures = []
    for name in config["preload"]:
        try:
            if name == "__main__":
                stdlib_compat.run_main_as(config.get("main_path"),
                                          config.get("main_name"))
            else:
                __import__(name)
        except BaseException as e:   # SystemExit from a script counts too
            failures.append((name, "%s: %s" % (type(e).__name__, e)))
    for name in CHILD_IMPORTS:
        __import__(name)
    return failures


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

    failures = _preload(config)
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

    with open(config["ready_fd"], "wb") as ready:
        ready.write(json.dumps({"pid": os.getpid(), "failures": failures,
                                "threads": threads}).encode())
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
            _unlink_leftovers(srv, core)
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


def _unlink_leftovers(srv, core):
    """Unlink names nobody unregistered, and say so (as the stdlib does)."""
    lib, ffi = core.lib, core.ffi
    kinds = {lib.WF_KIND_SEMAPHORE: "semaphore",
             lib.WF_KIND_SHARED_MEMORY: "shared_memory",
             lib.WF_KIND_DUMMY: "dummy"}
    count = lib.wf_tracker_unlink_all(srv)
    leaked = {}
    for i in range(count):
        entry = srv.tracked[i]
        name = ffi.string(entry.name).decode("ascii", "replace")
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
