"""Big buffers to children as sealed memfds (pickle protocol 5, out of band).

``spawn``, ``forkserver`` and warmfork pickle a process object's big
arrays through a pipe to every child.  Here the process object is pickled
at protocol 5 with a ``buffer_callback`` (PEP 574): each big buffer that an
object hands out of band (numpy arrays do; so does anything that wraps a
``bytearray`` in a ``PickleBuffer``) is placed in a sealed memfd, the fd
travels with the START like any fd the process object needs, and the
child maps it copy-on-write (``MAP_PRIVATE``) and rebuilds the object on
top of it: writable, private to the child, pages shared until written.

Which buffers go out of band (all others stay in the pickle, no error):
writable, C- or Fortran-contiguous, at least ``get_threshold()`` bytes,
exported by a type known to rebuild from any buffer (numpy's ``ndarray``,
``bytearray``, ``array.array``, ``mmap.mmap``; more with ``allow_type``),
and only while a memfd can be made and filled (``EMFILE``, ``ENOMEM``, no
``memfd_create``: in band).  A numpy array that does not qualify (small,
read-only, not contiguous) is pickled exactly as under spawn, at the
default protocol, so it rebuilds as there (a read-only array comes back
writable and owning its data).

When a buffer is not copied again (the reuse rule):
- it lies in a memfd mapping that this process received as a warmfork
  child, and none of its pages has been written here (``/proc/self/
  pagemap``: every page is still the memfd's): that memfd is sent on;
- or it was copied for an earlier start, its memory belongs to the same
  object (the exporter, or the array it is a view of; alive all along:
  the cache holds a weak reference), at the same address and length, and
  its bytes are still those of the copy.  The
  first time, that is checked by comparing them (``memcmp``, ~50 ms for
  200 MB here, a third of a copy).  A buffer found unchanged is from then
  on write-protected where the kernel can report writes without reading
  the data (Linux 6.7+: userfaultfd in asynchronous write-protect mode
  and the ``PAGEMAP_SCAN`` ioctl; private anonymous memory only, which is
  where numpy arrays live): a write by any thread, or by the kernel on our
  behalf (``readinto``), or a page dropped (``MADV_DONTNEED``) marks it,
  and the next start copies again.  Checking costs microseconds.  Where
  the kernel cannot (older kernels, userfaultfd not permitted, memory that
  other processes can write), every reuse compares.
A buffer the parent keeps writing between starts is thus copied each
time and never write-protected (a write to a protected huge page splits
it into small pages).  Copies are kept while that owner lives, up to
``set_cache_limit`` bytes (default: a quarter of RAM), least recently
sent dropped first; the parent holds a read-only map of each, so the
pages a child reads count as shared, as under fork.

The child's side is ``receive``: the start's data has a small table
(``(MARK, ((fd index, offset, length), ...))``) between the preparation
data and the process object; ``stdlib_compat.child_main`` passes what
``receive`` returns to ``pickle.load(..., buffers=...)``.
"""
import collections
import errno
import fcntl
import io
import mmap
import os
import pickle
import struct
import sys
import threading
import weakref

try:
    import ctypes
except ImportError:                 # a Python built without _ctypes
    ctypes = None               # type: ignore[assignment]

__all__ = ["DEFAULT_THRESHOLD", "set_threshold", "get_threshold",
           "set_cache_limit", "allow_type", "dump", "is_table", "receive",
           "stats", "clear_cache"]

PAGE = mmap.PAGESIZE
DEFAULT_THRESHOLD = 1 << 20
# At most this many memfds go with one start (WF_MAX_FDS is 250 in all);
# a buffer that would need one more is copied into the start's new memfd.
MAX_MEMFDS_PER_START = 32
MARK = "warmfork.buffers/1"

# fcntl's names are there from 3.8 on Linux; the numbers are Linux's.
F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
SEALS = (getattr(fcntl, "F_SEAL_SEAL", 1) | getattr(fcntl, "F_SEAL_SHRINK", 2)
         | getattr(fcntl, "F_SEAL_GROW", 4) | getattr(fcntl, "F_SEAL_WRITE", 8))
