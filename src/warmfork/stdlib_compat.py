"""Every use of multiprocessing's private internals, but the tracker's.

warmfork is a start method living outside CPython, so it needs a few things
the stdlib's own start methods reach privately.  They are all here, each
with the versions it is known in (3.9 to 3.14), so that a change in CPython
breaks one module; the resource tracker's are in stdlib_tracker.py.
"""
import atexit
import os
import sys

from multiprocessing import process, reduction, spawn, util

__all__ = ["EXIT_FUNCTION_RUNS_AT_EXIT", "interpreter_flags", "run_main_as",
           "is_start_while_importing", "drop_own_semaphores", "ENVIRON_KEY",
           "environ_snapshot", "environ_changes", "apply_environ_changes",
           "child_main", "run_exit_function_at_exit", "run_child_atexit",
           "forking_dispatch_table"]

# 3.13+ (gh-83856): Process._bootstrap no longer calls util._exit_function
# (which flushes queues); popen_fork's children run it, and the child's own
# atexit handlers, from atexit.  Ours do the same.
EXIT_FUNCTION_RUNS_AT_EXIT = sys.version_info >= (3, 13)


def interpreter_flags():
    """The parent's -W, -X, -O... flags, for the server's command line
    (util._args_from_interpreter_flags, 3.9+)."""
    return util._args_from_interpreter_flags()


def run_main_as(main_path, main_name):
    """Run the parent's __main__ as __mp_main__, as spawn.prepare does.

    ``_inheriting`` (3.9+) tells freeze_support()-style guards that this is
    not a program of its own; spawn._fixup_main_from_name (3.9+) has no
    public spelling.
    """
    current = process.current_process()
    current._inheriting = True
    try:
        if main_path:
            spawn.import_main_path(main_path)
        elif main_name:
            spawn._fixup_main_from_name(main_name)
    finally:
        del current._inheriting


def is_start_while_importing(exc):
    """True if ``exc`` is the RuntimeError of spawn._check_not_importing_main
    (3.9+): code run as __mp_main__ tried to start a process."""
    if not isinstance(exc, RuntimeError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if (code.co_name == "_check_not_importing_main"
                and code.co_filename == spawn.__file__):
            return True
        tb = tb.tb_next
    return False


def drop_own_semaphores():
    """In the server at exit: cancel the finalizers of the semaphores this
    process made (SemLock._cleanup with the name, 3.9+, in util's private
    registry) and return their names.  The server's tracker unlinks them
    with everything else; the finalizer would only fail to unlink again."""
    from multiprocessing import synchronize
    names = set()
    for finalizer in list(util._finalizer_registry.values()):
        callback = getattr(finalizer, "_callback", None)
        args = getattr(finalizer, "_args", ())
        if callback is synchronize.SemLock._cleanup and args:
            names.add(args[0])
            finalizer.cancel()
    return names


# The key of the environment's changes in the preparation data (spawn's
# prepare() ignores keys it does not know, 3.9-3.14).
ENVIRON_KEY = "warmfork_environ"


def environ_snapshot():
    """The environment a process started now inherits, as os.environ's
    private bytes dict (``_data`` on POSIX, 3.9+): compared in C, without
    decoding, at every start."""
    return dict(os.environ._data)


def environ_changes(snapshot):
    """What turns the environment ``snapshot`` into this process's current
    one: ({name: value} to set, [name] to unset), bytes; None if nothing."""
    data = os.environ._data
    if data == snapshot:
        return None
    changed = {k: v for k, v in data.items() if snapshot.get(k) != v}
    removed = [k for k in snapshot if k not in data]
    return changed, removed


def apply_environ_changes(changes):
    """In a child: apply environ_changes() of its parent (os.environb also
    calls putenv/unsetenv)."""
    changed, removed = changes
    for name in removed:
        os.environb.pop(name, None)
    os.environb.update(changed)


class ParentGone(Exception):
    """The data pipe closed before a byte arrived: the start was abandoned
    (the parent died, or gave the start to another server)."""


def child_main(data_fd, parent_sentinel, before_bootstrap=None):
    """spawn._main (3.9-3.14), with four differences: a data pipe that is
    empty at EOF raises ParentGone instead of a confusing EOFError, the
    parent's changes to the environment are applied before prepare(),
    the process object may be preceded by a table of its big buffers,
    which then come as memfds (buffers.py), and
    ``before_bootstrap(process_obj)`` is called once it is unpickled."""
    with os.fdopen(data_fd, "rb", closefd=True) as from_parent:
        if not from_parent.peek(1):
            raise ParentGone()
        current = process.current_process()
        current._inheriting = True
        try:
            preparation_data = reduction.pickle.load(from_parent)
            changes = preparation_data.pop(ENVIRON_KEY, None)
            if changes:
                apply_environ_changes(changes)
            spawn.prepare(preparation_data)
            process_obj = reduction.pickle.load(from_parent)
            if type(process_obj) is tuple:      # a table of big buffers
                from . import buffers
                process_obj = reduction.pickle.load(
                    from_parent, buffers=buffers.receive(process_obj))
        finally:
            del current._inheriting
    if before_bootstrap is not None:
        before_bootstrap(process_obj)
    return process_obj._bootstrap(parent_sentinel)


def forking_dispatch_table():
    """The reducers a ForkingPickler installs (its __init__, 3.9-3.14):
    copyreg's table and those given to ForkingPickler.register.  For a
    pickler that needs a buffer_callback, which ForkingPickler's __init__
    does not pass on before 3.14."""
    cls = reduction.ForkingPickler
    try:
        table = cls._copyreg_dispatch_table.copy()
        table.update(cls._extra_reducers)
    except AttributeError:              # renamed: ask an instance
        import io
        table = cls(io.BytesIO()).dispatch_table
    return table


def run_exit_function_at_exit():
    """3.13+: in a new child, run util._exit_function from atexit, and
    forget the server's handlers (atexit._clear, 3.9+)."""
    atexit._clear()
    atexit.register(util._exit_function)


def run_child_atexit():
    """Run the child's atexit handlers before os._exit (3.9+)."""
    atexit._run_exitfuncs()
