"""What /proc says about other processes: the one parser of /proc/PID/stat.

Tests and tools/ import it (tools put tests/ on sys.path). Everything here
reads /proc of the live system; nothing is cached.
"""
import collections
import os
import time

# The fields we use of proc(5)'s /proc/PID/stat.  `start` (clock ticks
# since boot) tells a pid from its reuse.
Stat = collections.namedtuple("Stat", "pid state ppid start")


def stat(pid):
    """Stat of pid, or None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    return Stat(pid, fields[0], int(fields[1]), int(fields[19]))


def all_stats():
    """Stat of every process that is running (zombies left out)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = stat(int(entry))
            if st is not None and st.state not in "ZX":
                out.append(st)
    return out


def alive(pid, start=None):
    """Whether pid runs and is no zombie; with start, whether it is still
    the same process (not a reuse of the pid)."""
    st = stat(pid)
    return (st is not None and st.state not in "ZX"
            and (start is None or st.start == start))


def wait_until(predicate, timeout=10.0):
    """Poll predicate until true or timeout; whether it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_gone(pid, timeout=30):
    """Wait until pid is gone or a zombie; whether it is."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def descendants(root):
    """Stat of root and of everything below it, root first."""
    table = {st.pid: st for st in all_stats()}
    kids = collections.defaultdict(list)
    for st in table.values():
        kids[st.ppid].append(st.pid)
    out, todo = [], [root] if root in table else []
    while todo:
        pid = todo.pop(0)
        out.append(table[pid])
        todo.extend(sorted(kids[pid]))
    return out


def cmdline(pid):
    """pid's command line, arguments joined by spaces ('' once it is gone)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def cwd(pid):
    """pid's working directory ('' once it is gone)."""
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return ""