_MFD_FLAGS = getattr(os, "MFD_CLOEXEC", 1) | getattr(os, "MFD_ALLOW_SEALING", 2)
_WRITE_CHUNK = 1 << 30
_MADV_POPULATE_READ = 22

# Off where it cannot work: no ctypes, or a libc without memfd_create.
_threshold = (DEFAULT_THRESHOLD if ctypes is not None
              and hasattr(os, "memfd_create") else None)
_cache_limit = None                 # None: a quarter of MemTotal, read lazily
_allowed = {bytearray, mmap.mmap}   # + array.array, numpy.ndarray: lazily
_lock = threading.RLock()
_stats: "collections.Counter[str]" = collections.Counter()


def set_threshold(nbytes):
    """Buffers of at least ``nbytes`` go out of band; None turns it off."""
    global _threshold
    if nbytes is not None and (not isinstance(nbytes, int) or nbytes < 1):
        raise ValueError("threshold must be a positive int or None")
    _threshold = nbytes


def get_threshold():
    return _threshold


def set_cache_limit(nbytes):
    """Keep at most ``nbytes`` of copies for reuse (0: never reuse)."""
    global _cache_limit
    if not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError("cache limit must be an int >= 0")
    with _lock:
        _cache_limit = nbytes
        _evict()


def allow_type(cls):
    """Let buffers exported by ``cls`` go out of band.  Only for types whose
    pickled form rebuilds from any writable buffer (a memoryview of the
    mapping), not only from the bytearray an in-band pickle gives."""
    _allowed.add(cls)


def stats():
    """Counters since start-up (copied, reused_*, in_band_*); for tests and
    the benchmark."""
    return dict(_stats)


# -- memfds ---------------------------------------------------------------

class _Memfd:
    """One memfd, closed when the last region of it is gone."""
    __slots__ = ("fd", "size", "__weakref__")

    def __init__(self, fd, size=0):
        self.fd = fd
        self.size = size
        weakref.finalize(self, _close_quietly, fd)


def _close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def _write_all(fd, view, offset):
    done = 0
    while done < view.nbytes:
        n = os.pwrite(fd, view[done:done + _WRITE_CHUNK], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "short write to a memfd")
        done += n


