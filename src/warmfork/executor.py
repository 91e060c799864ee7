"""warmfork.Executor: a concurrent.futures.Executor, a fresh child per task.

Each task runs in a new child of a warmfork server, handed over from its
warm pool, and the child exits after that one task: nothing a task leaves
behind (module state, threads, leaked memory or fds) reaches another task.
That is ProcessPoolExecutor(max_tasks_per_child=1) without a worker loop,
call queue or result queue: per task, one start and one pipe.

One manager thread per Executor starts the children (at most
``max_workers`` alive), and waits with multiprocessing.connection.wait on
the wake-up pipe, each task's result pipe and each child's sentinel.  The
child sends ``(True, result)`` or ``(False, exception, traceback text)``
(_target.run_task); a child that exits without sending fails its future
with ChildDied; a task past its ``task_timeout`` is SIGKILLed and its
future fails with TaskTimeout.  A task's slot is free when its child has
exited, not when its result arrived.
"""
from __future__ import annotations

import atexit
import collections
import concurrent.futures
import os
import signal
import threading
import time
import weakref
from multiprocessing.connection import Connection, Pipe, wait
from typing import (Any, Callable, Deque, Dict, Iterable, List, Optional,
                    Set, Tuple, TypeVar)

from . import _target
from .api import Handle, Server
from .context import DEFAULT_PRELOAD
from .options import SpawnOptions, resolved

__all__ = ["Executor", "ChildDied", "TaskTimeout"]

T = TypeVar("T")


class ChildDied(RuntimeError):
    """The task's child exited without returning a result."""

    def __init__(self, pid: Optional[int], exitcode: Optional[int]) -> None:
        self.pid = pid
        self.exitcode = exitcode
        how = "exit code %s" % exitcode
        if exitcode is not None and exitcode < 0:
            try:
                how += " (%s)" % signal.Signals(-exitcode).name
            except ValueError:
                pass
        super().__init__("the child (pid %s) running the task exited with %s "
                         "before it returned a result" % (pid, how))

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.pid, self.exitcode)


class TaskTimeout(concurrent.futures.TimeoutError):
    """The task ran longer than the Executor's task_timeout; it was killed."""


