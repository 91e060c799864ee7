"""The targets of Server.spawn_with() and Executor tasks: set the child up
(per-spawn options), then run the function (and, for a task, send back
its outcome).  Not child.py, which takes a child from its fds to the
target; this runs as the target.

Every warmfork.Server preloads this module, so a child pays no import for
it.  Keep it small and light: it must not import warmfork.api, .executor
or concurrent.futures.

A *plan* is what the parent resolved from a SpawnOptions (options.py):
``(clear_env, env, cwd, stdio, name)``, with ``env`` a tuple of
``(key, value or None)``, ``stdio`` a triple for fds 0, 1, 2, each None
(keep the server's), DEVNULL, or an fd this child received.
"""
import os
import sys
import traceback
from typing import Any, Callable, Dict, Optional, Tuple

__all__ = ["Plan", "DEVNULL", "detach_fd", "apply", "call", "run_task"]

Plan = Tuple[bool, Optional[Tuple[Tuple[str, Optional[str]], ...]],
             Optional[str], Tuple[Any, Any, Any], Optional[str]]
DEVNULL = "devnull"      # in a plan's stdio: open os.devnull here
COMM_MAX = 15            # TASK_COMM_LEN - 1: what /proc/PID/comm keeps


def detach_fd(dup: Any) -> int:
    """Unpickling hook: the fd behind a multiprocessing DupFd, here."""
    fd: int = dup.detach()
    return fd


def _set_comm(name: str) -> None:
    """Set the name ps -o comm, top and pgrep show (prctl PR_SET_NAME)."""
    raw = name.encode("utf-8", "replace")[:COMM_MAX]
    # Do not cut a UTF-8 sequence in half.
    raw = raw.decode("utf-8", "ignore").encode("utf-8")
    with open("/proc/self/comm", "wb") as f:
        f.write(raw)


def _redirect(fd: int, how: Any) -> None:
    if how == DEVNULL:
        src = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        try:
            os.dup2(src, fd)
        finally:
            os.close(src)
    else:
        os.dup2(how, fd)
        os.close(how)


def apply(plan: Plan) -> None:
    """Apply a plan: environment, then cwd, then stdio, then the name."""
    clear_env, env, cwd, stdio, name = plan
    if clear_env:
        os.environ.clear()
    for key, value in env or ():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if cwd is not None:
        os.chdir(cwd)
    for fd, how in enumerate(stdio):
        if how is None:
            continue
        stream = (sys.stdin, sys.stdout, sys.stderr)[fd]
        if fd and stream is not None:
            stream.flush()          # what the server's stream still holds
        _redirect(fd, how)
        if fd == 0:
            # multiprocessing pointed sys.stdin at a devnull fd of its own.
            sys.stdin = open(0, encoding="utf-8", closefd=False)
    if name is not None:
        _set_comm(name)


def call(plan: Optional[Plan], func: Callable[..., Any],
         args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """The target of Server.spawn_with(): apply the plan, run func."""
    if plan is not None:
        apply(plan)
    return func(*args, **kwargs)


def run_task(conn: Any, plan: Optional[Plan], func: Callable[..., Any],
             args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    """The target of an Executor task: send back (True, result) or
    (False, exception, traceback text) over ``conn``, then exit 0."""
    try:
        if plan is not None:
            apply(plan)
        message: Tuple[Any, ...] = (True, func(*args, **kwargs))
    except BaseException as e:     # as ProcessPoolExecutor: SystemExit too
        message = (False, e, _format(e))
    try:
        conn.send(message)
    except BaseException as e:     # the result or the exception won't pickle
        what = ("result" if message[0] else
                "exception (%s)" % type(message[1]).__name__)
        error = TypeError("warmfork.Executor: the task's %s could not be "
                          "pickled: %s: %s" % (what, type(e).__name__, e))
        conn.send((False, error, _format(e)))
    finally:
        conn.close()


def _format(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))