def _address(view):
    """Address of a writable buffer's first byte."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


_libc = None


def _get_libc():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.memcmp.restype = ctypes.c_int
        libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_size_t)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int, ctypes.c_long)
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t,
                                 ctypes.c_int)
        libc.syscall.restype = ctypes.c_long
        _libc = libc
    return _libc


def _memcmp(a, b, n):
    return _get_libc().memcmp(a, b, n)     # ctypes releases the GIL


class _Map:
    """A read-only private map of part of a memfd, at ``address``; unmapped
    when dropped.  (Python's mmap would hold a dup of the fd before 3.13,
    one per cached buffer.)"""
    __slots__ = ("address", "__weakref__")

    def __init__(self, fd, offset, nbytes):
        libc = _get_libc()
        base = offset & ~(PAGE - 1)
        length = offset - base + nbytes
        addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_PRIVATE,
                         fd, base)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        # Fault it in now (Linux 5.14+), while the copy is hot.
        libc.madvise(addr, length, _MADV_POPULATE_READ)
        self.address = addr + (offset - base)
        weakref.finalize(self, libc.munmap, addr, length)


def _pagemap_fd():
    """/proc/self/pagemap of this process (reopened after a fork)."""
    global _pagemap
    if _pagemap is None:
        try:
            _pagemap = os.open("/proc/self/pagemap",
                               os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _pagemap = -1
    return _pagemap


_pagemap = None


# -- write tracking: userfaultfd async write-protect + PAGEMAP_SCAN ---------

def _ioc(direction, kind, nr, size):
    return (direction << 30) | (size << 16) | (kind << 8) | nr


_UFFDIO_API = _ioc(3, 0xAA, 0x3F, 24)
_UFFDIO_REGISTER = _ioc(3, 0xAA, 0x00, 32)
_UFFDIO_UNREGISTER = _ioc(2, 0xAA, 0x01, 16)
_PAGEMAP_SCAN = _ioc(3, ord("f"), 16, 96)
_UFFD_USER_MODE_ONLY = 1
_UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
_UFFD_FEATURE_WP_ASYNC = 1 << 15
_UFFDIO_REGISTER_MODE_WP = 1 << 1
_PM_SCAN_WP_MATCHING = 1 << 0
_PM_SCAN_CHECK_WPASYNC = 1 << 1
_PAGE_IS_WRITTEN = 1 << 1
_PAGE_IS_PRESENT = 1 << 3
_PAGE_IS_SWAPPED = 1 << 4
_SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
_SCAN_VEC = 256                     # page_region entries per ioctl


class _Tracker:
    """Which pages of private anonymous memory were written since we last
    looked (Linux 6.7+).  ``ok`` is False where it cannot work."""

    def __init__(self):
        self.uffd = -1
        self.ok = False
        self._vec = None
        nr = _SYS_USERFAULTFD.get(os.uname().machine)
        if nr is None or _pagemap_fd() < 0:
            return
        try:
            libc = _get_libc()
            fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(
                os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY))
            if fd < 0:
                return
            self.uffd = fd
            api = bytearray(struct.pack(
                "QQQ", 0xAA, _UFFD_FEATURE_WP_ASYNC
                | _UFFD_FEATURE_WP_UNPOPULATED, 0))
            fcntl.ioctl(fd, _UFFDIO_API, api, True)
        except (OSError, AttributeError, ValueError):
            self.close()
            return
        self._vec = ctypes.create_string_buffer(24 * _SCAN_VEC)
        probe = ctypes.addressof(self._vec) & ~(PAGE - 1)
        if self._scan(probe, probe + PAGE, 0, 0, _PAGE_IS_PRESENT, 0,
                      _PAGE_IS_PRESENT) is None:
            self.close()                # no PAGEMAP_SCAN (before 6.7)
            return
        self.ok = True

    def close(self):
        if self.uffd >= 0:
            _close_quietly(self.uffd)
        self.uffd = -1
        self.ok = False

    def register(self, start, end):
        try:
            fcntl.ioctl(self.uffd, _UFFDIO_REGISTER, bytearray(struct.pack(
                "QQQQ", start, end - start, _UFFDIO_REGISTER_MODE_WP, 0)),
                True)
            return True
        except OSError:
            return False

    def unregister(self, start, end):
        if self.uffd >= 0:
            try:
                fcntl.ioctl(self.uffd, _UFFDIO_UNREGISTER,
                            struct.pack("QQ", start, end - start))
            except OSError:
                pass

    def _scan(self, start, end, flags, inverted, mask, anyof, ret):
        """PAGEMAP_SCAN over [start, end): list of (start, end) regions,
        or None if the range is not (all) tracked by us any more."""
        out = []
        vec = ctypes.addressof(self._vec)
        while start < end:
            arg = bytearray(struct.pack(
                "12Q", 96, flags, start, end, 0, vec, _SCAN_VEC, 0,
                inverted, mask, anyof, ret))
            try:
                n = fcntl.ioctl(_pagemap_fd(), _PAGEMAP_SCAN, arg, True)
            except OSError:
                return None
            for i in range(n):
                s, e, _ = struct.unpack_from("QQQ", self._vec, 24 * i)
                out.append((s, e))
            walked = struct.unpack_from("Q", arg, 32)[0]
            if walked <= start:
                return None
            start = walked
        return out

    def written(self, start, end):
        """Pages written since the last call over them, which protects
        them again: regions, or None (not tracked: treat as written)."""
        return self._scan(start, end,
                          _PM_SCAN_WP_MATCHING | _PM_SCAN_CHECK_WPASYNC,
                          0, _PAGE_IS_WRITTEN, 0, _PAGE_IS_WRITTEN)

    def holes(self, start, end):
        """Pages neither present nor swapped out: a zapped page
        (MADV_DONTNEED) reads as zeros without having been written."""
        both = _PAGE_IS_PRESENT | _PAGE_IS_SWAPPED
        found = self._scan(start, end, _PM_SCAN_CHECK_WPASYNC, both, both,
                           0, both)
        return None if found is None else tuple(found)


_tracker = None


def _get_tracker():
    global _tracker
    if _tracker is None:
        _tracker = _Tracker()
    return _tracker


def _private_anonymous(start, end):
    """Is [start, end) all private anonymous memory (/proc/self/maps)?
    Memory shared with other processes can change without our writes."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return False
    covered = start
    for line in maps.splitlines():
        fields = line.split(None, 5)
        lo, _, hi = fields[0].partition("-")
        lo, hi = int(lo, 16), int(hi, 16)
        if hi <= covered or lo >= end:
            continue
        if lo > covered:
            return False                # a hole
        path = fields[5].strip() if len(fields) > 5 else ""
        if fields[1][3] != "p" or path and not (
                path in ("[heap]", "[stack]") or path.startswith("[anon:")):
            return False
        covered = hi
        if covered >= end:
            return True
    return False