class _RemoteTraceback(Exception):
    """The child's traceback, as the __cause__ of the task's exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return '\n"""\n%s"""' % self.tb


class _Item:
    __slots__ = ("future", "fn", "args", "kwargs")

    def __init__(self, future: concurrent.futures.Future[Any],
                 fn: Callable[..., Any], args: Tuple[Any, ...],
                 kwargs: Dict[str, Any]) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs


class _Task:
    """A started task: its child, its result pipe (until read), deadline."""
    __slots__ = ("future", "handle", "pid", "conn", "deadline")

    def __init__(self, future: concurrent.futures.Future[Any], handle: Handle,
                 conn: Connection, deadline: Optional[float]) -> None:
        self.future = future
        self.handle = handle
        self.pid = handle.pid
        self.conn: Optional[Connection] = conn
        self.deadline = deadline


class _Manager:
    """The state of one Executor, and its manager thread.

    Holds no reference to the Executor, so that an Executor dropped
    without shutdown() can be collected (its finalizer shuts this down).
    """

    def __init__(self, server: Server, owns_server: bool, max_workers: int,
                 options: Optional[SpawnOptions],
                 task_timeout: Optional[float]) -> None:
        self.server = server
        self.owns_server = owns_server
        self.max_workers = max_workers
        self.options = options
        self.task_timeout = task_timeout
        self.lock = threading.Lock()
        self.pending: Deque[_Item] = collections.deque()
        self.shutdown = False
        self.broken: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # --- any thread, under self.lock -------------------------------------
    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass                    # full: the thread will wake anyway

    def ensure_thread(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(
                target=self.run, name="warmfork-executor", daemon=True)
            _live.add(self)
            self.thread.start()

    def request_shutdown(self, cancel_futures: bool = False) -> None:
        """Take no more tasks; the thread finishes what is queued."""
        with self.lock:
            self.shutdown = True
            if cancel_futures:
                while self.pending:
                    self.pending.popleft().future.cancel()
            if self.thread is not None and self.wake_w >= 0:
                self.wake()
            no_thread = self.thread is None
        if no_thread:
            self.finish()

    def dropped(self) -> None:
        """The Executor was collected without shutdown(): as
        shutdown(wait=False).  No lock: the collection may run inside any
        thread, this one's included, while it holds self.lock."""
        if self.shutdown:
            return
        self.shutdown = True
        if self.thread is None:
            self.finish()           # nobody can hold the lock: no thread
        else:
            self.wake()             # the pipe stays open until it exits

    def finish(self) -> None:
        """Close the wake-up pipe, and the server if it is ours (once)."""
        with self.lock:
            fds, self.wake_r, self.wake_w = (self.wake_r, self.wake_w), -1, -1
        if fds[0] < 0:
            return
        for fd in fds:
            os.close(fd)
        if self.owns_server:
            self.server.close()
        _live.discard(self)

    # --- the manager thread ----------------------------------------------
    def run(self) -> None:
        running: Dict[int, _Task] = {}          # sentinel -> task
        try:
            while True:
                self._start_some(running)
                with self.lock:
                    if self.shutdown and not self.pending and not running:
                        break
                self._wait(running)
        except BaseException as e:              # a bug here: fail, not hang
            with self.lock:
                self.broken = e
                self.shutdown = True
                items = list(self.pending)
                self.pending.clear()
            error = RuntimeError("warmfork.Executor's manager thread failed")
            error.__cause__ = e
            for task in running.values():
                task.handle.kill()
                _fail(task.future, error)
            for item in items:
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(error)
            raise
        finally:
            self.finish()

    def _start_some(self, running: Dict[int, _Task]) -> None:
        while len(running) < self.max_workers:
            with self.lock:
                if not self.pending:
                    return
                item = self.pending.popleft()
            if not item.future.set_running_or_notify_cancel():
                continue                        # cancelled while queued
            try:
                task = self._spawn(item)
            except Exception as e:              # unpicklable, server gone...
                item.future.set_exception(e)
                continue
            running[task.handle.sentinel] = task

    def _spawn(self, item: _Item) -> _Task:
        reader, writer = Pipe(duplex=False)
        try:
            with resolved(self.options) as plan:
                handle = self.server._start(
                    _target.run_task,
                    (writer, plan, item.fn, item.args, item.kwargs), {},
                    None if self.options is None else self.options.name)
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()                      # the child has its copy
        deadline = None
        if self.task_timeout is not None:
            deadline = time.monotonic() + self.task_timeout
        return _Task(item.future, handle, reader, deadline)

    def _wait(self, running: Dict[int, _Task]) -> None:
        results: Dict[int, _Task] = {}
        for task in running.values():
            if task.conn is not None:
                results[task.conn.fileno()] = task
        deadlines = [t.deadline for t in running.values()
                     if t.deadline is not None]
        timeout = None
        if deadlines:
            timeout = max(0.0, min(deadlines) - time.monotonic())
        ready: Set[int] = set(wait([self.wake_r, *results, *running],
                                   timeout))  # type: ignore[arg-type]
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        # Results first: a child that sent one and exited is a success.
        for fd in ready & results.keys():
            self._receive(results[fd])
        for fd in ready & running.keys():
            self._exited(running.pop(fd))
        now = time.monotonic()
        for task in running.values():
            if task.deadline is not None and now >= task.deadline:
                task.deadline = None
                task.handle.kill()
                _fail(task.future, TaskTimeout(
                    "the task ran longer than %ss; its child (pid %s) was "
                    "killed" % (self.task_timeout, task.pid)))

    def _receive(self, task: _Task) -> None:
        conn, task.conn = task.conn, None
        assert conn is not None
        try:
            message: Tuple[Any, ...] = conn.recv()
        except (EOFError, OSError):
            return                  # no result: the exit code will say why
        except Exception as e:      # the result did not unpickle here
            message = (False, e, None)
        finally:
            conn.close()
        if task.future.done():
            return                  # it timed out meanwhile
        if message[0]:
            task.future.set_result(message[1])
        else:
            error = message[1]
            if message[2]:
                error.__cause__ = _RemoteTraceback(message[2])
            task.future.set_exception(error)

    def _exited(self, task: _Task) -> None:
        code = task.handle.wait()       # the sentinel is readable
        if task.conn is not None:
            if task.conn.poll():
                self._receive(task)     # sent just before it exited
            else:
                task.conn.close()
                task.conn = None
        _fail(task.future, ChildDied(task.pid, code))
        task.handle.close()


