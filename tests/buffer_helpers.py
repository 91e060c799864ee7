"""Targets and types for test_buffers.py: children import them by name."""
import os
import pickle


def page_kinds(view):
    """Count the pages of a buffer by what backs them here, from
    /proc/self/pagemap: "file" (still the memfd's page, shared), "anon"
    (a private copy: written), "absent" (not faulted in yet)."""
    import ctypes
    page = os.sysconf("SC_PAGE_SIZE")
    mv = memoryview(view).cast("B")
    address = ctypes.addressof(ctypes.c_char.from_buffer(mv))
    first, last = address // page, (address + mv.nbytes - 1) // page
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        data = os.pread(fd, (last - first + 1) * 8, first * 8)
    finally:
        os.close(fd)
    kinds = {"file": 0, "anon": 0, "absent": 0}
    for top in data[7::8]:
        if not top & 0xC0:
            kinds["absent"] += 1
        elif top & 0x20 and top & 0x80:
            kinds["file"] += 1
        else:
            kinds["anon"] += 1
    return kinds


def describe(arr):
    """What a child sees of an array it was given."""
    import hashlib
    import numpy
    return {"sum": complex(arr.sum()) if arr.dtype.kind == "c" else
            float(arr.sum()) if arr.dtype.names is None else
            hashlib.sha1(numpy.ascontiguousarray(arr).tobytes()).hexdigest(),
            "shape": arr.shape, "dtype": str(arr.dtype),
            "strides": arr.strides, "writeable": arr.flags.writeable,
            "owndata": arr.flags.owndata,
            "c": arr.flags.c_contiguous, "f": arr.flags.f_contiguous}


def report(conn, *arrays):
    conn.send([describe(a) for a in arrays])
    conn.close()


def report_and_write(conn, arr):
    """Read all of arr, report its pages, write one element, report again."""
    before = describe(arr)
    kinds_read = page_kinds(arr)
    arr[0] += 1
    kinds_written = page_kinds(arr)
    conn.send((before, kinds_read, kinds_written, float(arr[0])))
    conn.close()


def report_objects(conn, obj):
    conn.send(repr(obj))
    conn.close()


def report_identity(conn, pair):
    a, b = pair
    conn.send((a is b, describe(a)))
    conn.close()


def report_fds(conn, *arrays):
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass
    conn.send((fds, sum(float(a.sum()) for a in arrays)))
    conn.close()


def forward(conn, arr, write_first):
    """Start a grandchild with the array we were given; report what it
    saw and how our own buffers module sent it."""
    import multiprocessing as mp
    from warmfork import buffers
    if write_first:
        arr[-1] = -1.0
    ctx = mp.get_context("warmfork")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=report, args=(w, arr))
    p.start()
    w.close()
    seen = r.recv()
    p.join()
    conn.send((seen, buffers.stats(), p.exitcode))
    conn.close()


_stored = None


def store(arr):
    global _stored
    _stored = arr


def total(arr):
    return float(arr.sum())


def stored_sum(_):
    return float(_stored.sum()), os.getpid()


class Blob:
    """A bytearray that hands its bytes out of band (PEP 574's example)."""

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return Blob._rebuild, (pickle.PickleBuffer(self.data),)
        return Blob._rebuild, (bytearray(self.data),)

    @staticmethod
    def _rebuild(buf):
        with memoryview(buf) as m:
            return Blob(bytearray(m))

    def __repr__(self):
        import hashlib
        return "Blob(%d, %s)" % (len(self.data),
                                 hashlib.sha1(self.data).hexdigest())


class ExoticBlob(Blob):
    """Out-of-band bytes exported by a type we do not know (ctypes)."""

    def __reduce_ex__(self, protocol):
        import ctypes
        arr = (ctypes.c_char * len(self.data)).from_buffer_copy(self.data)
        return Blob._rebuild, (pickle.PickleBuffer(arr),)

