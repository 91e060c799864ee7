"""Every touch of multiprocessing.resource_tracker's private state.

warmfork's server is the resource tracker of its tree (DESIGN.md section 4).
The stdlib's ResourceTracker client stays in charge of the protocol: we
only point its ``_fd`` at our server's channel, and patch two methods on the
singleton instance (not the class), so that other start methods in the same
program keep the stdlib's behaviour.  Private attributes used, all present
in CPython 3.9-3.14: ``_resource_tracker``, ``_fd``, ``_pid``, ``_lock``,
``ensure_running``, ``_stop``.
"""
import os

from multiprocessing import get_start_method, resource_tracker

__all__ = ["is_running", "current_fd", "adopt", "hook_default_method",
           "use_in_child"]

_tracker = resource_tracker._resource_tracker
_adopted = {"server": None, "fd": None}     # our server, and its fd here


def is_running():
    """True if this process already has a resource tracker (ours or not)."""
    return _tracker._fd is not None


def current_fd():
    """The fd this process's tracker client writes to, or None."""
    return _tracker._fd


def adopt(server, replacing=None):
    """Make ``server`` this process's resource tracker, if none runs yet,
    or if the one we adopted before was ``replacing`` (it died)."""
    with _tracker._lock:
        if (_tracker._fd is not None and replacing is not None
                and _adopted["server"] is replacing):
            os.close(_tracker._fd)
            _tracker._fd = None
        if _tracker._fd is None:
            _tracker._fd = os.dup(server.tracker_fd)
            _tracker._pid = None        # not a process we may wait for
            _adopted.update(server=server, fd=_tracker._fd)
            _hook_stop()


def _hook_stop():
    """_stop() waits for the tracker process to exit; ours is the server,
    which outlives our hanging up.  For our channel, just hang up."""
    if "_stop" in vars(_tracker):
        return
    stdlib_stop = _tracker._stop

    def _stop():
        with _tracker._lock:
            if _tracker._fd is not None and _tracker._fd == _adopted["fd"]:
                os.close(_tracker._fd)
                _tracker._fd = None
                _adopted.update(server=None, fd=None)
                return
        return stdlib_stop()
    _tracker._stop = _stop


def hook_default_method(start_tracking):
    """Once "warmfork" is the default method, call ``start_tracking()``
    before the tracker would be launched: SharedMemory registers with the
    global tracker, not with a context."""
    if "ensure_running" in vars(_tracker):
        return
    stdlib_ensure_running = _tracker.ensure_running

    def ensure_running():
        if (_tracker._fd is None
                and get_start_method(allow_none=True) == "warmfork"):
            start_tracking()
        return stdlib_ensure_running()
    _tracker.ensure_running = ensure_running


def use_in_child(tracker_fd):
    """In a child: talk to the parent's tracker, whichever it is."""
    if _tracker._fd != tracker_fd:
        if _tracker._fd is not None:
            os.close(_tracker._fd)
        _tracker._fd = tracker_fd