# -- the cache of copies, and mappings received as a child -----------------

class _Entry:
    """A copy of one buffer for reuse: region, and how to know it is still
    equal to the buffer (tracked pages + edge bytes, or a full compare)."""
    __slots__ = ("key", "ref", "memfd", "offset", "nbytes", "tracked",
                 "pages", "holes", "dirty", "view", "__weakref__")

    def __init__(self, key, memfd, offset, nbytes):
        self.key = key
        self.ref = None
        self.memfd = memfd
        self.offset = offset
        self.nbytes = nbytes
        self.tracked = False
        self.pages = (0, 0)             # [start, end) of whole pages tracked
        self.holes = ()
        self.dirty = False
        self.view = None                # _Map of the copy


_cache: "collections.OrderedDict[tuple, _Entry]" = collections.OrderedDict()
_cache_bytes = 0
_dead: list = []                        # keys whose owner died
# Mappings received as a child: id(mmap) -> (address, size, memfd, base).
_received: dict = {}


def _on_owner_death(entry_ref):
    def callback(_):
        entry = entry_ref()
        if entry is None:
            return
        _dead.append(entry.key)
        # Before the owner frees its memory: stop tracking it now, so
        # that whatever is allocated there later starts untracked.
        if entry.tracked and _tracker is not None:
            _tracker.unregister(*entry.pages)
    return callback


def _drop(entry):
    global _cache_bytes
    if _cache.get(entry.key) is entry:
        del _cache[entry.key]
        _cache_bytes -= entry.nbytes
    if entry.tracked and _tracker is not None and entry.ref is not None \
            and entry.ref() is not None:
        _tracker.unregister(*entry.pages)
    entry.tracked = False
    entry.view = None


def _limit():
    global _cache_limit
    if _cache_limit is None:
        try:
            _cache_limit = os.sysconf("SC_PHYS_PAGES") * PAGE // 4
        except (OSError, ValueError):
            _cache_limit = 1 << 30
    return _cache_limit


def _evict():
    while _dead:
        key = _dead.pop()
        entry = _cache.get(key)
        if entry is not None and (entry.ref is None or entry.ref() is None):
            entry.tracked = False       # unregistered by the callback
            _drop(entry)
    while _cache and _cache_bytes > _limit():
        _drop(next(iter(_cache.values())))


def clear_cache():
    """Forget every copy kept for reuse (memfds close once no start that
    is being sent uses them)."""
    with _lock:
        for entry in list(_cache.values()):
            _drop(entry)


def _mark_written(regions):
    """Every tracked entry overlapping a written region is stale: one scan
    re-protects pages that several entries may cover."""
    if not regions:
        return
    for entry in _cache.values():
        if entry.tracked and not entry.dirty:
            s, e = entry.pages
            for rs, re_ in regions:
                if rs < e and re_ > s:
                    entry.dirty = True
                    break


def _edges_equal(entry, address):
    """The bytes before the first and after the last whole tracked page."""
    s, e = entry.pages
    copy = entry.view.address
    head = s - address
    tail = address + entry.nbytes - e
    if head and _memcmp(address, copy, head) != 0:
        return False
    if tail and _memcmp(e, copy + (e - address), tail) != 0:
        return False
    return True


