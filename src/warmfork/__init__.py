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
           "Server", "Handle",
           "WarmforkContext", "WarmforkProcess", "PreloadWarning",
           "DEFAULT_PRELOAD", "DEFAULT_POOL_SIZE"]
__version__ = "0.1.0"

_LAZY = {"Server": "api", "Handle": "api", "PreloadWarning": "client",
         "prestart": "popen_warmfork"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'warmfork' has no attribute %r" % name)
    import importlib
    return getattr(importlib.import_module("." + module, __name__), name)
