"""The "warmfork" start method: context, process class, registration.

Shaped after the stdlib's ForkServerContext/ForkServerProcess and loky's
LokyContext.  Registering puts one entry in multiprocessing's table of
concrete contexts, so multiprocessing.get_context("warmfork") and
set_start_method("warmfork") work like the stdlib's own methods, and adds
"warmfork" to multiprocessing.get_all_start_methods().
"""
import threading
from typing import Iterable, Tuple

from multiprocessing import context as _mp_context
from multiprocessing import process

__all__ = ["WarmforkContext", "WarmforkProcess", "get_context",
           "set_preload", "current_preload", "DEFAULT_PRELOAD",
           "set_pool_size", "current_pool_size", "DEFAULT_POOL_SIZE",
           "check_preload", "check_pool_size"]

# Preloading __main__ in the server means children do not re-run the
# parent's script at every start, as spawn and forkserver children do.
DEFAULT_PRELOAD = ("__main__",)
_preload = list(DEFAULT_PRELOAD)
_preload_lock = threading.Lock()

# Idle children each server keeps forked ahead of time (DESIGN.md section 6).
DEFAULT_POOL_SIZE = 2
_pool_size = [DEFAULT_POOL_SIZE]


def check_preload(module_names: Iterable[str]) -> Tuple[str, ...]:
    """Return ``module_names`` as a tuple, or raise TypeError."""
    if isinstance(module_names, str) or not all(
            isinstance(name, str) for name in module_names):
        raise TypeError("the preload list must be a list of module names")
    return tuple(module_names)


def check_pool_size(size: int) -> int:
    """Return ``size``, or raise ValueError; the limit is the C core's."""
    from .core import lib
    if not isinstance(size, int) or not 0 <= size <= lib.WF_MAX_IDLE:
        raise ValueError("pool size must be an int from 0 to %d"
                         % lib.WF_MAX_IDLE)
    return size


def set_preload(module_names: Iterable[str]) -> None:
    """Set the modules the server imports before it forks any child.

    Takes effect at the next start: a new server is started for a new set.
    """
    module_names = check_preload(module_names)
    with _preload_lock:
        _preload[:] = module_names


def set_pool_size(size: int) -> None:
    """Set how many idle pre-forked children servers started from now keep.

    0 turns the pool off: every start forks.
    """
    _pool_size[0] = check_pool_size(size)


def current_pool_size() -> int:
    """Return the pool size servers started now would get."""
    return _pool_size[0]


def current_preload() -> Tuple[str, ...]:
    """Return the preload list as a tuple."""
    with _preload_lock:
        return tuple(_preload)


class WarmforkProcess(process.BaseProcess):
    _start_method = "warmfork"

    @staticmethod
    def _Popen(process_obj):
        from .popen_warmfork import Popen
        return Popen(process_obj)


class WarmforkContext(_mp_context.BaseContext):
    _name = "warmfork"
    Process = WarmforkProcess

    def set_forkserver_preload(self, module_names: Iterable[str]) -> None:
        """Set the warmfork server's preload list (the stdlib's spelling)."""
        set_preload(module_names)

    # Named semaphores register with the resource tracker when they are
    # created.  Starting our server first makes it this process's tracker,
    # so that no stdlib tracker process is started (DESIGN.md section 4).
    def Lock(self):
        _start_tracking()
        return super().Lock()

    def RLock(self):
        _start_tracking()
        return super().RLock()

    def Semaphore(self, value=1):
        _start_tracking()
        return super().Semaphore(value)

    def BoundedSemaphore(self, value=1):
        _start_tracking()
        return super().BoundedSemaphore(value)

    def _check_available(self):
        # Called by get_context("warmfork") and set_start_method("warmfork").
        from multiprocessing import reduction
        if not reduction.HAVE_SEND_HANDLE:
            raise ValueError("warmfork start method not available")
        from . import stdlib_tracker
        stdlib_tracker.install_hooks(_start_tracking, _replace_tracker)


def _start_tracking():
    from .popen_warmfork import ensure_tracker
    ensure_tracker()


def _replace_tracker(dead_server):
    from .popen_warmfork import replace_dead
    replace_dead(dead_server, warn=False)   # the tracker warned already


def _register():
    ctx = _mp_context._concrete_contexts.get("warmfork")
    if not isinstance(ctx, WarmforkContext):
        # So that multiprocessing.get_context("warmfork") finds us.
        ctx = _mp_context._concrete_contexts["warmfork"] = WarmforkContext()
    from multiprocessing import reduction
    if reduction.HAVE_SEND_HANDLE:
        _list_in_all_start_methods()
    return ctx


def _list_in_all_start_methods():
    """Make multiprocessing.get_all_start_methods() name "warmfork", last.

    Libraries check a method's name against that list (torch's DataLoader
    does), and the stdlib's is hard-coded in DefaultContext (3.9-3.14).
    The module-level function is a bound method copied when multiprocessing
    is imported (and again by ``from multiprocessing import *``), so both it
    and the default context's attribute are replaced.  The .pth hook runs
    this right after multiprocessing loads, before anyone copies it.
    (Kept here, not in stdlib_compat, so that registration imports nothing
    more.)
    """
    import multiprocessing
    default = _mp_context._default_context
    stdlib = type(default).get_all_start_methods

    def get_all_start_methods():
        methods = stdlib(default)
        if "warmfork" not in methods:
            methods.append("warmfork")
        return methods
    get_all_start_methods.__doc__ = stdlib.__doc__
    default.get_all_start_methods = get_all_start_methods
    multiprocessing.get_all_start_methods = get_all_start_methods


_context = _register()


def get_context() -> "WarmforkContext":
    """Return the warmfork context (the same as get_context("warmfork"))."""
    return _context
