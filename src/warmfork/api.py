"""A small object API for worker-pool frameworks.

    with warmfork.Server(preload=["numpy"]) as server:
        handle = server.spawn(work, 42)
        handle.wait()
        print(handle.pid, handle.exitcode)

Each Server is its own warmfork server process (not shared with the
"warmfork" context), closed with the Server.  Children are ordinary
multiprocessing processes: current_process(), parent_process() and the
pickling rules are exactly those of the "warmfork" start method.
"""
from .client import ServerProcess
from .context import (WarmforkProcess, check_pool_size, check_preload,
                      current_pool_size)
from .popen_warmfork import use_server, warm_up_sample

__all__ = ["Server", "Handle"]


class Handle:
    """One child: pid, sentinel, exitcode, wait(), terminate(), kill()."""

    def __init__(self, process_obj):
        self._process = process_obj

    @property
    def pid(self):
        return self._process.pid

    @property
    def sentinel(self):
        """An fd that becomes readable when the child has exited."""
        return self._process.sentinel

    @property
    def exitcode(self):
        """None while running; else the exit code, -N if killed by signal N."""
        return self._process.exitcode

    def wait(self, timeout=None):
        """Wait up to ``timeout`` seconds; return the exit code or None."""
        self._process.join(timeout)
        return self._process.exitcode

    def is_alive(self):
        return self._process.is_alive()

    def terminate(self):
        """Send SIGTERM."""
        self._process.terminate()

    def kill(self):
        """Send SIGKILL."""
        self._process.kill()

    def close(self):
        """Release the sentinel; the child must have exited."""
        self._process.close()

    def __repr__(self):
        return "<warmfork.Handle pid=%s exitcode=%s>" % (self.pid,
                                                         self.exitcode)


class Server:
    """A warmfork server with its own preload list; spawn() starts children.

    ``pool_size`` idle children are kept forked ahead of time (default:
    warmfork.set_pool_size's value); 0 makes every spawn fork.
    """

    def __init__(self, preload=(), pool_size=None):
        self.preload = check_preload(preload)
        pool_size = check_pool_size(current_pool_size() if pool_size is None
                                    else pool_size)
        self._server = ServerProcess(self.preload, pool_size,
                                     warm_up_sample())

    @property
    def pid(self):
        """The server process's pid."""
        return self._server.pid

    def spawn(self, func, *args, **kwargs):
        """Run ``func(*args, **kwargs)`` in a new child; return its Handle."""
        if self._server is None:
            raise ValueError("spawn() on a closed warmfork.Server")
        process_obj = WarmforkProcess(target=func, args=args, kwargs=kwargs)
        with use_server(self._server):
            process_obj.start()
        return Handle(process_obj)

    def close(self):
        """Stop taking starts; the server exits after its last child."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