def _fail(future: concurrent.futures.Future[Any],
          error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class Executor(concurrent.futures.Executor):
    """Run each task in a fresh child from a warmfork server's warm pool.

    ``max_workers`` (default: the CPUs this process may run on) bounds the
    children alive at once.  Without ``server``, the Executor starts its
    own (``preload``, default ``warmfork.DEFAULT_PRELOAD``; ``pool_size``,
    default warmfork.set_pool_size's) in the background and closes it at
    shutdown;
    a ``server`` passed in is shared and stays open.  ``options`` set up
    every child (env, cwd, stdio, name).  A task running longer than
    ``task_timeout`` seconds is killed and its future fails with
    TaskTimeout; a child that dies fails its future with ChildDied.
    """

    def __init__(self, max_workers: Optional[int] = None, *,
                 server: Optional[Server] = None,
                 preload: Optional[Iterable[str]] = None,
                 pool_size: Optional[int] = None,
                 options: Optional[SpawnOptions] = None,
                 task_timeout: Optional[float] = None) -> None:
        if max_workers is None:
            max_workers = len(os.sched_getaffinity(0))
        elif not isinstance(max_workers, int) or max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if task_timeout is not None and not task_timeout > 0:
            raise ValueError("task_timeout must be greater than 0")
        if options is not None and not isinstance(options, SpawnOptions):
            raise TypeError("options must be a warmfork.SpawnOptions")
        owns = server is None
        if server is None:
            if preload is None:
                preload = DEFAULT_PRELOAD
            elif not isinstance(preload, str):
                preload = tuple(preload)        # a generator is read once
            server = Server(preload, pool_size, background=True)
        elif preload is not None or pool_size is not None:
            raise ValueError("preload and pool_size are the server's: give "
                             "them to warmfork.Server, not with server=")
        self._max_workers = max_workers
        self._manager = _Manager(server, owns, max_workers, options,
                                 task_timeout)
        # Dropped without shutdown(): finish the queue, then close.
        weakref.finalize(self, self._manager.dropped).atexit = False

    @property
    def server(self) -> Server:
        """The warmfork.Server whose children run the tasks."""
        return self._manager.server

    def submit(self, fn: Callable[..., T], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[T]:
        """Schedule ``fn(*args, **kwargs)`` in a fresh child."""
        m = self._manager
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with m.lock:
            if m.broken is not None:
                raise RuntimeError("warmfork.Executor is broken: its "
                                   "manager thread failed") from m.broken
            if m.shutdown:
                raise RuntimeError("cannot schedule new futures after "
                                   "shutdown")
            if _exiting:
                raise RuntimeError("cannot schedule new futures after "
                                   "interpreter shutdown")
            m.pending.append(_Item(future, fn, args, kwargs))
            m.ensure_thread()
            m.wake()
        return future

    def shutdown(self, wait: bool = True, *,
                 cancel_futures: bool = False) -> None:
        """Take no more tasks; ``cancel_futures`` cancels the queued ones;
        ``wait`` waits for the running ones (and closes our server)."""
        m = self._manager
        m.request_shutdown(cancel_futures)
        thread = m.thread
        if wait and thread is not None:
            thread.join()


# Managers whose thread runs; at exit, each finishes its queue (as the
# stdlib's executors do) before multiprocessing's own exit handler runs.
_live: Set[_Manager] = set()
_exiting = False


def _finish_all() -> None:
    global _exiting
    _exiting = True
    managers: List[_Manager] = list(_live)
    for m in managers:
        m.request_shutdown()
    for m in managers:
        if m.thread is not None:
            m.thread.join()


atexit.register(_finish_all)
