#!/usr/bin/env python3
"""Soak and chaos run of the "warmfork" start method (issue 8).

Two phases, each in a fresh worker process (the parent under test), on the
drop-in context:

  soak   --starts starts from --threads threads: a mix of exit codes,
         exceptions, passed fds (a Connection the child answers on), named
         resources (a SharedMemory the child creates and unlinks, a Lock
         the parent passes) and kills (SIGKILL or SIGTERM soon after start);
  chaos  the same, while another thread SIGKILLs the server at random
         moments (--kill-every MIN,MAX seconds); the context replaces it.

Each child appends "token pid" to a marker file when its target runs, so
that every start can be checked:
  - a start that raised ran nothing (no marker);
  - a start that returned ran at most once, in the pid Process.pid gave
    (exactly once unless it was killed first);
  - its exit code is the expected one; in chaos, 255 is also right when a
    server was killed while the child lived (its code is unknowable, as
    under the stdlib), and so is 1 for a child whose segment could not be
    registered because its tracker, that server, was killed meanwhile;
  - a passed fd arrived (the child's answer is its token).
Around each phase it measures, after a settle: fds of the parent and of
the server, the server's RSS, and zombies under both (should be flat).
After the worker exits and its server with it, no /dev/shm name the run
created may be left.  In chaos, names registered with a server that was
killed are expected to leak (the replacement warns so): they are counted
apart and unlinked.  A killed server was also the parent's resource
tracker: a name registered before the replacement goes to a tracker the
stdlib client relaunches (counted: "stdlib tracker relaunches"); that is
the tracker-death semantics, and the "lock" kind (a Lock made in the
parent) is what exercises it (--chaos-skip lock leaves it out).

    python tools/soak.py                    # 20,000 starts, 8 threads
    python tools/soak.py --starts 500 --chaos-skip lock   # tests/test_soak.py
    python tools/soak.py --phases chaos --json out.json

Exit status: 0 when every check passed, 1 otherwise, 2 if a worker failed.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# What each start does, and how often (out of 20).
KINDS = (["exit"] * 8 + ["raise"] + ["fds"] * 4 + ["shm"] * 2 + ["lock"]
         + ["kill"] * 4)


# --- targets: run in the children -----------------------------------------

def _mark(marker, token, name=""):
    """One line per run of a target ("token pid"), and one per name it
    created ("token pid name")."""
    fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, ("%s %d %s\n" % (token, os.getpid(), name)).encode())
    finally:
        os.close(fd)


def t_exit(marker, token, code):
    _mark(marker, token)
    sys.exit(code)


def t_raise(marker, token):
    _mark(marker, token)
    raise RuntimeError("soak: an exception in the target (expected)")


def t_fds(marker, token, conn):
    _mark(marker, token)
    conn.send(token)
    conn.close()


def t_shm(marker, token, name):
    from multiprocessing import shared_memory
    _mark(marker, token)
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    _mark(marker, token, name)
    shm.buf[0] = 1
    shm.close()
    shm.unlink()


def t_lock(marker, token, lock):
    _mark(marker, token)
    with lock:
        pass


def t_sleep(marker, token, name):
    # Killed while it holds a segment: the tracker unlinks it later.
    from multiprocessing import shared_memory
    _mark(marker, token)
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    _mark(marker, token, name)
    time.sleep(30)
    shm.close()


# --- the worker: the parent under test ------------------------------------

def _server():
    from warmfork.popen_warmfork import default_server
    return default_server()


def _zombies_under(pids):
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(") ", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) in pids:
                count += 1
    return count


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def _measure(settle=1.0):
    """Fds, RSS and zombies once the dust settled: every child joined,
    the finalizers run, the pool refilled."""
    import gc
    gc.collect()
    time.sleep(settle)
    # A start on the current server: a dead one is noticed and replaced
    # (and reaped) now, not after the measure.
    _start_one("settle", None, "exit", 0, None)
    time.sleep(settle)
    server = _server()
    return {"server_pid": server.pid,
            "parent_fds": len(os.listdir("/proc/self/fd")),
            "server_fds": len(os.listdir("/proc/%d/fd" % server.pid)),
            "server_rss_kb": _rss_kb(server.pid),
            "zombies": _zombies_under({os.getpid(), server.pid})}


_ctx = None


def _start_one(token, marker, kind, arg, run_id, rng=random):
    """One start of ``kind``; return its record."""
    import multiprocessing as mp
    rec = {"token": token, "kind": kind, "pid": None, "error": None,
           "exitcode": None, "t0": time.monotonic()}
    marker = marker or os.devnull
    mine = theirs = lock = None
    if kind == "exit":
        target, args, rec["expected"] = t_exit, (arg,), arg
    elif kind == "raise":
        target, args, rec["expected"] = t_raise, (), 1
    elif kind == "fds":
        mine, theirs = _ctx.Pipe(duplex=False)
        target, args, rec["expected"] = t_fds, (theirs,), 0
    elif kind == "shm":
        target, args = t_shm, ("wfsoak-%s-%s" % (run_id, token),)
        rec["expected"] = 0
    elif kind == "lock":
        lock = _ctx.Lock()
        target, args, rec["expected"] = t_lock, (lock,), 0
    else:
        target, args = t_sleep, ("wfsoak-%s-%s" % (run_id, token),)
        sig = signal.SIGKILL if arg % 2 else signal.SIGTERM
        rec["expected"] = -sig
    p = _ctx.Process(target=target, args=(marker, token) + args)
    try:
        p.start()
    except Exception as e:      # a start that could not be guaranteed
        rec["error"] = "%s: %s" % (type(e).__name__, e)
        rec["t1"] = time.monotonic()
        for conn in (mine, theirs):
            if conn is not None:
                conn.close()
        return rec
    rec["pid"] = p.pid
    if theirs is not None:
        theirs.close()
    if kind == "kill":
        time.sleep(rng.random() * 0.005)
        os.kill(p.pid, sig)
    if mine is not None:
        try:
            rec["answer"] = mine.recv() if mine.poll(30) else None
        except EOFError:
            rec["answer"] = None
        mine.close()
    p.join(60)
    rec["exitcode"] = p.exitcode
    rec["t1"] = time.monotonic()
    if p.exitcode is None:
        p.kill()
        p.join(10)
    p.close()
    return rec


def worker(args):
    import multiprocessing as mp
    import warnings
    import warmfork
    from warmfork import client

    global _ctx
    _ctx = mp.get_context("warmfork")
    warmfork.set_pool_size(args.pool_size)
    replacements = []

    def count_warning(message, category, *rest):
        if issubclass(category, RuntimeWarning) and "died" in str(message):
            replacements.append(str(message))
        else:
            sys.stderr.write("warning: %s\n" % message)
    warnings.showwarning = count_warning

    _ctx.Lock()                         # our server is the tracker
    for _ in range(20):
        _start_one("warm", None, "exit", 0, args.run_id)
    before = _measure()

    kills, stop = [], threading.Event()

    def killer():
        rng = random.Random(args.seed + 1)
        lo, hi = args.kill_every
        while not stop.wait(rng.uniform(lo, hi)):
            servers = list(client._servers.values())
            for server in servers:
                try:
                    os.kill(server.pid, signal.SIGKILL)
                    kills.append((time.monotonic(), server.pid))
                except ProcessLookupError:
                    pass

    records, lock = [], threading.Lock()

    def run(thread):
        rng = random.Random(args.seed * 100 + thread)
        marker = os.path.join(args.dir, "markers-%d" % thread)
        mine = []
        kinds = [k for k in KINDS if k not in args.skip]
        for i in range(thread, args.starts, args.threads):
            kind = rng.choice(kinds)
            arg = rng.randrange(7) if kind == "exit" else rng.randrange(2)
            mine.append(_start_one("%d-%d" % (thread, i), marker, kind, arg,
                                   args.run_id, rng))
        with lock:
            records.extend(mine)

    if args.phase == "chaos":
        chaos = threading.Thread(target=killer, daemon=True)
        chaos.start()
    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(t,))
               for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    stop.set()
    if args.phase == "chaos":
        chaos.join()
    after = _measure()
    result = {"phase": args.phase, "elapsed": elapsed, "before": before,
              "after": after, "records": records, "kills": kills,
              "replacements": len(replacements),
              "servers": sorted({pid for _, pid in kills}
                                | {before["server_pid"],
                                   after["server_pid"]})}
    with open(os.path.join(args.dir, "result-%s.json" % args.phase),
              "w") as f:
        json.dump(result, f)


# --- the supervisor ---------------------------------------------------------

def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _markers(directory):
    seen = {}
    for name in os.listdir(directory):
        if name.startswith("markers-"):
            with open(os.path.join(directory, name)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        seen.setdefault(parts[0], []).append(int(parts[1]))
    return seen


def check(result, markers, names_left):
    """Every check of one phase: {name: [problems]}."""
    problems = {"ran": [], "exit code": [], "fds": [], "names": []}
    kills = [t for t, _ in result["kills"]]
    counts = {"started": 0, "raised": 0, "killed by us": 0,
              "255 after a server kill": 0,
              "named resource failed across a server kill": 0}
    for rec in result["records"]:
        ran = markers.get(rec["token"], [])
        if rec["error"] is not None:
            counts["raised"] += 1
            if ran:
                problems["ran"].append((rec["token"], "raised but ran", ran))
            continue
        counts["started"] += 1
        if len(ran) > 1 or any(pid != rec["pid"] for pid in ran):
            problems["ran"].append((rec["token"], rec["pid"], ran))
        code = rec["exitcode"]
        during = any(rec["t0"] <= t <= rec["t1"] for t in kills)
        if rec["kind"] == "kill":
            counts["killed by us"] += 1
        elif not ran and not (code == 255 and during):
            # At most once: a server killed between its reply and the
            # hand-off leaves a pid that never runs and reports 255.
            problems["ran"].append((rec["token"], rec["pid"], "never ran"))
        if code != rec["expected"]:
            if code == 255 and during:
                counts["255 after a server kill"] += 1
            elif code == 1 and during and rec["kind"] in ("shm", "kill"):
                # The child's tracker was the killed server: registering
                # its segment failed (EPIPE), as with a killed stdlib
                # tracker.  The tracker-death semantics, not a start's.
                counts["named resource failed across a server kill"] += 1
            else:
                problems["exit code"].append(
                    (rec["token"], rec["kind"], rec["expected"], code))
        if rec["kind"] == "fds" and rec.get("answer") != rec["token"]:
            during = any(rec["t0"] <= t <= rec["t1"] for t in kills)
            if not (code == 255 and during):
                problems["fds"].append((rec["token"], rec.get("answer")))
    if names_left:
        problems["names"].append(sorted(names_left)[:10])
    before, after = result["before"], result["after"]
    flat = {
        "parent fds": (before["parent_fds"], after["parent_fds"]),
        "server fds": (before["server_fds"], after["server_fds"]),
        "server RSS kB": (before["server_rss_kb"], after["server_rss_kb"]),
        "zombies": (before["zombies"], after["zombies"]),
    }
    problems["flat"] = [k for k, (b, a) in flat.items()
                        if k != "server RSS kB" and a > b]
    if after["server_rss_kb"] > before["server_rss_kb"] + 4096:
        problems["flat"].append("server RSS kB")
    return counts, flat, problems


def supervise(args):
    work = tempfile.mkdtemp(prefix="wfsoak-")
    run_id = "%x" % random.getrandbits(32)
    report, failed = {}, False
    for phase in args.phases.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", phase,
               "--dir", work, "--run-id", run_id, "--starts",
               str(args.starts), "--threads", str(args.threads),
               "--pool-size", str(args.pool_size), "--seed", str(args.seed),
               "--kill-every", "%s,%s" % tuple(args.kill_every)]
        if args.chaos_skip:
            cmd += ["--chaos-skip", ",".join(args.chaos_skip)]
        log_path = os.path.join(work, "%s.log" % phase)
        for name in os.listdir(work):
            if name.startswith("markers-"):
                os.unlink(os.path.join(work, name))
        with open(log_path, "wb") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=work, timeout=args.timeout)
        result_path = os.path.join(work, "result-%s.json" % phase)
        if proc.returncode != 0 or not os.path.exists(result_path):
            print("%s: the worker failed (exit %s); log: %s"
                  % (phase, proc.returncode, log_path))
            time.sleep(2)               # its server cleans up, mostly
            for name in os.listdir("/dev/shm"):
                if run_id in name:
                    os.unlink(os.path.join("/dev/shm", name))
            return 2
        with open(result_path) as f:
            result = json.load(f)
        # The worker is gone: its servers clean up, then exit.
        deadline = time.monotonic() + 60
        while (any(_alive(pid) for pid in result["servers"])
               and time.monotonic() < deadline):
            time.sleep(0.05)
        servers_left = [pid for pid in result["servers"] if _alive(pid)]
        markers = _markers(work)
        created = _created_names(work)
        with open(log_path, errors="replace") as f:
            relaunches = f.read().count("process died unexpectedly")
        left = {n for n in os.listdir("/dev/shm") if run_id in n}
        from_killed = set()
        if phase == "chaos":
            # A segment registered with a server that was later killed is
            # an expected leak; unlink it after counting.
            from_killed = set(left)
        for name in left:
            os.unlink(os.path.join("/dev/shm", name))
        counts, flat, problems = check(result, markers, left - from_killed)
        if phase != "chaos" and relaunches:
            problems["stdlib tracker"] = [relaunches]
        if len(result["records"]) != args.starts:
            # A driving thread died (its traceback is in the log): its
            # starts were never checked.
            problems["starts"] = ["%d of %d recorded; log: %s" % (
                len(result["records"]), args.starts, log_path)]
        if servers_left:
            problems["servers"] = servers_left
        report[phase] = {"counts": counts, "flat": flat,
                         "problems": problems, "elapsed": result["elapsed"],
                         "starts": len(result["records"]),
                         "server kills": len(result["kills"]),
                         "replacements": result["replacements"],
                         "stdlib tracker relaunches": relaunches,
                         "names created": len(created),
                         "names left (leaked by killed servers)":
                         len(from_killed),
                         "names left": len(left - from_killed)}
        bad = any(problems.values())
        failed |= bad
        _print_phase(phase, report[phase], bad)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("work directory:", work)
    return 1 if failed else 0


def _created_names(directory):
    """Names the children recorded (third field of a marker line)."""
    names = set()
    for name in os.listdir(directory):
        if name.startswith("markers-"):
            with open(os.path.join(directory, name)) as f:
                names.update(line.split()[2] for line in f
                             if len(line.split()) > 2)
    return names


def _print_phase(phase, r, bad):
    c = r["counts"]
    print("== %s: %d starts in %.1f s (%.0f/s), %s" % (
        phase, r["starts"], r["elapsed"], r["starts"] / r["elapsed"],
        "FAILED" if bad else "ok"))
    print("   started %d, raised %d, killed by us %d, 255 after a server "
          "kill %d, named resource failed across a server kill %d"
          % (c["started"], c["raised"], c["killed by us"],
             c["255 after a server kill"],
             c["named resource failed across a server kill"]))
    print("   server kills %d, replacement warnings %d, stdlib tracker "
          "relaunches %d" % (r["server kills"], r["replacements"],
                             r["stdlib tracker relaunches"]))
    for name, (before, after) in r["flat"].items():
        print("   %-14s before %8s  after %8s" % (name, before, after))
    print("   /dev/shm: %d names created, %d left%s"
          % (r["names created"], r["names left"],
             ", %d leaked by killed servers (unlinked)"
             % r["names left (leaked by killed servers)"]
             if phase == "chaos" else ""))
    for name, items in r["problems"].items():
        if items:
            print("   PROBLEM %s: %d, e.g. %s" % (name, len(items),
                                                  items[:3]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--pool-size", type=int, default=2)
    ap.add_argument("--phases", default="soak,chaos")
    ap.add_argument("--kill-every", default="0.2,1.0",
                    type=lambda s: tuple(float(x) for x in s.split(",")),
                    help="chaos: seconds between server kills, MIN,MAX")
    ap.add_argument("--chaos-skip", default=(),
                    type=lambda s: tuple(s.split(",")),
                    help="chaos: kinds of start to leave out (of %s)"
                    % ", ".join(sorted(set(KINDS))))
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1800,
                    help="per phase, seconds")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (logs, markers)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.phase = args.worker
        args.skip = args.chaos_skip if args.phase == "chaos" else ()
        worker(args)
        return 0
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
