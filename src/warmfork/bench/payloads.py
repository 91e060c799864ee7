"""Module-level functions that benchmark children run.

spawn, forkserver and warmfork pickle a target by reference, so these
must be importable.  Cases that only need a byte use the bound method
``Connection.send_bytes`` instead, so that a child imports nothing from
this package.
"""

__all__ = ["uss_kb", "report_uss", "touch_numpy", "report_faults", "stamp",
           "send_byte", "report_uss_after_reading"]


def uss_kb(pid="self"):
    """Return the unique set size (private memory) of pid, in kB."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:",
                                "Private_Hugetlb:")):
                total += int(line.split()[1])
    return total


def touch_numpy():
    """Do a little numpy work, as a child of a numpy program would."""
    import numpy

    return float(numpy.arange(1000, dtype=numpy.float64).sum())


def report_uss(conn):
    """Use numpy, then send this process's USS in kB through conn."""
    touch_numpy()
    conn.send(uss_kb())
    conn.close()


def stamp(conn):
    """Send the child's time.perf_counter_ns() at target entry through conn."""
    import time

    conn.send_bytes(time.perf_counter_ns().to_bytes(8, "little"))


def report_faults(conn):
    """Send the page faults this child took before its target ran.

    A warmfork child from the warm pool counts from its hand-off
    (warmfork.child.faults_at_start): what the idle child did before
    (warm-up, pre-faulting) is off the start's critical path.
    """
    import resource
    import sys

    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    child = sys.modules.get("warmfork.child")
    start = getattr(child, "faults_at_start", None) if child else None
    conn.send(faults - (start or 0))
    conn.close()


def send_byte(conn, arg):
    """The start case's target, given an argument it does not touch."""
    conn.send_bytes(b"x")


def report_uss_after_reading(conn, arr):
    """Read all of arr (as a worker reads its dataset), then send this
    process's USS in kB."""
    float(arr.sum())
    conn.send(uss_kb())
    conn.close()
