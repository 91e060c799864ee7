"""warmfork: a preloaded forkserver start method with a small C core.

    import warmfork, multiprocessing
    ctx = multiprocessing.get_context("warmfork")

Importing warmfork registers the "warmfork" start method.
"""
from .api import Handle, Server
from .client import PreloadWarning
from .context import (DEFAULT_PRELOAD, WarmforkContext, WarmforkProcess,
                      get_context, set_preload)

__all__ = ["get_context", "set_preload", "Server", "Handle",
           "WarmforkContext", "WarmforkProcess", "PreloadWarning",
           "DEFAULT_PRELOAD"]
__version__ = "0.1.0"
