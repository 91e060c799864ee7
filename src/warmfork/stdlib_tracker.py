"""Every touch of multiprocessing.resource_tracker's private state.

warmfork's server is the resource tracker of its tree (DESIGN.md section 4).
The stdlib's ResourceTracker client stays in charge of the protocol: we
only point its ``_fd`` at our server's channel, and patch two methods on the
singleton instance (not the class), so that other start methods in the same
program keep the stdlib's behaviour.  Private attributes used, all present
in CPython 3.9-3.14: ``_resource_tracker``, ``_fd``, ``_pid``, ``_lock``,
``ensure_running``, ``_check_alive``, ``_stop``.
"""
import os
import threading
import warnings

from multiprocessing import get_start_method, resource_tracker

__all__ = ["is_running", "current_fd", "adopt", "install_hooks",
           "use_in_child"]

_tracker = resource_tracker._resource_tracker
_adopted = {"server": None, "fd": None}     # our server, and its fd here
_replacing = threading.Lock()


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
        if _tracker._fd is None:
            _tracker._fd = os.dup(server.tracker_fd)
        elif (replacing is not None and _adopted["server"] is replacing
              and _tracker._fd == _adopted["fd"]):
            # The same fd number, now on the new channel: the stdlib's
            # _send writes to _fd outside its lock, so a thread that read
            # the number a moment ago must find a live channel there, not
            # None or a closed (or reused) fd.  A tracker the stdlib
            # launched meanwhile has another fd and is left alone: closing
            # it would make it unlink names of live processes.
            os.dup2(server.tracker_fd, _tracker._fd, inheritable=False)
        else:
            return
        # The tracker is the server: tests and tools signal it by this pid,
        # as they do the stdlib's tracker (our _stop never waits).
        _tracker._pid = server.pid
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


def install_hooks(start_tracking, replace_server):
    """Hook the tracker's ensure_running, which every register goes
    through, for two things the stdlib's would get wrong for us:

    - once "warmfork" is the default method, call ``start_tracking()``
      before the stdlib would launch its tracker process (SharedMemory
      registers with the global tracker, not with a context);
    - if the server we adopted as tracker died, say so in the stdlib's
      words and call ``replace_server(dead_server)``, as the stdlib
      relaunches a tracker process that died (bpo-31310).
    """
    if "ensure_running" in vars(_tracker):
        return
    stdlib_ensure_running = _tracker.ensure_running

    def ensure_running():
        with _replacing:            # one thread replaces; others wait
            dead = _adopted_if_dead()
            if dead is not None:
                warnings.warn("resource_tracker: process died unexpectedly, "
                              "relaunching.  Some resources might leak.")
                replace_server(dead)
                return None
        if (_tracker._fd is None
                and get_start_method(allow_none=True) == "warmfork"):
            start_tracking()
        return stdlib_ensure_running()
    _tracker.ensure_running = ensure_running


def _adopted_if_dead():
    """The server we adopted, if it no longer reads its channel (the probe
    gets EPIPE); else None.  Its fd stays in place for adopt() to point at
    the replacement."""
    with _tracker._lock:
        server = _adopted["server"]
        if (server is None or _tracker._fd != _adopted["fd"]
                or _tracker._check_alive()):
            return None
        return server


def use_in_child(tracker_fd):
    """In a child: talk to the parent's tracker, whichever it is."""
    if _tracker._fd != tracker_fd:
        if _tracker._fd is not None:
            os.close(_tracker._fd)
        _tracker._fd = tracker_fd