def _track(entry, address):
    """Start tracking writes to the whole pages of a buffer that was just
    found unchanged once (so a buffer the parent keeps writing is never
    write-protected: that would split its huge pages).  Protects first;
    the caller compares after, so no write falls between."""
    first = (address + PAGE - 1) & ~(PAGE - 1)
    last = (address + entry.nbytes) & ~(PAGE - 1)
    tracker = _get_tracker()
    if not (tracker.ok and first < last and _private_anonymous(first, last)
            and tracker.register(first, last)):
        return
    written = tracker.written(first, last)
    if written is None:
        tracker.unregister(first, last)
        return
    _mark_written(written)
    entry.tracked, entry.pages, entry.dirty = True, (first, last), False


def _still_equal(entry, address):
    if entry.tracked:
        s, e = entry.pages
        written = _tracker.written(s, e)
        if written is None:             # no longer tracked: compare
            entry.tracked = False
        else:
            _mark_written(written)
            if entry.dirty or _tracker.holes(s, e) != entry.holes:
                return False
            if not _edges_equal(entry, address):
                return False
            _stats["reused_tracked"] += 1
            return True
    _track(entry, address)
    if _memcmp(address, entry.view.address, entry.nbytes) != 0:
        return False
    if entry.tracked:
        entry.holes = _tracker.holes(*entry.pages)
        if entry.holes is None:
            entry.tracked = False
    _stats["reused_compared"] += 1
    return True


def _in_received(address, nbytes):
    """(memfd, offset) if [address, +nbytes) lies in a mapping we received
    and none of its pages was written here; else None."""
    for start, size, memfd, base in list(_received.values()):
        if start <= address and address + nbytes <= start + size:
            break
    else:
        return None
    fd = _pagemap_fd()
    if fd < 0:
        return None
    first = address // PAGE
    last = (address + nbytes - 1) // PAGE
    try:
        data = os.pread(fd, (last - first + 1) * 8, first * 8)
    except OSError:
        return None
    if len(data) != (last - first + 1) * 8:
        return None
    # Top byte of each entry: 0x80 present, 0x40 swapped, 0x20 file page.
    # Only "not present" (reads come from the memfd) and "present file
    # page" keep the memfd's bytes; an anonymous page is a written copy.
    if data[7::8].translate(None, _UNCHANGED_TOPS):
        return None
    return memfd, base + (address - start)


_UNCHANGED_TOPS = bytes(b for b in range(256)
                        if b & 0xE0 in (0x00, 0x20, 0xA0))


# -- one start ------------------------------------------------------------

def _exporter_allowed(obj):
    while type(obj) is memoryview:
        obj = obj.obj
    kind = type(obj)
    if kind in _allowed:
        return True
    np = sys.modules.get("numpy")
    if np is not None and kind is np.ndarray:
        return True
    if kind.__module__ == "array" and kind.__name__ == "array":
        return True
    return False


def _owner(obj):
    """The object that owns an exporter's memory: numpy pickles a view (the
    transpose of a Fortran-order array) made afresh for each pickle, and
    the owner is what stays the same from one start to the next."""
    np = sys.modules.get("numpy")
    for _ in range(100):
        if type(obj) is memoryview:
            obj = obj.obj
        elif np is not None and isinstance(obj, np.ndarray) \
                and obj.base is not None:
            obj = obj.base
        else:
            break
    return obj


