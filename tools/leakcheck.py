#!/usr/bin/env python3
"""Leak check for named semaphores and shared memory (issue 3).

For each start method (default: the stdlib's forkserver, then warmfork) --
same run, same interpreter -- this runs a few scenarios, each in a fresh
parent process (a script generated into a temp directory), and reports:

  processes     the process tree rooted at the parent while a ctx.Lock() and
                a SharedMemory(create=True, size=4096) are in use by the
                parent and by 2 live children: total (parent / server(s) /
                resource-tracker process / children), plus "+N idle" for
                children the server forked that the parent did not start
                (pre-forked spares) and "+N other" for anything else;
  at kill       names created by the scenario that exist in /dev/shm right
                after the SIGKILL(s) -- what would stay behind for ever
                without a tracker (or a clean exit);
  after         of those, the names still in /dev/shm once every process of
                the run has exited, the server(s) and the tracker included
                (we poll /proc for them, up to --timeout seconds);
  too early     (scenarios a, b) names that vanished while a process that
                uses them was still alive -- must be 0;
  warned        names counted in the "resource_tracker: There appear to be
                N leaked ..." lines on the run's stderr;
  exit s        seconds from the kill (scenario 0: from the go-ahead) to
                the exit of the last process of the tree (the server/tracker
                doing their clean-up).

Scenarios (every process holds its names when the kill comes; each child
uses the parent's Lock and segment and creates a Lock and a segment of its
own):
  0  control: nobody is killed; children unlink their own names and return,
     the parent joins them, unlinks its own and exits -- nothing to warn of;
  a  the 2 children are SIGKILLed; for 0.5 s we watch that the parent's
     names stay; then the parent joins them, closes and unlinks its own
     segment and exits normally;
  b  the parent is SIGKILLed; the children notice (parent_process().join()),
     stay alive ~1.5 s more (during which we watch /dev/shm for names
     unlinked too early), then return from their target normally: their own
     Lock is unlinked by its finalizer, their own segment is left behind;
  c  the whole tree but the server/tracker (parent and children) is stopped
     with SIGSTOP and then SIGKILLed at once.

Process roles come from /proc/PID/cmdline: "resource_tracker" = tracker;
"forkserver" or "warmfork.server" = server.  Children are forked by the
server and so carry its cmdline too: a server-looking process whose parent
is a server is a child; the pids the parent reports are used as a cross-check.

Names created by the scenario are recorded by the processes that create
them (one JSON file each, in the run's temp directory), so names that other
programs create in /dev/shm meanwhile are not counted.  Whatever the
scenario leaked is unlinked after it is counted ("cleaned" in --json).

Run it with an interpreter that can import warmfork, e.g.
    python3 -m venv /tmp/leak-venv && /tmp/leak-venv/bin/pip install .
    /tmp/leak-venv/bin/python tools/leakcheck.py [--json out.json]
Exit status: 0 if warmfork leaked nothing, unlinked nothing too early and
shows no separate tracker process; 1 otherwise; 2 if a run failed.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SHM_DIR = "/dev/shm"
METHODS = ("forkserver", "warmfork")
SCENARIOS = {
    "0": "control: nobody killed, all clean up",
    "a": "children SIGKILLed, parent exits normally",
    "b": "parent SIGKILLed, children exit ~1.5 s later",
    "c": "parent + children SIGKILLed at once",
}
DEFAULT_SCENARIOS = ("0", "a", "b", "c")
CHILD_LINGER = 1.5        # scenario b: children live this long after the parent
PARENT_WATCH = 0.5        # scenario a: watch the parent's names this long

# The scenario parent.  Children re-import it as __mp_main__, hence the guard.
SCENARIO_SCRIPT = r'''
import json, os, sys, time
import multiprocessing as mp
from multiprocessing import shared_memory

SAFETY = 60     # nobody we start outlives this, even if leakcheck dies


def record(workdir, role, names):
    path = os.path.join(workdir, "names-%s-%d.json" % (role, os.getpid()))
    with open(path + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "role": role, "names": names}, f)
    os.rename(path + ".tmp", path)


def names_of(lock, shm):
    return ["sem." + lock._semlock.name.lstrip("/"), shm.name.lstrip("/")]


def child(workdir, method, scenario, lock, shm_name, linger):
    # Use the parent's names ...
    theirs = shared_memory.SharedMemory(name=shm_name)
    with lock:
        theirs.buf[1] += 1
    # ... and create and hold names of our own.
    own_lock = mp.get_context(method).Lock()
    own_shm = shared_memory.SharedMemory(create=True, size=4096)
    own_lock.acquire()
    own_shm.buf[0] = 1
    record(workdir, "child", names_of(own_lock, own_shm))
    if scenario == "0":
        wait_for(lambda: os.path.exists(os.path.join(workdir, "go")), SAFETY)
        own_lock.release()
        own_shm.close()
        own_shm.unlink()
        theirs.close()
        return              # own_lock's finalizer unlinks it
    if scenario == "b":
        mp.parent_process().join(SAFETY)
        time.sleep(linger)
        # From here on we may unlink our own names: tell the watcher.
        open(os.path.join(workdir, "leaving-%d" % os.getpid()), "w").close()
        # Return normally: own_lock's finalizer unlinks it; own_shm is only
        # closed, never unlinked -- left for the tracker.
        own_shm.close()
        theirs.close()
        return
    time.sleep(SAFETY)


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("leakcheck scenario: timed out")
        time.sleep(0.01)


if __name__ == "__main__":
    method, scenario, workdir, order, api = sys.argv[1:6]
    linger = float(sys.argv[6])
    if api == "set_start_method":
        mp.set_start_method(method)
        ctx = mp.get_context()
    else:
        ctx = mp.get_context(method)
    if order == "shm-first":
        shm = shared_memory.SharedMemory(create=True, size=4096)
        lock = ctx.Lock()
    else:
        lock = ctx.Lock()
        shm = shared_memory.SharedMemory(create=True, size=4096)
    record(workdir, "parent", names_of(lock, shm))
    procs = [ctx.Process(target=child, args=(workdir, method, scenario, lock,
                                             shm.name, linger))
             for _ in range(2)]
    for p in procs:
        p.start()
    wait_for(lambda: sum(n.startswith("names-child-") and n.endswith(".json")
                         for n in os.listdir(workdir)) >= 2)
    with lock:
        shm.buf[0] = 1
    with open(os.path.join(workdir, "ready.json.tmp"), "w") as f:
        json.dump({"parent": os.getpid(),
                   "children": [p.pid for p in procs]}, f)
    os.rename(os.path.join(workdir, "ready.json.tmp"),
              os.path.join(workdir, "ready.json"))
    go = os.path.join(workdir, "go")
    if scenario in ("0", "a"):
        wait_for(lambda: os.path.exists(go), SAFETY)
        for p in procs:
            p.join(SAFETY)
        shm.close()
        shm.unlink()
        sys.exit(0)
    time.sleep(SAFETY)          # b, c: we are SIGKILLed before this ends
'''

SEM_PREFIX = "sem."
WARN_RE = re.compile(r"There appear to be (\d+) leaked (\w+) objects")


# ---------------------------------------------------------------- /proc

def proc_stat(pid):
    """Return (state, ppid, starttime) of pid, or None if there is none."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8",
                                                        "replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


