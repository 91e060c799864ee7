"""Big buffers travel as sealed memfds, mapped copy-on-write (buffers.py).

Real processes under the "warmfork" context.  The numpy tests skip when
numpy is not installed; the bytearray ones run everywhere.
"""
import gc
import multiprocessing as mp
import os
import pickle
import threading
import types

import pytest

import buffer_helpers as bh
import warmfork
from warmfork import buffers

ctx = mp.get_context("warmfork")
MB = 1 << 20

try:
    import numpy as np
except ImportError:
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")


@pytest.fixture(autouse=True)
def fresh_cache():
    buffers.clear_cache()
    gc.collect()
    yield
    buffers.clear_cache()


class Stats:
    """Counters of buffers.stats() since the start of the test."""

    def __init__(self):
        self.base = buffers.stats()

    def __getitem__(self, key):
        return buffers.stats().get(key, 0) - self.base.get(key, 0)

    @property
    def reused(self):
        return self["reused_tracked"] + self["reused_compared"]


def run(target, *args):
    """Start target(conn, *args) in a warmfork child; return what it sent."""
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=target, args=(w,) + args)
    p.start()
    w.close()
    try:
        return r.recv()
    finally:
        r.close()
        p.join(30)
        assert p.exitcode == 0


def spawn_view(obj):
    """How spawn rebuilds obj: ForkingPickler at the default protocol."""
    from multiprocessing.reduction import ForkingPickler
    return pickle.loads(ForkingPickler.dumps(obj))


