"""Per-spawn options of warmfork.Server: environment, cwd, stdio, ps name.

The parent validates and resolves them (opens files, checks the directory)
into a plan; the child applies the plan before its target runs
(_target.apply).  Nothing here runs in the server.
"""
import contextlib
import dataclasses
import os
import stat
import types
from typing import (IO, Any, Iterator, List, Mapping, Optional, Tuple,
                    Union)

from . import _target

__all__ = ["SpawnOptions", "Stdio", "DEVNULL"]

DEVNULL = -3             # the value of subprocess.DEVNULL, also accepted
StrPath = Union[str, "os.PathLike[str]"]
#: None: keep the server's; os.devnull or DEVNULL; a path (opened by the
#: parent: read for stdin, append for stdout/stderr); an fd or a file object
#: of the parent (the child gets a duplicate).
Stdio = Union[None, int, StrPath, IO[Any]]

_STDIO = ("stdin", "stdout", "stderr")


@dataclasses.dataclass(frozen=True)
class SpawnOptions:
    """How to set up one child before its target runs (Server.spawn_with).

    Applied in the child in this order: environment, cwd, stdio, name.
    """

    #: variables to set; a value of None removes the variable.
    env: Optional[Mapping[str, Optional[str]]] = None
    #: start from an empty environment (then apply ``env``).
    clear_env: bool = False
    #: working directory, checked in the parent (relative: to the parent's).
    cwd: Optional[StrPath] = None
    stdin: Stdio = None
    stdout: Stdio = None
    stderr: Stdio = None
    #: shown by ``ps -o comm``, ``top``, ``pgrep`` (first 15 bytes), and
    #: the child's ``multiprocessing.current_process().name``.
    name: Optional[str] = None

    def __post_init__(self) -> None:
        if self.env is not None:
            env = dict(self.env)           # a snapshot, taken now
            for key, value in env.items():
                if not (isinstance(key, str) and key and "=" not in key
                        and "\0" not in key):
                    raise ValueError("bad environment variable name %r"
                                     % (key,))
                if value is not None and not (isinstance(value, str)
                                              and "\0" not in value):
                    raise TypeError("environment value for %r must be a "
                                    "str without NUL, or None" % key)
            object.__setattr__(self, "env", types.MappingProxyType(env))
        if not isinstance(self.clear_env, bool):
            raise TypeError("clear_env must be a bool")
        if self.cwd is not None and not isinstance(os.fspath(self.cwd), str):
            raise TypeError("cwd must be a str path")
        for which in _STDIO:
            _check_stdio(which, getattr(self, which))
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError("name must be a str")

    def __hash__(self) -> int:
        env = None if self.env is None else tuple(sorted(self.env.items()))
        return hash((env, self.clear_env, self.cwd, self.stdin, self.stdout,
                     self.stderr, self.name))


def _check_stdio(which: str, value: Any) -> None:
    if value is None or value == DEVNULL:
        return
    if isinstance(value, bool):
        raise TypeError("%s: expected None, a path, an fd or a file, got %r"
                        % (which, value))
    if isinstance(value, int):
        if value < 0:
            raise ValueError("%s: bad fd %d" % (which, value))
        return
    if isinstance(value, (str, os.PathLike)):
        if not isinstance(os.fspath(value), str):
            raise TypeError("%s: the path must be a str" % which)
        return
    if not callable(getattr(value, "fileno", None)):
        raise TypeError("%s: expected None, a path, an fd or a file, got %r"
                        % (which, value))


class _PassFd:
    """Pickles as the stdlib's DupFd: the child receives a duplicate."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> Tuple[Any, Tuple[Any]]:
        from multiprocessing import reduction
        return _target.detach_fd, (reduction.DupFd(self.fd),)


def _stdio_for_child(index: int, value: Any, opened: List[int]) -> Any:
    if value is None:
        return None
    if value == DEVNULL or (isinstance(value, str) and value == os.devnull):
        return _target.DEVNULL
    if isinstance(value, (str, os.PathLike)):
        if index == 0:
            flags = os.O_RDONLY
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = os.open(value, flags | os.O_CLOEXEC, 0o666)
        opened.append(fd)
        return _PassFd(fd)
    if isinstance(value, int):
        return _PassFd(value)
    return _PassFd(value.fileno())


@contextlib.contextmanager
def resolved(options: Optional[SpawnOptions]
             ) -> Iterator[Optional[_target.Plan]]:
    """Within this block, the plan for ``options`` (files it opened stay
    open until the child has its duplicates: start the child inside)."""
    if options is None:
        yield None
        return
    opened: List[int] = []
    try:
        cwd = None
        if options.cwd is not None:
            cwd = os.path.abspath(options.cwd)
            if not stat.S_ISDIR(os.stat(cwd).st_mode):
                raise NotADirectoryError(20, "cwd is not a directory", cwd)
        env = None if options.env is None else tuple(options.env.items())
        stdio = tuple(_stdio_for_child(i, getattr(options, which), opened)
                      for i, which in enumerate(_STDIO))
        yield (options.clear_env, env, cwd, stdio, options.name)
    finally:
        for fd in opened:
            os.close(fd)
