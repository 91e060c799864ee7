"""A small object API for worker-pool frameworks.

    with warmfork.Server(preload=["numpy"]) as server:
        handle = server.spawn(work, 42)
        handle.wait()
        print(handle.pid, handle.exitcode)

Each Server is its own warmfork server process (not shared with the
"warmfork" context), closed with the Server.  Children are ordinary
multiprocessing processes: current_process(), parent_process() and the
pickling rules are exactly those of the "warmfork" start method.

Server.spawn_with() adds per-child options (options.SpawnOptions), applied
in the child by _target.apply before the target runs.
"""
import os
import threading
from typing import (Any, Callable, Dict, Generator, Iterable, Optional,
                    Tuple)

from . import _target
from . import options as _options
from .client import ServerProcess
from .context import (WarmforkProcess, check_pool_size, check_preload,
                      current_pool_size)
from .popen_warmfork import use_server, warm_up_sample

__all__ = ["Server", "Handle", "SpawnOptions"]

SpawnOptions = _options.SpawnOptions
# Every Server preloads what its children run before their target.
_CHILD_PRELOAD = ("warmfork._target",)


class Handle:
    """One child: pid, sentinel, exitcode, wait(), terminate(), kill()."""

    def __init__(self, process_obj: WarmforkProcess) -> None:
        self._process = process_obj

    @property
    def pid(self) -> int:
        return self._process.pid  # type: ignore[return-value]

    @property
    def sentinel(self) -> int:
        """An fd that becomes readable when the child has exited."""
        return self._process.sentinel

    @property
    def exitcode(self) -> Optional[int]:
        """None while running; else the exit code, -N if killed by signal N."""
        return self._process.exitcode

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait up to ``timeout`` seconds; return the exit code or None."""
        self._process.join(timeout)
        return self._process.exitcode

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def terminate(self) -> None:
        """Send SIGTERM."""
        self._process.terminate()

    def kill(self) -> None:
        """Send SIGKILL."""
        self._process.kill()

    def close(self) -> None:
        """Release the sentinel; the child must have exited."""
        self._process.close()

    def __repr__(self) -> str:
        return "<warmfork.Handle pid=%s exitcode=%s>" % (self.pid,
                                                         self.exitcode)

    async def wait_async(self) -> int:
        """Wait in asyncio, without a thread: the event loop watches the
        sentinel (add_reader); return the exit code."""
        import asyncio
        if self._process.exitcode is None:
            loop = asyncio.get_running_loop()
            # A dup of our own: two awaits of one Handle do not replace each
            # other's reader, and a cancelled await removes only its own.
            fd = os.dup(self.sentinel)
            ready = loop.create_future()

            def on_ready() -> None:
                if not ready.done():
                    ready.set_result(None)
            try:
                loop.add_reader(fd, on_ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(fd)
            finally:
                os.close(fd)
        code = self.wait()              # readable: does not block
        assert code is not None
        return code

    def __await__(self) -> Generator[Any, None, int]:
        """``await handle`` is ``await handle.wait_async()``."""
        return self.wait_async().__await__()


class Server:
    """A warmfork server with its own preload list; spawn() starts children.

    ``pool_size`` idle children are kept forked ahead of time (default:
    warmfork.set_pool_size's value); 0 makes every spawn fork.
    ``background=True`` returns at once and starts the server in a thread;
    the first spawn(), ``pid`` or close() waits for it (and raises what
    made it fail).
    """

    def __init__(self, preload: Iterable[str] = (),
                 pool_size: Optional[int] = None,
                 background: bool = False) -> None:
        self.preload = check_preload(preload)
        pool_size = check_pool_size(current_pool_size() if pool_size is None
                                    else pool_size)
        self._server: Optional[ServerProcess]
        self._starting: Optional[threading.Thread] = None
        if background:
            self._start_in_background(pool_size)
        else:
            self._server = ServerProcess(self.preload + _CHILD_PRELOAD,
                                         pool_size, warm_up_sample())

    @property
    def pid(self) -> int:
        """The server process's pid."""
        self._join_start()
        if self._server is None:
            raise ValueError("pid of a closed warmfork.Server")
        return self._server.pid

    def spawn(self, func: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Handle:
        """Run ``func(*args, **kwargs)`` in a new child; return its Handle."""
        self._join_start()
        if self._server is None:
            raise ValueError("spawn() on a closed warmfork.Server")
        process_obj = WarmforkProcess(target=func, args=args, kwargs=kwargs)
        with use_server(self._server):
            process_obj.start()
        return Handle(process_obj)

    def spawn_with(self, options: Optional[SpawnOptions],
                   func: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> Handle:
        """As spawn(), the child set up by ``options`` first (env, cwd,
        stdio, name); a bad cwd or an unopenable file raises here."""
        with _options.resolved(options) as plan:
            name = None if options is None else options.name
            return self._start(_target.call, (plan, func, args, kwargs), {},
                               name)

    def _start(self, target: Callable[..., Any], args: Tuple[Any, ...],
               kwargs: Dict[str, Any], name: Optional[str] = None) -> Handle:
        """Start a child running ``target(*args, **kwargs)``."""
        self._join_start()
        if self._server is None:
            raise ValueError("spawn() on a closed warmfork.Server")
        process_obj = WarmforkProcess(target=target, args=args,
                                      kwargs=kwargs, name=name)
        with use_server(self._server):
            process_obj.start()
        return Handle(process_obj)

    # Start ahead of time.  Contained here so that a ServerProcess that
    # starts in the background by itself can replace it.
    def _start_in_background(self, pool_size: int) -> None:
        self._server = None
        self._start_error: Optional[BaseException] = None
        self._start_lock = threading.Lock()
        sample = warm_up_sample()

        def start() -> None:
            try:
                self._server = ServerProcess(self.preload + _CHILD_PRELOAD,
                                             pool_size, sample)
            except BaseException as e:
                self._start_error = e

        self._starting = threading.Thread(
            target=start, name="warmfork-server-start", daemon=True)
        self._starting.start()

    def _join_start(self, raise_error: bool = True) -> None:
        """Wait for a background start; raise what made it fail."""
        thread = self._starting
        if thread is None:
            return
        thread.join()
        with self._start_lock:
            error = self._start_error
            if self._starting is thread and error is None:
                self._starting = None
        if error is not None and raise_error:
            raise error

    def close(self) -> None:
        """Stop taking starts; the server exits after its last child."""
        self._join_start(raise_error=False)
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