@needs_numpy
def test_big_array_is_writable_private_and_shared_until_written():
    s = Stats()
    a = np.arange(4 * MB // 8, dtype=np.float64)
    before, read, written, first = run(bh.report_and_write, a)
    assert s["copied"] == 1 and s["copied_bytes"] == a.nbytes
    assert before == bh.describe(a) | {"owndata": False}
    assert before["writeable"]
    # Read: every page is the memfd's; written: one private page.
    assert read["anon"] == 0 and read["file"] >= a.nbytes // 4096
    assert written["anon"] == 1
    assert first == 1.0 and a[0] == 0.0        # the parent's is untouched


def tracking():
    """Can this kernel tell us which pages were written (6.7+)?"""
    return buffers._get_tracker().ok


def settle(a):
    """Send a twice: copied if need be, then compared (and, where the
    kernel can, tracked from then on).  Returns the child's sum."""
    run(bh.report, a)
    return run(bh.report, a)[0]["sum"]


@needs_numpy
def test_unchanged_buffer_is_not_copied_again():
    s = Stats()
    a = np.ones(2 * MB // 8)
    for _ in range(4):
        assert run(bh.report, a)[0]["sum"] == a.size
    assert s["copied"] == 1 and s.reused == 3
    # The first reuse compares; after that the kernel tracks writes.
    assert s["reused_compared"] == (1 if tracking() else 3)


@needs_numpy
def test_fortran_order_and_views_are_reused_too():
    f = np.asfortranarray(np.arange(MB // 4, dtype=np.float64).reshape(512, -1))
    whole = np.ones(4 * MB // 8)
    s = Stats()
    for _ in range(3):
        seen = run(bh.report, f, whole[:MB // 8])   # a new view each time
        assert seen == [bh.describe(f) | {"owndata": False},
                        bh.describe(whole[:MB // 8]) | {"owndata": False}]
    assert s["copied"] == 2 and s.reused == 4


@needs_numpy
@pytest.mark.parametrize("how", ["numpy", "kernel", "thread", "zap"])
def test_every_kind_of_write_is_seen(how):
    a = np.ones(4 * MB // 8)
    settle(a)
    s = Stats()
    if how == "numpy":
        a[-1] = 5
    elif how == "kernel":                       # read() into the array
        with open("/dev/urandom", "rb") as f:
            f.readinto(memoryview(a).cast("B")[8192:8200])
    elif how == "thread":
        t = threading.Thread(target=a.__setitem__, args=(slice(1000, 1100),
                                                         2.0))
        t.start()
        t.join()
    else:                                       # MADV_DONTNEED: zeros
        import ctypes
        libc = ctypes.CDLL(None)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t,
                                 ctypes.c_int)
        page = (a.ctypes.data + 3 * 4096) & ~4095
        assert libc.madvise(page, 8 * 4096, 4) == 0
    assert run(bh.report, a)[0]["sum"] == a.sum()
    assert s["copied"] == 1 and s.reused == 0
    assert settle(a) == a.sum()
    assert s["copied"] == 1


@needs_numpy
def test_without_write_tracking_the_copy_is_compared(monkeypatch):
    monkeypatch.setattr(buffers, "_tracker", types.SimpleNamespace(ok=False))
    s = Stats()
    a = np.ones(2 * MB // 8)
    run(bh.report, a)
    run(bh.report, a)
    assert s["copied"] == 1 and s["reused_compared"] == 1
    a[12345] = 3
    assert run(bh.report, a)[0]["sum"] == a.size + 2
    assert s["copied"] == 2
    buffers.clear_cache()


@needs_numpy
def test_arrays_that_stay_in_band_rebuild_as_under_spawn():
    ro = np.arange(MB // 4, dtype=np.int32)
    ro.flags.writeable = False
    small = np.arange(100.0)
    strided = np.arange(2 * MB // 8, dtype=np.float64)[::2]
    s = Stats()
    seen = run(bh.report, ro, small, strided)
    assert s["copied"] == 0
    assert seen == [bh.describe(spawn_view(x)) for x in (ro, small, strided)]
    assert seen[0]["writeable"]                 # as under spawn


@needs_numpy
def test_array_layouts_and_dtypes_rebuild_equal():
    rec = np.zeros(MB // 8, dtype=[("x", "<f8"), ("y", "<i4"), ("z", "u1")])
    rec["y"] = 7
    arrays = [np.asfortranarray(np.arange(MB // 8.0).reshape(256, -1)),
              np.arange(MB // 2, dtype=">i2"), rec,
              np.ones((64, 64, 64), dtype=np.complex64)]
    s = Stats()
    seen = run(bh.report, *arrays)
    assert s["copied"] == len(arrays)
    assert seen == [bh.describe(a) | {"owndata": False} for a in arrays]


@needs_numpy
def test_one_array_twice_stays_one_object():
    a = np.ones(MB // 8)
    assert run(bh.report_identity, (a, a))[0] is True


def test_bytearray_in_a_picklebuffer_goes_out_of_band():
    blob = bh.Blob(bytearray(os.urandom(MB)))
    s = Stats()
    assert run(bh.report_objects, blob) == repr(blob)
    assert s["copied"] == 1


def test_buffers_that_stay_in_band_without_error(monkeypatch):
    s = Stats()
    small = bh.Blob(bytearray(b"x" * 1000))
    readonly = bh.Blob(b"r" * MB)               # bytes: a read-only buffer
    exotic = bh.ExoticBlob(bytearray(b"e" * MB))
    objs = [small, readonly, exotic]
    assert run(bh.report_objects, objs) == repr(objs)
    assert s["copied"] == 0
    assert s["in_band_small"] == 1 and s["in_band_readonly"] == 1
    assert s["in_band_type"] == 1


def test_no_memfd_means_in_band(monkeypatch):
    def emfile(*args):
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(os, "memfd_create", emfile)
    blob = bh.Blob(bytearray(os.urandom(2 * MB)))
    s = Stats()
    assert run(bh.report_objects, blob) == repr(blob)
    assert s["copied"] == 0 and s["in_band_error"] == 1


def memfds_open():
    """This process's memfds of ours."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += "memfd:warmfork-buffer" in os.readlink(
                "/proc/self/fd/" + fd)
        except OSError:
            pass
    return found


def test_failed_seal_repickles_in_band(monkeypatch):
    monkeypatch.setattr(buffers, "F_ADD_SEALS", -1)      # EINVAL
    blob = bh.Blob(bytearray(os.urandom(2 * MB)))
    s = Stats()
    assert run(bh.report_objects, blob) == repr(blob)
    assert s["in_band_error"] == 1 and s["copied"] == 1
    gc.collect()
    assert memfds_open() == 0


def test_threshold_none_turns_it_off():
    blob = bh.Blob(bytearray(os.urandom(2 * MB)))
    s = Stats()
    buffers.set_threshold(None)
    try:
        assert run(bh.report_objects, blob) == repr(blob)
    finally:
        buffers.set_threshold(buffers.DEFAULT_THRESHOLD)
    assert s["copied"] == 0 and s["in_band_small"] == 0


@needs_numpy
def test_many_buffers_share_one_memfd():
    arrays = [np.full(MB // 8, i, dtype=np.float64) for i in range(40)]
    s = Stats()
    fds, total = run(bh.report_fds, *arrays)
    assert total == sum(float(a.sum()) for a in arrays)
    assert s["copied"] == 40
    assert memfds_open() == 1                   # the cache's, in the parent
    memfds = [t for t in fds.values() if "memfd:warmfork-buffer" in t]
    assert 1 <= len(memfds) <= 2


@needs_numpy
def test_child_keeps_one_memfd_per_start_and_nothing_else_new():
    a = np.ones(MB)
    fds, total = run(bh.report_fds, a)
    assert total == a.size
    memfds = [t for t in fds.values() if "memfd:warmfork-buffer" in t]
    # Ours, kept to pass the buffer on; before 3.13 mmap holds a dup.
    import sys
    assert len(memfds) == (1 if sys.version_info >= (3, 13) else 2), fds


@needs_numpy
def test_cache_lets_go_when_the_array_dies():
    a = np.ones(MB)
    run(bh.report, a)
    assert len(buffers._cache) == 1 and memfds_open() == 1
    del a
    gc.collect()
    b = np.ones(2 * MB)                 # the next big buffer evicts the dead
    run(bh.report, b)
    assert len(buffers._cache) == 1
    del b
    buffers.clear_cache()
    gc.collect()
    assert memfds_open() == 0


@needs_numpy
@pytest.mark.parametrize("write_first", [False, True])
def test_child_passes_a_received_buffer_on_without_copy(write_first):
    a = np.arange(MB // 8, dtype=np.float64)
    seen, child_stats, code = run(bh.forward, a, write_first)
    assert code == 0
    want = a.copy()
    if write_first:
        want[-1] = -1.0
    assert seen[0]["sum"] == want.sum()
    if write_first:
        assert child_stats.get("copied") == 1
    else:
        assert child_stats.get("reused_received") == 1
        assert not child_stats.get("copied")


@needs_numpy
def test_pool_initializer_args_are_copied_once():
    a = np.arange(2 * MB // 8, dtype=np.float64)
    s = Stats()
    with ctx.Pool(2, initializer=bh.store, initargs=(a,)) as pool:
        sums = pool.map(bh.stored_sum, range(4))
    assert {x for x, _ in sums} == {float(a.sum())}
    assert s["copied"] == 1 and s.reused == 1


@needs_numpy
def test_executor_task_arguments_go_as_memfds():
    # warmfork.Executor runs each task in a new child: its arguments are
    # part of a process object.
    a = np.arange(2 * MB // 8, dtype=np.float64)
    s = Stats()
    with warmfork.Executor(2) as ex:
        sums = [f.result(30) for f in [ex.submit(bh.total, a)
                                       for _ in range(3)]]
    assert sums == [float(a.sum())] * 3
    assert s["copied"] == 1 and s.reused == 2


@needs_numpy
def test_starts_from_two_threads_at_once():
    a = np.arange(2 * MB // 8, dtype=np.float64)
    results = []

    def go():
        results.append(run(bh.report, a)[0]["sum"])

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [float(a.sum())] * 4


def test_settings_are_checked():
    with pytest.raises(ValueError):
        buffers.set_threshold(0)
    with pytest.raises(ValueError):
        buffers.set_cache_limit(-1)
    assert buffers.get_threshold() == buffers.DEFAULT_THRESHOLD
    assert warmfork.get_context() is ctx
