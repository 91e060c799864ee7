"""The warmfork server process: preload, then hand the loop to the C core.

Adapted from multiprocessing/forkserver.py (``main`` and ``_serve_one``).
What changed:
- the loop (accept, check peer, fork, reply, reap, report exit codes) runs
  in C (csrc/wf_server.c); Python runs only at start-up, in each new child,
  at shutdown, and to report a notice;
- the server never unpickles anything: requests are fixed-size frames, and
  the pickled process object travels parent -> child through a pipe;
- the server is also the resource tracker (csrc/wf_tracker.c), so there is
  no separate tracker process;
- a module that fails to preload is reported to the parent, not skipped.
"""
import gc
import json
import os
import signal
import sys
import warnings

__all__ = ["main", "get_inherited_fds"]

# In a child: the fds its parent passed (Popen.duplicate_for_child order).
_inherited_fds = None


def get_inherited_fds():
    """Return the fds the parent passed to this child, in order."""
    return _inherited_fds


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


def _preload(config):
    """Import the preload modules; return [(module, error text), ...]."""
    from multiprocessing import process, spawn

    if config.get("sys_path") is not None:
        sys.path[:] = config["sys_path"]
    failures = []
    for name in config["preload"]:
        try:
            if name == "__main__":
                _preload_main(config, process, spawn)
            else:
                __import__(name)
        except BaseException as e:   # SystemExit from a script counts too
            failures.append((name, "%s: %s" % (type(e).__name__, e)))
    return failures


def _preload_main(config, process, spawn):
    """Run the parent's __main__ as __mp_main__, as spawn.prepare would."""
    process.current_process()._inheriting = True
    try:
        if config.get("main_path"):
            spawn.import_main_path(config["main_path"])
        elif config.get("main_name"):
            spawn._fixup_main_from_name(config["main_name"])
    finally:
        del process.current_process()._inheriting


def _stdin_from_devnull():
    """Point fd 0 at /dev/null (util._close_stdin leaves an extra fd open)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(0, encoding="utf-8", closefd=False)


def main(config_fd):
    """Run a warmfork server; the parent passes its config through a pipe."""
    config = _read_config(config_fd)
    # ^C in the terminal reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from . import core, stdlib_tracker

    failures = _preload(config)
    # What nearly every child unpickles (Connection, Queue, our _DupFd):
    # import it once, here, not in every child.
    import multiprocessing.connection, multiprocessing.queues  # noqa: F401
    from . import popen_warmfork  # noqa: F401
    # Children inherit this and talk to our tracker with the stdlib client.
    stdlib_tracker.use_in_child(config["tracker_client_fd"])
    _stdin_from_devnull()
    _prepare_warm_up()
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
    secret = bytes.fromhex(config["secret"])
    core.ffi.memmove(srv.secret, secret, len(secret))
    core.check(core.lib.wf_server_init(srv))

    with open(config["ready_fd"], "wb") as ready:
        ready.write(json.dumps({"pid": os.getpid(),
                                "failures": failures}).encode())
    _serve(srv, core, config)


def _serve(srv, core, config):
    lib = core.lib
    while True:
        event = lib.wf_server_run(srv)
        if event == lib.WF_EV_IDLE:
            _warm_up()
            lib.wf_idle_wait(srv)                 # returns with a start
            _run_child(srv)                       # never returns
        elif event == lib.WF_EV_CHILD:
            _run_child(srv)                       # never returns
        elif event == lib.WF_EV_NOTICE:
            _report("warmfork server: " + core.ffi.string(srv.notice).decode(
                "utf-8", "replace"))
        elif event == lib.WF_EV_EXIT:
            break
        else:
            err = core.ffi.errno
            _report("warmfork server: event loop failed: %s"
                    % os.strerror(err))
            break
    _unlink_leftovers(srv, core)
    lib.wf_server_close(srv)
    for path in (config["socket_path"], config["socket_dir"]):
        try:
            (os.rmdir if path == config["socket_dir"] else os.unlink)(path)
        except OSError:
            pass
    sys.exit(0)



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


_warm_up_data = None


def _prepare_warm_up():
    """Pickle what a typical start sends: prep data and a process object."""
    global _warm_up_data
    import io
    from multiprocessing import reduction, spawn
    from multiprocessing.context import set_spawning_popen
    from .context import WarmforkProcess
    from .popen_warmfork import Popen
    buf = io.BytesIO()
    set_spawning_popen(Popen.__new__(Popen))    # the authkey may be pickled
    try:
        reduction.dump(spawn.get_preparation_data("warm-up"), buf)
        reduction.dump(WarmforkProcess(target=os.getpid, name="warm-up"), buf)
        _warm_up_data = buf.getvalue()
    except Exception:
        _warm_up_data = None                    # a nicety, never a failure
    finally:
        set_spawning_popen(None)


def _warm_up():
    """In an idle child, before it parks: do what a start will do first.

    Unpickling touches the objects a real start's unpickling touches, so
    their copy-on-write page faults (~7 us each here) happen now, off the
    critical path.  No user code runs, and nothing is kept.
    """
    import io
    import pickle
    if _warm_up_data is None:
        return
    try:
        f = io.BytesIO(_warm_up_data)
        pickle.load(f)
        pickle.load(f)
    except Exception:
        pass


def _run_child(srv):
    """In a freshly forked child: run the process object the parent sends."""
    global _inherited_fds
    code = 1
    try:
        from multiprocessing import spawn, util
        from . import stdlib_tracker

        fds = [srv.child_fds[i] for i in range(srv.child_nfds)]
        data_fd, tracker_fd, _inherited_fds = fds[0], fds[1], fds[2:]
        # Use the parent's resource tracker, as the stdlib's forkserver
        # children do: usually our own channel, but a stdlib tracker if the
        # parent had one running before warmfork started.
        stdlib_tracker.use_in_child(tracker_fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if _EXIT_FUNCTION_RUNS_AT_EXIT:
            # 3.13+: _bootstrap no longer calls util._exit_function (which
            # flushes queues); the stdlib's fork/forkserver children run it,
            # and the child's own atexit handlers, from atexit.
            import atexit
            atexit._clear()
            atexit.register(util._exit_function)
        # The parent keeps a dup of the data pipe's write end: its EOF tells
        # the child that the parent is gone (multiprocessing.parent_process).
        parent_sentinel = os.dup(data_fd)
        code = spawn._main(data_fd, parent_sentinel)
    finally:
        if _EXIT_FUNCTION_RUNS_AT_EXIT:
            import atexit
            atexit._run_exitfuncs()
        os._exit(code)


# As multiprocessing/popen_fork.py in 3.13 (gh-83856).
_EXIT_FUNCTION_RUNS_AT_EXIT = sys.version_info >= (3, 13)
