"""Process targets for test_reliability.py (children import them by name).

Kept out of helpers.py so that these tests touch no shared test module,
and small: a child imports this module in full.
"""
import os
import time


def append_pid(path):
    """Record that the target ran, and where: one line per run."""
    with open(path, "a") as f:
        f.write("%d\n" % os.getpid())


def flood_tracker(channel, count, seconds, conn):
    """Register ``count`` names on the tracker behind ``channel`` (a
    Connection wrapping the channel's write end), say so on ``conn``, then
    repeat the last record for ``seconds`` or until ``conn`` says stop."""
    fd = channel.fileno()
    # A long common prefix makes each name compare cost what it can.
    record = b"REGISTER:/wf-flood-" + b"x" * 100 + b"-%d:dummy\n"
    for i in range(count):
        os.write(fd, record % i)
    last = record % (count - 1)
    conn.send("flooding")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            os.write(fd, last)
        if conn.poll():
            break
    conn.close()
