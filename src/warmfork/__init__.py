"""warmfork: a preloaded forkserver start method with a small C core.

    import warmfork, multiprocessing
    ctx = multiprocessing.get_context("warmfork")

Importing warmfork registers the "warmfork" start method.  The package
imports only what registration needs; the rest loads on first use.
"""
from .context import (DEFAULT_POOL_SIZE, DEFAULT_PRELOAD, WarmforkContext,
                      WarmforkProcess, get_context, set_pool_size,
                      set_preload)

__all__ = ["get_context", "set_preload", "set_pool_size", "prestart",
           "Server", "Handle", "SpawnOptions", "Executor",
           "WarmforkContext", "WarmforkProcess", "PreloadWarning",
           "DEFAULT_PRELOAD", "DEFAULT_POOL_SIZE"]
__version__ = "0.1.0"

_LAZY = {"Server": "api", "Handle": "api", "PreloadWarning": "client",
         "SpawnOptions": "options", "Executor": "executor",
         "prestart": "popen_warmfork"}

# Type checkers see the lazy names' real types (typing is not imported).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .api import Handle, Server                     # noqa: F401
    from .client import PreloadWarning                  # noqa: F401
    from .executor import Executor                      # noqa: F401
    from .options import SpawnOptions                   # noqa: F401
    from .popen_warmfork import prestart                # noqa: F401


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'warmfork' has no attribute %r" % name)
    import importlib
    return getattr(importlib.import_module("." + module, __name__), name)
