"""Start-method specs: ``forkserver``, ``warmfork[numpy]``, ``forkserver[]``.

A spec is a start-method name with an optional preload list in brackets,
entries joined by ``+``.  No brackets means the method's default preload
(stdlib ``forkserver`` on 3.11 defaults to ``['__main__']``); ``[]`` means
preload nothing.  ``raw`` is not a start method: it stands for the lower
bound measured with bare ``os.fork()`` in the same rounds.
"""

import multiprocessing

__all__ = ["RAW", "STDLIB", "parse", "base", "warmfork_available",
           "default_methods", "make_context"]

RAW = "raw"
STDLIB = ("fork", "spawn", "forkserver")
_PRELOADING = ("forkserver", "warmfork")


def parse(spec):
    """Split ``name[a+b]`` into ``(name, ['a', 'b'])``; no brackets: None."""
    spec = spec.strip()
    if "[" not in spec:
        return spec, None
    if not spec.endswith("]"):
        raise ValueError(f"bad method spec {spec!r}: missing ']'")
    name, _, inner = spec[:-1].partition("[")
    preload = [m for m in inner.split("+") if m]
    if name not in _PRELOADING:
        raise ValueError(f"{name!r} has no preload list (spec {spec!r})")
    return name, preload


def base(spec):
    """Return the start-method name of a spec."""
    return parse(spec)[0]


def warmfork_available():
    """Return True when ``import warmfork`` registers the warmfork context."""
    try:
        import warmfork  # noqa: F401  (registers the context)
        multiprocessing.get_context("warmfork")
    except (ImportError, ValueError):
        return False
    return True


def default_methods():
    """Return the stdlib methods plus warmfork when it can be imported."""
    methods = list(STDLIB)
    if warmfork_available():
        methods.append("warmfork")
    return methods


def make_context(spec):
    """Return the context for spec, with its preload list applied."""
    name, preload = parse(spec)
    ctx = multiprocessing.get_context(name)
    if preload is not None:
        # Both spellings exist for warmfork; the stdlib one works for both.
        ctx.set_forkserver_preload(preload)
    return ctx
