"""Register "warmfork" in every interpreter that imports multiprocessing.

Why: a "spawn" child of a program whose global start method is "warmfork"
calls set_start_method("warmfork") while it prepares, before any of the
user's code could import warmfork.  It lives outside the package so that start-up does not import warmfork
(and with it multiprocessing).  warmfork.pth (installed beside
site-packages' other .pth files) imports this module at start-up; it only
adds a finder that waits for the multiprocessing package and, once that has
finished loading, imports warmfork.context, which registers the method.
Interpreters that never import multiprocessing pay one dict lookup per import.
"""
import sys

__all__ = ["install"]


class _RegisterAfterLoad:
    """A loader wrapper: load multiprocessing, then register warmfork."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            import warmfork.context  # noqa: F401  (registers the method)
        except Exception:
            pass    # a broken install must not break multiprocessing


class _WaitForMultiprocessing:
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "multiprocessing":
            return None
        sys.meta_path.remove(self)          # one shot
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader,
                                                       "exec_module"):
                    spec.loader = _RegisterAfterLoad(spec.loader)
                return spec
        return None


def install():
    if "multiprocessing" in sys.modules:
        try:
            import warmfork.context  # noqa: F401
        except Exception:
            pass
    elif not any(isinstance(f, _WaitForMultiprocessing)
                 for f in sys.meta_path):
        sys.meta_path.insert(0, _WaitForMultiprocessing())


install()
