"""Module-level functions that benchmark children run.

spawn, forkserver and warmfork pickle a target by reference, so these
must be importable.  Cases that only need a byte use the bound method
``Connection.send_bytes`` instead, so that a child imports nothing from
this package.
"""

__all__ = ["uss_kb", "report_uss", "touch_numpy"]


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