class _Collector:
    """The out-of-band buffers of one pickle, in order."""

    def __init__(self):
        self.regions = []           # (memfd, offset, nbytes) per buffer
        self.memfds = []            # distinct, in order of first use
        self.new = None             # this start's memfd for fresh copies
        self.pending = []           # entries to cache once sealed
        self.error = None

    def callback(self, pb):
        """buffer_callback: False sends pb out of band, True keeps it in."""
        try:
            view = pb.raw()
        except BufferError:
            _stats["in_band_noncontiguous"] += 1
            return True
        threshold = _threshold
        if threshold is None or view.nbytes < threshold:
            _stats["in_band_small"] += 1
            return True
        if view.readonly:
            _stats["in_band_readonly"] += 1
            return True
        exporter = view.obj
        if not _exporter_allowed(exporter):
            _stats["in_band_type"] += 1
            return True
        try:
            with _lock:
                region = self._place(view, exporter)
        except (OSError, ValueError, MemoryError, BufferError):
            region = None
        if region is None:
            _stats["in_band_error"] += 1
            return True
        self.regions.append(region)
        if region[0] not in self.memfds:
            self.memfds.append(region[0])
        return False

    def _room_for(self, memfd):
        return memfd in self.memfds or len(self.memfds) < (
            MAX_MEMFDS_PER_START - (self.new is None))

    def _place(self, view, exporter):
        _evict()
        address = _address(view)
        nbytes = view.nbytes
        found = _in_received(address, nbytes) if _received else None
        if found is not None and self._room_for(found[0]):
            _stats["reused_received"] += 1
            return found[0], found[1], nbytes
        key = (address, nbytes)
        entry = _cache.get(key)
        owner = _owner(exporter)
        if entry is not None:
            if (entry.ref is not None and entry.ref() is owner
                    and self._room_for(entry.memfd)
                    and _still_equal(entry, address)):
                _cache.move_to_end(key)
                return entry.memfd, entry.offset, nbytes
            if _cache.get(key) is entry:
                _drop(entry)
        return self._copy(view, owner, address, nbytes)

    def _copy(self, view, owner, address, nbytes):
        if self.new is None:
            if len(self.memfds) >= MAX_MEMFDS_PER_START:
                return None
            self.new = _Memfd(os.memfd_create("warmfork-buffer", _MFD_FLAGS))
        offset = (self.new.size + PAGE - 1) & ~(PAGE - 1)
        _write_all(self.new.fd, view, offset)
        self.new.size = offset + nbytes
        _stats["copied"] += 1
        _stats["copied_bytes"] += nbytes
        entry = self._entry_for(owner, address, nbytes, offset)
        if entry is not None:
            self.pending.append(entry)
        return self.new, offset, nbytes

    def _entry_for(self, owner, address, nbytes, offset):
        """A cache entry for a buffer just copied, or None when it cannot
        be reused (owner without weak references, too big).  It keeps
        a read-only map of the copy: to compare, and so that the pages a
        child reads count as shared with us, as under fork."""
        if nbytes > _limit():
            return None
        entry = _Entry((address, nbytes), self.new, offset, nbytes)
        try:
            entry.ref = weakref.ref(owner,
                                    _on_owner_death(weakref.ref(entry)))
        except TypeError:
            return None
        try:
            entry.view = _Map(self.new.fd, offset, nbytes)
        except OSError:
            return None
        return entry

    def seal(self):
        """Seal this start's memfd; then its copies may be reused."""
        global _cache_bytes
        if self.new is None:
            return
        fcntl.fcntl(self.new.fd, F_ADD_SEALS, SEALS)
        with _lock:
            for entry in self.pending:
                old = _cache.get(entry.key)
                if old is not None and old is not entry:
                    _drop(old)
                if entry.ref() is None:
                    continue            # died while we sealed
                _cache[entry.key] = entry
                _cache_bytes += entry.nbytes
            self.pending = []
            _evict()

    def abandon(self):
        self.pending = []


class Sent:
    """What a start must keep open until its START frame has gone."""
    __slots__ = ("memfds",)

    def __init__(self, memfds):
        self.memfds = memfds


def _pickler_class(with_numpy):
    from multiprocessing import reduction
    from . import stdlib_compat

    class BufferPickler(reduction.ForkingPickler):
        def __init__(self, file, callback):
            pickle.Pickler.__init__(self, file, 5, buffer_callback=callback)
            self.dispatch_table = stdlib_compat.forking_dispatch_table()

    if not with_numpy:
        return BufferPickler

    ndarray = sys.modules["numpy"].ndarray
    default = pickle.DEFAULT_PROTOCOL

    class NumpyBufferPickler(BufferPickler):
        def reducer_override(self, obj):
            # An array that will not go out of band pickles as under spawn
            # (protocol 5 would make a read-only one read-only there).
            if type(obj) is ndarray:
                threshold = _threshold
                if threshold is None or obj.nbytes < threshold or not obj.flags.writeable or not (
                        obj.flags.c_contiguous or obj.flags.f_contiguous):
                    return obj.__reduce_ex__(default)
            return NotImplemented

    return NumpyBufferPickler


_picklers: dict = {}