class Proc:
    """A process we saw, identified by pid and start time (no pid reuse)."""

    def __init__(self, pid, ppid, start, cmd, role=None):
        self.pid, self.ppid, self.start, self.cmd = pid, ppid, start, cmd
        self.role = role

    def alive(self):
        st = proc_stat(self.pid)
        return st is not None and st[2] == self.start and st[0] not in "ZX"

    def as_dict(self):
        return {"pid": self.pid, "ppid": self.ppid, "role": self.role,
                "cmdline": self.cmd}


def process_tree(root):
    """Return [Proc] for root and all its descendants."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st[0] not in "ZX":
                table[int(entry)] = st
    kids = {}
    for pid, (_, ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    if root not in table:
        return []
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(Proc(pid, table[pid][1], table[pid][2], cmdline(pid)))
        todo.extend(kids.get(pid, ()))
    return out


def looks_like_server(cmd):
    return "forkserver" in cmd or "warmfork.server" in cmd


def classify(procs, root, reported_children):
    """Give each Proc a role; return {role: count} and a list of notes."""
    by_pid = {p.pid: p for p in procs}
    notes = []
    for p in procs:
        parent = by_pid.get(p.ppid)
        if p.pid == root:
            p.role = "parent"
        elif "resource_tracker" in p.cmd:
            p.role = "tracker"
        elif looks_like_server(p.cmd):
            # A child forked by the server carries the server's cmdline.
            if parent is not None and looks_like_server(parent.cmd) \
                    and parent.pid != root:
                p.role = "child"
            else:
                p.role = "server"
        else:
            p.role = "child" if p.ppid != root else "other"
        if p.role == "child" and p.pid not in reported_children:
            # Forked by the server, but not started by the parent: an idle
            # pre-forked child (DESIGN.md section 1), or something else.
            p.role = "idle" if looks_like_server(p.cmd) else "other"
            if p.role == "other":
                notes.append("pid %d is in the tree but not a child the "
                             "parent started: %r" % (p.pid, p.cmd))
    missing = set(reported_children) - {p.pid for p in procs
                                         if p.role == "child"}
    if missing:
        notes.append("children %s not classified as children"
                     % sorted(missing))
    counts = {role: 0 for role in ("parent", "server", "tracker", "child",
                                   "idle", "other")}
    for p in procs:
        counts[p.role] += 1
    counts["total"] = len(procs)
    return counts, notes


# ---------------------------------------------------------------- /dev/shm

def shm_listing():
    try:
        return set(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return set()


def unlink_name(fname):
    try:
        os.unlink(os.path.join(SHM_DIR, fname))
        return True
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- one run

class RunFailed(Exception):
    pass


def wait_until(predicate, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def read_records(workdir):
    """Return {fname: {"role", "pid"}} for every name the scenario made."""
    names = {}
    for entry in sorted(os.listdir(workdir)):
        if entry.startswith("names-") and entry.endswith(".json"):
            with open(os.path.join(workdir, entry)) as f:
                rec = json.load(f)
            for fname in rec["names"]:
                names[fname] = {"role": rec["role"], "pid": rec["pid"]}
    return names


def users_of(names, parent, children):
    """Who uses each name: a child's own names are its; the parent's, all."""
    users = {}
    for fname, rec in names.items():
        if rec["role"] == "parent":
            users[fname] = [parent] + children
        else:
            users[fname] = [c for c in children if c.pid == rec["pid"]]
    return users


def watch_early(workdir, names, users, early, kill_time, keep_going,
                step=0.02, limit=120):
    """While keep_going(): note names gone while one of their users lives.

    A user counts only if, after the listing was taken, it is still alive
    and has not announced that it is leaving (a child in scenario b writes
    leaving-PID before it returns and its Lock's finalizer unlinks it).
    """
    def in_use(u):
        return u.alive() and not os.path.exists(
            os.path.join(workdir, "leaving-%d" % u.pid))

    samples = 0
    deadline = time.monotonic() + limit
    while keep_going() and time.monotonic() < deadline:
        listing = shm_listing()
        samples += 1
        for fname in set(names) - listing:
            live = [u.pid for u in users[fname] if in_use(u)]
            if live and fname not in early:
                early[fname] = {
                    "seconds_after_kill": round(time.monotonic() - kill_time,
                                                3),
                    "live_users": live, "created_by": names[fname]}
        time.sleep(step)
    return samples


def run_one(args, method, scenario, script, base_dir):
    workdir = tempfile.mkdtemp(prefix="%s-%s-" % (method, scenario),
                               dir=base_dir)
    result = {"method": method, "scenario": scenario,
              "description": SCENARIOS[scenario], "workdir": workdir,
              "notes": []}
    before = shm_listing()
    out_path = os.path.join(workdir, "stdout.txt")
    err_path = os.path.join(workdir, "stderr.txt")
    cmd = [args.python, script, method, scenario, workdir, args.order,
           args.api, str(CHILD_LINGER)]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        popen = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=err,
                                 stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    tree = []
    try:
        ready_path = os.path.join(workdir, "ready.json")
        if not wait_until(lambda: os.path.exists(ready_path)
                          or popen.poll() is not None, args.timeout):
            raise RunFailed("the scenario parent did not get ready in %ss"
                            % args.timeout)
        if not os.path.exists(ready_path):
            raise RunFailed("the scenario parent exited with %s before it "
                            "was ready" % popen.returncode)
        with open(ready_path) as f:
            ready = json.load(f)

        # -- census while the parent and 2 children hold the names
        tree = process_tree(ready["parent"])
        counts, notes = classify(tree, ready["parent"], ready["children"])
        result["processes"] = counts
        result["tree"] = [p.as_dict() for p in tree]
        result["notes"] += notes
        names = read_records(workdir)
        result["names"] = names
        listing = shm_listing()
        result["created"] = len(names)
        result["missing_at_ready"] = sorted(set(names) - listing)
        by_pid = {p.pid: p for p in tree}
        parent = by_pid.get(ready["parent"])
        children = [by_pid[pid] for pid in ready["children"] if pid in by_pid]
        if parent is None or len(children) != 2:
            raise RunFailed("could not find the parent and 2 children in "
                            "the tree: %s" % result["tree"])
        helpers = [p for p in tree if p.role in ("server", "tracker")]
        users = users_of(names, parent, children)

        # -- the kill
        killed = []
        early = {}
        if scenario == "a":
            killed = children
            for c in children:
                os.kill(c.pid, signal.SIGKILL)
            kill_time = time.monotonic()
            result["at_kill"] = sorted(set(names) & shm_listing())
            wait_until(lambda: not any(c.alive() for c in children), 10)
            # The parent still uses its names: none may go meanwhile.
            watch_early(workdir, names, users, early, kill_time,
                        lambda: time.monotonic() - kill_time < PARENT_WATCH)
            open(os.path.join(workdir, "go"), "w").close()
            popen.wait(args.timeout)
        elif scenario == "0":
            open(os.path.join(workdir, "go"), "w").close()
            kill_time = time.monotonic()
            result["at_kill"] = []
            popen.wait(args.timeout)
        elif scenario == "b":
            killed = [parent]
            os.kill(parent.pid, signal.SIGKILL)
            kill_time = time.monotonic()
            result["at_kill"] = sorted(set(names) & shm_listing())
            popen.wait(args.timeout)
            deadline = time.monotonic() + CHILD_LINGER + args.timeout
            result["early_samples"] = watch_early(
                workdir, names, users, early, kill_time,
                lambda: any(c.alive() for c in children))
            if time.monotonic() > deadline:
                raise RunFailed("children did not exit after the "
                                "parent's death")
        elif scenario == "c":
            killed = [parent] + children
            for p in killed:
                os.kill(p.pid, signal.SIGSTOP)
            for p in killed:
                os.kill(p.pid, signal.SIGKILL)
            kill_time = time.monotonic()
            result["at_kill"] = sorted(set(names) & shm_listing())
            popen.wait(args.timeout)
        result["killed"] = [p.pid for p in killed]
        result["too_early"] = early

        # -- wait for the server(s) and the tracker to finish
        everyone = [p for p in tree if p.pid != parent.pid]
        done = wait_until(lambda: not any(p.alive() for p in everyone),
                          args.timeout, step=0.02)
        result["exit_seconds"] = round(time.monotonic() - kill_time, 2)
        still = [p.as_dict() for p in everyone if p.alive()]
        result["still_alive"] = still
        if not done:
            result["notes"].append("still alive %ss after the kill: %s"
                                   % (args.timeout, still))
        result["helpers"] = [p.as_dict() for p in helpers]
        after_listing = shm_listing()
        result["after"] = sorted(set(names) & after_listing)
        result["unattributed_new_names"] = sorted(
            after_listing - before - set(names))
    finally:
        # Whatever is left of this run's tree goes, by pid.
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        for p in tree:
            if p.alive():
                result["notes"].append("killed leftover %s pid %d"
                                       % (p.role, p.pid))
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        recorded = read_records(workdir) if os.path.isdir(workdir) else {}
        result["cleaned"] = sorted(f for f in recorded if unlink_name(f))
        with open(err_path, "rb") as f:
            stderr = f.read().decode("utf-8", "replace")
        result["stderr"] = stderr
        result["parent_exitcode"] = popen.returncode
    warned = {}
    for n, kind in WARN_RE.findall(stderr):
        warned[kind] = warned.get(kind, 0) + int(n)
    result["warned"] = warned
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        result["workdir"] = None
    return result


# ---------------------------------------------------------------- report

def fmt_procs(c):
    if not c:
        return "-"
    s = "%d (%d/%d/%d/%d" % (c["total"], c["parent"], c["server"],
                             c["tracker"], c["child"])
    if c["idle"]:
        s += " +%d idle" % c["idle"]
    if c["other"]:
        s += " +%d other" % c["other"]
    return s + ")"


def print_table(results, file=sys.stdout):
    head = ("method", "scenario", "processes (par/srv/trk/chl)", "created",
            "at kill", "after", "too early", "warned", "exit s")
    rows = []
    for r in results:
        if "error" in r:
            rows.append((r["method"], r["scenario"], "ERROR: " + r["error"],
                         "", "", "", "", "", ""))
            continue
        early = ("%d" % len(r["too_early"])
                 if r["scenario"] in ("a", "b") else "-")
        rows.append((r["method"], "%s: %s" % (r["scenario"], r["description"]),
                     fmt_procs(r.get("processes")), str(r["created"]),
                     (str(len(r["at_kill"])) if r["scenario"] != "0" else "-"),
                     str(len(r["after"])), early,
                     str(sum(r["warned"].values())),
                     "%.2f" % r["exit_seconds"]))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = "  ".join("%-*s" % (w, h) for w, h in zip(widths, head))
    print(line, file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in rows:
        print("  ".join("%-*s" % (w, x) for w, x in zip(widths, row)).rstrip(),
              file=file)


def verdict(results):
    """Return a list of problems found for warmfork."""
    problems = []
    for r in results:
        if r["method"] != "warmfork":
            continue
        tag = "warmfork/%s" % r["scenario"]
        if "error" in r:
            problems.append("%s: run failed: %s" % (tag, r["error"]))
            continue
        if r["after"]:
            problems.append("%s: leaked %s" % (tag, r["after"]))
        if r["too_early"]:
            problems.append("%s: unlinked too early %s"
                            % (tag, r["too_early"]))
        if r["processes"]["tracker"]:
            problems.append("%s: a separate resource tracker process ran"
                            % tag)
        if r["still_alive"]:
            problems.append("%s: still alive after %ss: %s"
                            % (tag, "timeout", r["still_alive"]))
        if r["missing_at_ready"]:
            problems.append("%s: names gone before the kill: %s"
                            % (tag, r["missing_at_ready"]))
    return problems


def git_state():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"],
                              capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return {"head": head, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the scenario parents (default: "
                         "this one); it must be able to import warmfork")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated start methods (default: %(default)s)")
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help="comma-separated, from 0,a,b,c "
                         "(default: %(default)s)")
    ap.add_argument("--order", choices=("lock-first", "shm-first"),
                    default="lock-first",
                    help="what the parent creates first (default: "
                         "%(default)s); shm-first shows whether a "
                         "SharedMemory made before any Lock or start is "
                         "tracked by the server")
    ap.add_argument("--api", choices=("get_context", "set_start_method"),
                    default="get_context",
                    help="how the parent picks the method: ctx = "
                         "get_context(method) (default), or "
                         "set_start_method(method) then get_context()")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait for readiness and for the "
                         "server/tracker to exit (default: %(default)s)")
    ap.add_argument("--json", metavar="PATH", help="write all results here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the per-run temp directories (stderr etc.)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print each run's stderr and process tree")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error("unknown scenario %r" % s)

    probe = subprocess.run(
        [args.python, "-c",
         "import sys, multiprocessing as mp\n"
         "try:\n import warmfork; w = warmfork.__file__\n"
         "except ImportError as e:\n w = None\n"
         "print(sys.version.split()[0]); print(w)\n"
         "for m in sys.argv[1:]: mp.get_context(m)"] + methods,
        capture_output=True, text=True)
    if probe.returncode != 0:
        print("leakcheck: %s cannot use the methods %s:\n%s"
              % (args.python, methods, probe.stderr), file=sys.stderr)
        return 2
    py_version, warmfork_file = probe.stdout.split("\n")[:2]

    base_dir = tempfile.mkdtemp(prefix="leakcheck-")
    script = os.path.join(base_dir, "lc_scenario.py")
    with open(script, "w") as f:
        f.write(SCENARIO_SCRIPT)
    started = time.monotonic()
    results = []
    failed = False
    try:
        for method in methods:
            for scenario in scenarios:
                try:
                    r = run_one(args, method, scenario, script, base_dir)
                except (RunFailed, subprocess.TimeoutExpired, OSError) as e:
                    failed = True
                    r = {"method": method, "scenario": scenario,
                         "description": SCENARIOS[scenario],
                         "error": str(e)}
                results.append(r)
                if args.verbose:
                    print("--- %s/%s" % (method, scenario))
                    for p in r.get("tree", ()):
                        print("   %-7s %6d <- %-6d %s" % (
                            p["role"], p["pid"], p["ppid"], p["cmdline"]))
                    if r.get("stderr"):
                        print("   stderr:\n" + "\n".join(
                            "     " + l for l in r["stderr"].splitlines()))
    finally:
        if not args.keep:
            shutil.rmtree(base_dir, ignore_errors=True)

    print("leakcheck: python %s (%s), warmfork from %s; parent: %s, %s"
          % (py_version, args.python, warmfork_file, args.api, args.order))
    print()
    print_table(results)
    print()
    print("processes: total (parent/server/tracker/children [+idle "
          "pre-forked]) while the parent and 2 children use a Lock and a "
          "SharedMemory.")
    print("created: names the scenario made; at kill: of those, in /dev/shm "
          "right after the SIGKILL(s); after: still there once every process "
          "(server/tracker too) exited; too early: vanished while a user was "
          "alive (a: the parent's names, b: all); warned: names in the tracker's 'leaked' warnings; "
          "exit s: kill -> last process gone.")
    cleaned = [(r["method"], r["scenario"], len(r["cleaned"]))
               for r in results if r.get("cleaned")]
    if cleaned:
        print("leakcheck unlinked what was left: " + ", ".join(
            "%s/%s %d" % c for c in cleaned))
    others = sum(len(r.get("unattributed_new_names", ())) for r in results)
    if others:
        print("note: %d new /dev/shm names not made by the scenarios "
              "appeared meanwhile (other programs?); left alone." % others)
    for r in results:
        for note in r.get("notes", ()):
            print("note %s/%s: %s" % (r["method"], r["scenario"], note))
    problems = verdict(results) if "warmfork" in methods else []
    for p in problems:
        print("PROBLEM " + p)
    print("(%.1f s)" % (time.monotonic() - started))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": args.python, "python_version": py_version,
                       "warmfork": warmfork_file, "git": git_state(),
                       "order": args.order, "api": args.api,
                       "results": results,
                       "problems": problems}, f, indent=2)
    if failed:
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