def dump(process_obj, popen):
    """Pickle ``process_obj`` for a child; big buffers go as memfds that
    ``popen.duplicate_for_child`` passes.  Returns (bytes, Sent or None):
    what follows the preparation data in the child's data pipe (the table
    of buffers, if any, then the process object), and what must stay open
    until the START is sent.  Call with the spawning popen set, as for
    reduction.dump."""
    from multiprocessing import reduction

    if _threshold is None:
        out = io.BytesIO()
        reduction.dump(process_obj, out)
        return out.getvalue(), None
    with_numpy = "numpy" in sys.modules
    cls = _picklers.get(with_numpy)
    if cls is None:
        cls = _picklers[with_numpy] = _pickler_class(with_numpy)
    fds_before = len(getattr(popen, "_fds", ()))
    collector = _Collector()
    out = io.BytesIO()
    try:
        cls(out, collector.callback).dump(process_obj)
    except BaseException:
        collector.abandon()
        raise
    try:
        collector.seal()
    except OSError:
        # Sealing failed after the pickle named its buffers: start over,
        # all in band.  (The process object's own fds are passed again.)
        collector.abandon()
        del popen._fds[fds_before:]
        _stats["in_band_error"] += len(collector.regions)
        out = io.BytesIO()
        reduction.dump(process_obj, out)
        return out.getvalue(), None
    if not collector.regions:
        return out.getvalue(), None
    index = {m: popen.duplicate_for_child(m.fd) for m in collector.memfds}
    table = (MARK, tuple((index[m], off, n)
                         for m, off, n in collector.regions))
    return pickle.dumps(table) + out.getvalue(), Sent(collector.memfds)


# -- the child's side -----------------------------------------------------

def is_table(obj):
    """Is obj the buffer table that precedes a process object?"""
    return type(obj) is tuple and len(obj) == 2 and obj[0] == MARK


def _map(fd, offset, length):
    flags = dict(flags=mmap.MAP_PRIVATE,
                 prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
    if sys.version_info >= (3, 13):
        flags["trackfd"] = False     # no dup of the fd per mapping
    return mmap.mmap(fd, length, **flags)


def receive(table):
    """Map the memfds of a start's table: the ``buffers`` for pickle.load,
    in order.  Each memfd is mapped once, copy-on-write."""
    from . import child

    fds = child.get_inherited_fds()
    spans = {}
    for index, offset, nbytes in table[1]:
        lo, hi = spans.get(index, (offset, offset + nbytes))
        spans[index] = (min(lo, offset), max(hi, offset + nbytes))
    maps = {}
    for index, (lo, hi) in spans.items():
        memfd = _Memfd(fds[index])
        base = lo & ~(PAGE - 1)
        try:
            mm = _map(memfd.fd, base, hi - base)
        except (OSError, ValueError):
            # No address space for it (vm.max_map_count, RLIMIT_AS): read
            # it instead, as an in-band pickle would have.
            mm = bytearray(hi - base)
            os.preadv(memfd.fd, [mm], base)
        else:
            _remember(mm, memfd, base)
        maps[index] = (mm, base)
    out = []
    for index, offset, nbytes in table[1]:
        mm, base = maps[index]
        out.append(memoryview(mm)[offset - base:offset - base + nbytes])
    return out


def _remember(mm, memfd, base):
    """Note a mapping we received, so that its unwritten buffers can be
    passed on to our own children without a copy."""
    key = id(mm)
    _received[key] = (_address(mm), len(mm), memfd, base)
    weakref.finalize(mm, _received.pop, key, None)


def _after_fork_in_child():
    """A fork of this process: its userfaultfd and pagemap would be the
    parent's.  Forget them, and every copy (their tracking was the
    parent's); mappings received stay valid."""
    global _lock, _tracker, _pagemap, _cache_bytes
    _lock = threading.RLock()
    if _tracker is not None:
        _tracker.close()
    _tracker = None
    if _pagemap is not None and _pagemap >= 0:
        _close_quietly(_pagemap)
    _pagemap = None
    for entry in _cache.values():
        entry.tracked = False
    _cache.clear()
    _cache_bytes = 0
    del _dead[:]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
