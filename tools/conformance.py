#!/usr/bin/env python3
"""Run CPython's own multiprocessing test suite under a candidate start
method (default: "warmfork") and, in the same run, under the stdlib
"forkserver" method, then compare per-test outcomes.

The suite lives in the interpreter's ``test`` package
(``test/_test_multiprocessing.py``).  CPython stamps it out once per start
method with ``install_tests_in_module_dict(globals(), METHOD)``; the module
that does this differs between versions (``test_multiprocessing_forkserver.py``
on 3.9/3.10, a package split into processes/threads/manager/misc on 3.12+,
and on some installs -- 3.11.7 and 3.12.1 here -- it is missing altogether).
So this script does not rely on those modules: for each method it writes a
tiny module ``wfconf_<method>.py`` into a scratch directory that makes the
same call, puts that directory on PYTHONPATH (so every process of the tree,
whatever the start method, can import it by name, exactly like the stdlib
``test.test_multiprocessing_forkserver`` module), and runs it with unittest
in a fresh interpreter.  A recording TestResult writes one JSON line per
event, so a suite that hangs or crashes half-way still yields results: the
test in flight is recorded as "timeout"/"crash" and the suite is resumed
after it.

Exit status:
  0  every test that passes under the reference method passes under the
     candidate, or is in ALLOWLIST;
  1  at least one such test fails/errors/is skipped/did not run under the
     candidate and is not allow-listed;
  2  nothing ran for some method (e.g. the suite's setUpModule raises
     SkipTest for a start method it does not know, which unittest reports
     as a single skip and otherwise a clean, empty run);
  3  usage or infrastructure error.

Run ``tools/conformance.py --help`` for options; tools/README.md has examples.
"""

import argparse
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

STDLIB_METHODS = ("fork", "spawn", "forkserver")

# Tests that pass under the reference method but that cannot pass (or that
# are meaningless) under the candidate.  Keys are fnmatch patterns matched
# against "TestClass.test_method" (the module prefix is stripped).  Each
# reason was checked against test/_test_multiprocessing.py of 3.9 - 3.13.
#
# Deliberately NOT listed, although they spell out the stdlib method names:
# TestStartMethod.test_get_all (it asserts that get_all_start_methods() is
# one of four hard-coded lists; warmfork appends "warmfork" to it in every
# interpreter where it is installed, so the test fails under the reference
# method too and shows among "failing under both", not as a regression;
# README "What differs" says why), test_set_get
# and test_context (they loop over fork/spawn/forkserver and restore the
# previous method with set_start_method(old, force=True): they must pass
# with "warmfork" as the global method, including spawn children, which
# need "warmfork" registered at interpreter start-up).
ALLOWLIST = {
    "*.test_forkserver_sigint":
        "_TestProcess.check_forkserver_death() skips unless "
        "get_start_method() == 'forkserver'; it kills the stdlib server "
        "through multiprocessing.forkserver._forkserver._forkserver_pid, "
        "which warmfork does not use.  (warmfork's own 'server died' "
        "behaviour must be tested in warmfork's tests.)",
    "*.test_forkserver_sigkill":
        "Same as test_forkserver_sigint, with SIGKILL: skips unless the "
        "start method is literally 'forkserver' and pokes the stdlib "
        "_forkserver singleton.",
    "TestStartMethod.test_preload_resources":
        "skips unless get_start_method() == 'forkserver'; it runs "
        "test/mp_preload.py, which calls get_context('forkserver') "
        "explicitly, so it never exercises the candidate.",
    "TestResourceTracker.test_resource_tracker_sig*":
        "check_resource_tracker_death() (bpo-31310) kills the stdlib "
        "resource-tracker *process* found in resource_tracker."
        "_resource_tracker._pid after ensure_running(), then expects a "
        "relaunch warning.  warmfork folds the tracker into its server "
        "(DESIGN.md section 1), so once the server has adopted the tracker "
        "_pid is None and os.kill(None, sig) raises TypeError; the server's "
        "own death is covered by warmfork's tests.",
    "TestFlags.test_flags":
        "3.12+: re-runs the interpreter with -E -S -O and calls "
        "set_start_method(<current method>) there; -S disables site, so a "
        "third-party method registered via a .pth hook cannot exist in that "
        "interpreter (ValueError).  On 3.9-3.11 the test ignores the "
        "current method and passes anyway.",
}

# Tests that are racy in CPython itself, whatever the start method.  Not
# allow-listed (a failure still counts, and is rerun), only annotated.
KNOWN_RACES = {
    "WithThreadsTestPool.test_terminate":
        "3.9-3.12: ThreadPool workers that picked up a time.sleep("
        "LONG_TIMEOUT=300) task before terminate() cannot be stopped, so "
        "join() waits 300 s (fixed in 3.13, which sleeps 1 s for threads)",
}

# Flags for the suite interpreter.  CPython's Tools/scripts/run_tests.py
# (what `make test`/buildbots use) passes "-W default -bb -E"; -E is left out
# here because the generated suite module is found through PYTHONPATH.
DEFAULT_PYFLAGS = ["-W", "default", "-bb"]

EVENTS_SUFFIX = ".events.jsonl"
PASS_OUTCOMES = ("pass", "xfail")


# ---------------------------------------------------------------------------
# Child side: runs inside the interpreter under test.
# ---------------------------------------------------------------------------

SUITE_MODULE_TEMPLATE = '''\
# Generated by tools/conformance.py -- equivalent of
# Lib/test/test_multiprocessing_forkserver.py for start method {method!r}.
import importlib
for _mod in {imports!r}:
    importlib.import_module(_mod)
import test._test_multiprocessing
test._test_multiprocessing.install_tests_in_module_dict(globals(), {method!r})
'''


def _short_id(test_id):
    """'wfconf_x.WithProcessesTestFoo.test_bar' -> 'WithProcessesTestFoo.test_bar'."""
    parts = test_id.split(".")
    if len(parts) >= 3 and parts[0].startswith("wfconf_"):
        return ".".join(parts[1:])
    return test_id


def _selected(short_id, only, keywords):
    cls = short_id.split(".", 1)[0]
    if only:
        ok = False
        for pat in only:
            if any(c in pat for c in "*?["):
                ok = fnmatch.fnmatchcase(cls, pat)
            else:
                ok = pat == cls or pat in cls
            if ok:
                break
        if not ok:
            return False
    if keywords:
        for pat in keywords:
            if any(c in pat for c in "*?["):
                if fnmatch.fnmatchcase(short_id, pat):
                    return True
            elif pat in short_id:
                return True
        return False
    return True


def child_main(argv):
    """Entry point inside the interpreter under test."""
    import faulthandler
    import importlib
    import traceback
    import unittest

    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--select", required=True)
    ap.add_argument("--test-timeout", type=float, default=0)
    args = ap.parse_args(argv)

    with open(args.select) as f:
        sel = json.load(f)
    exclude = set(sel.get("exclude", ()))

    events = open(args.events, "a", buffering=1)

    def emit(**kw):
        events.write(json.dumps(kw) + "\n")
        events.flush()

    faulthandler.enable(all_threads=True)
    try:
        from test import support
        support.verbose = 0          # as regrtest without -v
    except Exception:
        pass

    try:
        mod = importlib.import_module(args.module)
    except BaseException:
        emit(e="fixture", id="import " + args.module, outcome="error",
             detail=traceback.format_exc())
        emit(e="done", status="import-failed")
        return 1

    def flatten(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                yield from flatten(t)
            else:
                yield t

    all_tests = list(flatten(unittest.TestLoader().loadTestsFromModule(mod)))
    tests = []
    for t in all_tests:
        sid = _short_id(t.id())
        if sid in exclude:
            continue
        if sel.get("ids") is not None:
            if sid in sel["ids"]:
                tests.append(t)
        elif _selected(sid, sel.get("only"), sel.get("keywords")):
            tests.append(t)
    emit(e="collected", ids=[_short_id(t.id()) for t in tests],
         total=len(all_tests))

    timeout = args.test_timeout

    class RecordingResult(unittest.TestResult):
        def __init__(self):
            super().__init__()
            self._cur = {}

        def _key(self, test):
            # subtests report through their parent test case
            return getattr(test, "test_case", test)

        def startTest(self, test):
            super().startTest(test)
            self._cur[test] = {"outcome": None, "detail": "", "t0": time.time()}
            emit(e="start", id=_short_id(test.id()))
            if timeout:
                faulthandler.dump_traceback_later(timeout, exit=True)

        def stopTest(self, test):
            if timeout:
                faulthandler.cancel_dump_traceback_later()
            st = self._cur.pop(test, None)
            if st is not None:
                emit(e="end", id=_short_id(test.id()),
                     outcome=st["outcome"] or "pass",
                     detail=st["detail"][-6000:],
                     dur=round(time.time() - st["t0"], 3))
            super().stopTest(test)

        def _set(self, test, outcome, detail):
            key = self._key(test)
            st = self._cur.get(key)
            if st is None and isinstance(key, unittest.TestCase):
                # 3.12+: a test skipped by decorator gets addSkip() without
                # startTest()/stopTest()
                emit(e="end", id=_short_id(key.id()), outcome=outcome,
                     detail=detail[-6000:], dur=0.0)
                return
            if st is None:
                # setUpModule / setUpClass / tearDown* (_ErrorHolder)
                emit(e="fixture", id=test.id() if hasattr(test, "id")
                     else str(test), outcome=outcome, detail=detail[-6000:])
                return
            rank = {"error": 4, "fail": 3, "uxsuccess": 2, "skip": 1,
                    "xfail": 1, "pass": 0}
            if st["outcome"] is None or rank[outcome] > rank[st["outcome"]]:
                st["outcome"] = outcome
            if detail:
                prefix = ""
                if key is not test:
                    prefix = "[subtest %s]\n" % test.id()
                st["detail"] += prefix + detail + "\n"

        def addSuccess(self, test):
            super().addSuccess(test)
            self._set(test, "pass", "")

        def addError(self, test, err):
            super().addError(test, err)
            self._set(test, "error", self._exc_info_to_string(err, test))

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._set(test, "fail", self._exc_info_to_string(err, test))

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                kind = ("fail" if issubclass(err[0], test.failureException)
                        else "error")
                self._set(subtest, kind, self._exc_info_to_string(err, test))

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._set(test, "skip", str(reason))

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._set(test, "xfail", "")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._set(test, "uxsuccess", "unexpected success")

    result = RecordingResult()
    t0 = time.time()
    unittest.TestSuite(tests)(result)
    emit(e="done", status="ok", testsRun=result.testsRun,
         elapsed=round(time.time() - t0, 2))
    events.close()
    return 0


# ---------------------------------------------------------------------------
# Parent side.
# ---------------------------------------------------------------------------

def _group_members(pgid):
    """Pids (other than zombies) whose process group is pgid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                out.append((int(d), cmd.strip()))
        except (OSError, ValueError, IndexError):
            continue
    return out


class MethodRun:
    """Runs the suite for one start method, resuming after hangs/crashes."""

    def __init__(self, method, opts, workdir, log, ids=None, tag=""):
        self.method = method
        self.opts = opts
        self.ids = ids           # exact short ids to run (None: selection)
        self.tag = method + tag
        self.workdir = os.path.join(workdir, self.tag)
        self.log = log
        self.results = {}        # short id -> dict(outcome, detail, dur)
        self.fixtures = []       # (id, outcome, detail)
        self.collected = None    # ordered list of selected ids
        self.total_in_module = None
        self.notes = []
        self.lingering = []
        self.elapsed = 0.0
        self.module = "wfconf_" + re.sub(r"\W", "_", method)

    # -- helpers --
    def _write_module(self):
        os.makedirs(self.workdir, exist_ok=True)
        imports = list(self.opts.imports.get(self.method, []))
        with open(os.path.join(self.workdir, self.module + ".py"), "w") as f:
            f.write(SUITE_MODULE_TEMPLATE.format(method=self.method,
                                                 imports=imports))

    def _cmd(self, events, select):
        tools_dir = os.path.dirname(os.path.abspath(__file__))
        code = ("import sys; sys.path.insert(0, %r); import conformance; "
                "sys.exit(conformance.child_main(sys.argv[1:]))" % tools_dir)
        return ([self.opts.python] + self.opts.pyflags +
                ["-c", code, "--module", self.module, "--events", events,
                 "--select", select,
                 "--test-timeout", str(self.opts.test_timeout)])

    def run(self):
        self._write_module()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [self.workdir] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                              else []))
        env.pop("PYTHONSTARTUP", None)
        cwd = os.path.join(self.workdir, "cwd")
        os.makedirs(cwd, exist_ok=True)
        deadline = time.time() + self.opts.timeout
        t_start = time.time()
        attempt = 0
        exclude = []
        while True:
            attempt += 1
            events = os.path.join(self.workdir, "run%d%s" % (attempt, EVENTS_SUFFIX))
            select = os.path.join(self.workdir, "select%d.json" % attempt)
            logpath = os.path.join(self.workdir, "run%d.log" % attempt)
            with open(select, "w") as f:
                json.dump({"only": self.opts.only, "keywords": self.opts.keywords,
                           "ids": self.ids, "exclude": exclude}, f)
            self.log("[%s] attempt %d: %s" % (self.tag, attempt, logpath))
            with open(logpath, "wb") as logf:
                proc = subprocess.Popen(self._cmd(events, select), cwd=cwd,
                                        env=env, stdout=logf,
                                        stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL,
                                        start_new_session=True)
                timed_out = False
                try:
                    rc = proc.wait(timeout=max(1.0, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    timed_out = True
                    self._kill_group(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
            self._reap_group(proc.pid)
            done, inflight = self._ingest(events)
            if done:
                break
            # The child died or was killed before finishing.
            tail = self._tail(logpath)
            if inflight is not None:
                dump = self._faulthandler_dump(logpath)
                if timed_out:
                    outcome, why = "timeout", ("method timeout (%ss) hit while "
                                               "this test ran" % self.opts.timeout)
                elif dump:
                    outcome, why = "timeout", ("per-test timeout (%ss); "
                                               "faulthandler dump:" %
                                               self.opts.test_timeout)
                    tail = dump
                else:
                    outcome, why = "crash", "suite process exited with rc=%s" % rc
                self.results[inflight] = {"outcome": outcome,
                                          "detail": why + "\n" + tail, "dur": None}
                self.notes.append("%s in %s: %s" % (outcome, inflight,
                                                    why.split(";")[0]))
            else:
                self.notes.append("suite process exited rc=%s outside any test "
                                  "(attempt %d); log tail:\n%s" % (rc, attempt, tail))
            if timed_out or time.time() >= deadline:
                self.notes.append("method timeout: remaining tests not run")
                break
            if attempt > self.opts.max_restarts or inflight is None:
                break
            exclude = sorted(self.results)
            remaining = [i for i in (self.collected or []) if i not in self.results]
            if not remaining:
                break
        self.elapsed = time.time() - t_start

    def _faulthandler_dump(self, logpath):
        """The stacks faulthandler printed at a per-test timeout, main
        thread (the one running the test) first; '' if there was none."""
        try:
            with open(logpath, "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            return ""
        start = data.rfind("Timeout (")
        if start < 0:
            return ""
        lines = data[start:].splitlines()
        blocks, cur = [], None
        for line in lines[1:]:
            if line.startswith(("Thread 0x", "Current thread 0x")):
                cur = [line]
                blocks.append(cur)
            elif cur is not None and line.startswith("  File "):
                cur.append(line)
            elif cur is not None and not line.strip():
                continue
            elif cur is not None:
                break
        main = [b for b in blocks if any("unittest" in l for l in b)]
        rest = [b for b in blocks if b not in main]
        out = [lines[0]]
        for b in main + rest:
            out.extend(b)
        return "\n".join(out)

    def _tail(self, logpath, n=40):
        try:
            with open(logpath, "rb") as f:
                data = f.read()[-20000:].decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-n:])

    def _ingest(self, events):
        done = False
        started = None
        try:
            f = open(events)
        except OSError:
            return False, None
        with f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue        # torn last line
                e = ev.get("e")
                if e == "collected":
                    if self.collected is None:
                        self.collected = ev["ids"]
                        self.total_in_module = ev.get("total")
                elif e == "start":
                    started = ev["id"]
                elif e == "end":
                    self.results[ev["id"]] = {"outcome": ev["outcome"],
                                              "detail": ev.get("detail", ""),
                                              "dur": ev.get("dur")}
                    started = None
                elif e == "fixture":
                    self.fixtures.append((ev["id"], ev["outcome"],
                                          ev.get("detail", "")))
                elif e == "done":
                    done = True
        return done, started

    def _kill_group(self, pgid, sig):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap_group(self, pgid):
        """Processes left in the suite's process group after it exited:
        note them (a server outliving its parent is a bug), then kill them."""
        deadline = time.time() + self.opts.linger
        members = _group_members(pgid)
        while members and time.time() < deadline:
            time.sleep(0.2)
            members = _group_members(pgid)
        if members:
            self.lingering.extend(members)
            self._kill_group(pgid, signal.SIGKILL)

    # -- summary --
    def outcome_of(self, sid):
        r = self.results.get(sid)
        return r["outcome"] if r else "notrun"

    def counts(self):
        c = {"run": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0,
             "xfail": 0, "uxsuccess": 0, "timeout": 0, "crash": 0, "notrun": 0}
        key = {"pass": "passed", "fail": "failed", "error": "errors",
               "skip": "skipped", "xfail": "xfail", "uxsuccess": "uxsuccess",
               "timeout": "timeout", "crash": "crash"}
        for r in self.results.values():
            c["run"] += 1
            c[key[r["outcome"]]] += 1
        if self.collected is not None:
            c["notrun"] = sum(1 for i in self.collected if i not in self.results)
        return c

    def module_skip(self):
        for fid, outcome, detail in self.fixtures:
            if fid.startswith("setUpModule") and outcome in ("skip", "error"):
                return "%s %s: %s" % (fid, outcome, detail.strip().splitlines()[-1]
                                      if detail.strip() else "")
            if fid.startswith("import ") and outcome == "error":
                return "%s failed: %s" % (fid, detail.strip().splitlines()[-1])
        return None


def _gist(detail, width=200):
    """Last meaningful line(s) of a traceback."""
    lines = [l for l in (detail or "").strip().splitlines() if l.strip()]
    if not lines:
        return ""
    if lines[0].startswith("per-test timeout") and len(lines) > 3:
        # "Timeout (0:05:00)!", "Thread 0x... (most recent call first):",
        # then the innermost frame of the thread that runs the test
        return ("%s main thread in: %s" % (lines[1].strip(),
                                            lines[3].strip()))[:width]
    last = lines[-1].strip()
    return last[:width]


def _print_detail(sid, detail, verbose):
    if _gist(detail):
        print("            %s" % _gist(detail))
    if sid in KNOWN_RACES:
        print("            known CPython test race: %s" % KNOWN_RACES[sid])
    if verbose and detail:
        lines = detail.rstrip().splitlines()
        if lines and lines[0].startswith("per-test timeout"):
            # the thread running the test only; the others are in the log
            rest = [i for i, l in enumerate(lines) if i > 2 and
                    l.startswith(("Thread 0x", "Current thread 0x"))]
            if rest:
                lines = lines[:rest[0]] + ["(%d more threads: see the log)"
                                           % len(rest)]
        print(textwrap.indent("\n".join(lines), "            | "))


_NOTABLE = re.compile(r"leaked|warmfork-server|^Traceback|Error:|Warning:")


def _notable_output(run):
    """Lines of the suite's own output worth a look (tracebacks, resource
    tracker complaints, server notices): CPython's suite passes with a
    silent log under forkserver."""
    out = []
    for name in sorted(os.listdir(run.workdir)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(run.workdir, name), "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if _NOTABLE.search(line) and "warnings.warn(" not in line:
                    out.append("%s: %s" % (name, line.strip()))
    return out


def _fixture_key(fid):
    """'tearDownModule (wfconf_x)' -> 'tearDownModule';
    'setUpClass (wfconf_x.Cls)' -> 'setUpClass (Cls)'."""
    return re.sub(r"\s*\(wfconf_[^.)]*\.?([^)]*)\)",
                  lambda m: " (%s)" % m.group(1) if m.group(1) else "",
                  fid).strip()


def _fixture_errors(run):
    return {_fixture_key(fid): detail for fid, outcome, detail in run.fixtures
            if outcome in ("error", "fail")}


def _allowed(sid):
    for pat, reason in ALLOWLIST.items():
        if fnmatch.fnmatchcase(sid, pat):
            return reason
    return None


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Run CPython's multiprocessing test suite under a candidate "
                    "start method and under forkserver, and compare.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              tools/conformance.py --python /tmp/conf-venv/bin/python
              tools/conformance.py --candidate spawn            # self-test
              tools/conformance.py --only TestProcess -k join   # quick
              tools/conformance.py --method warmfork --jobs 1
            """))
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter to test (default: this one)")
    ap.add_argument("--candidate", default="warmfork",
                    help="start method under test (default: warmfork)")
    ap.add_argument("--reference", default="forkserver",
                    help="reference start method (default: forkserver)")
    ap.add_argument("--method", action="append", default=[],
                    help="run only this method (candidate or reference name); "
                         "repeatable.  With one method there is no comparison.")
    ap.add_argument("--import", dest="extra_imports", action="append",
                    default=None, metavar="MODULE",
                    help="module(s) the candidate's suite module imports before "
                         "the tests are installed (default: the candidate name "
                         "if it is not a stdlib method; pass '' for none)")
    ap.add_argument("--only", action="append", default=[], metavar="CLASS",
                    help="run only test classes whose name contains CLASS "
                         "(or matches it as a glob); repeatable")
    ap.add_argument("-k", dest="keywords", action="append", default=[],
                    metavar="PATTERN",
                    help="run only tests whose 'Class.test' id contains PATTERN "
                         "(glob if it has * ? [); repeatable")
    ap.add_argument("--jobs", "-j", type=int, default=1,
                    help="methods run in parallel (default 1: sequential)")
    ap.add_argument("--timeout", type=float, default=1800,
                    help="wall-clock budget per method, seconds (default 1800)")
    ap.add_argument("--test-timeout", type=float, default=300,
                    help="per-test timeout, seconds, enforced with faulthandler "
                         "as regrtest does; the suite resumes after the hung "
                         "test (default 300, 0 = off)")
    ap.add_argument("--max-restarts", type=int, default=10,
                    help="resume the suite at most this many times after a "
                         "hang/crash (default 10)")
    ap.add_argument("--linger", type=float, default=5.0,
                    help="seconds to wait for processes left behind by the "
                         "suite before reporting and killing them (default 5)")
    ap.add_argument("--pyflag", dest="pyflags", action="append", default=None,
                    help="interpreter flag for the suite (repeatable; default: "
                         + " ".join(DEFAULT_PYFLAGS) + ")")
    ap.add_argument("--no-rerun", dest="rerun", action="store_false",
                    help="do not rerun tests that pass under the reference "
                         "but not under the candidate (by default they are "
                         "rerun once, alone, and reported as flaky if they "
                         "pass then)")
    ap.add_argument("--workdir", help="keep logs/events here (default: a new "
                                      "temporary directory, kept and printed)")
    ap.add_argument("--json", help="write the full per-test results here")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print tracebacks of differing tests")
    opts = ap.parse_args(argv)
    if opts.pyflags is None:
        opts.pyflags = list(DEFAULT_PYFLAGS)
    methods = [opts.candidate, opts.reference]
    if opts.method:
        bad = [m for m in opts.method if m not in methods]
        if bad:
            ap.error("--method must be the candidate or the reference: %s" % bad)
        methods = [m for m in methods if m in opts.method]
    opts.methods = methods
    imports = {}
    if opts.extra_imports is None:
        cand_imports = [] if opts.candidate in STDLIB_METHODS else [opts.candidate]
    else:
        cand_imports = [m for m in opts.extra_imports if m]
    imports[opts.candidate] = cand_imports
    imports.setdefault(opts.reference, [])
    opts.imports = imports
    return opts


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if opts.candidate == opts.reference:
        print("candidate and reference are the same method", file=sys.stderr)
        return 3
    workdir = opts.workdir or tempfile.mkdtemp(prefix="wf-conformance-")
    os.makedirs(workdir, exist_ok=True)
    lock = threading.Lock()

    def log(msg):
        with lock:
            print(msg, flush=True)

    try:
        ver = subprocess.check_output(
            [opts.python, "-c", "import sys; print(sys.version.split()[0])"],
            text=True).strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        print("cannot run %s: %s" % (opts.python, exc), file=sys.stderr)
        return 3
    log("python %s (%s); methods: %s; workdir: %s"
        % (ver, opts.python, ", ".join(opts.methods), workdir))

    runs = {m: MethodRun(m, opts, workdir, log) for m in opts.methods}
    if opts.jobs > 1:
        threads = [threading.Thread(target=r.run) for r in runs.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for r in runs.values():
            r.run()

    # ---- report ----
    rc = 0
    print()
    hdr = "%-12s %6s %6s %6s %6s %7s %5s %5s %7s %5s %6s %7s" % (
        "method", "run", "passed", "failed", "errors", "skipped", "xfail",
        "uxs", "timeout", "crash", "notrun", "time")
    print(hdr)
    print("-" * len(hdr))
    for m, r in runs.items():
        c = r.counts()
        print("%-12s %6d %6d %6d %6d %7d %5d %5d %7d %5d %6d %6.0fs" % (
            m, c["run"], c["passed"], c["failed"], c["errors"], c["skipped"],
            c["xfail"], c["uxsuccess"], c["timeout"], c["crash"], c["notrun"],
            r.elapsed))
    print()

    for m, r in runs.items():
        c = r.counts()
        why = r.module_skip()
        if c["passed"] == 0:
            rc = 2
            print("ERROR: nothing ran under %r%s" % (
                m, (" -- " + why) if why else
                " (no test passed; see %s)" % r.workdir))
        elif why:
            rc = max(rc, 2)
            print("ERROR: %r: %s" % (m, why))
        for fid, outcome, detail in r.fixtures:
            if outcome != "skip" or not fid.startswith("setUpModule"):
                print("[%s] fixture %s: %s: %s" % (m, fid, outcome, _gist(detail)))
        for note in r.notes:
            print("[%s] %s" % (m, note))
        notable = _notable_output(r)
        if notable:
            print("[%s] %d notable line(s) in the suite's output (tracebacks, "
                  "leak warnings, server notices)%s" % (
                      m, len(notable), ":" if opts.verbose else
                      "; -v lists them"))
            if opts.verbose:
                for line in notable[:40]:
                    print("    " + line[:220])
        if r.lingering:
            print("[%s] processes still alive %.0fs after the suite exited "
                  "(killed):" % (m, opts.linger))
            for pid, cmd in r.lingering[:20]:
                print("    %d %s" % (pid, cmd[:200]))

    bad = ("fail", "error", "timeout", "crash", "uxsuccess")
    for m, r in runs.items():
        if len(runs) == 2 and m == opts.candidate:
            other = runs[opts.reference]
            ids = [i for i, x in r.results.items() if x["outcome"] in bad
                   and other.outcome_of(i) not in PASS_OUTCOMES]
            title = "Tests failing under both %s and %s" % (m, opts.reference)
        else:
            ids = [i for i, x in r.results.items() if x["outcome"] in bad]
            title = "Tests failing under %s" % m
        if ids:
            print("%s: %d" % (title, len(ids)))
            for sid in sorted(ids):
                detail = r.results[sid]["detail"]
                print("  %-9s %s" % (r.results[sid]["outcome"].upper(), sid))
                _print_detail(sid, detail, opts.verbose)

    regressions, allowed, improved, flaky = [], [], [], []
    fixture_regressions = []
    if len(runs) == 2 and rc != 2:
        cand, ref = runs[opts.candidate], runs[opts.reference]
        order = ref.collected or sorted(ref.results)
        for sid in order:
            if ref.outcome_of(sid) not in PASS_OUTCOMES:
                continue
            co = cand.outcome_of(sid)
            if co in PASS_OUTCOMES:
                continue
            reason = _allowed(sid)
            detail = cand.results.get(sid, {}).get("detail", "")
            (allowed if reason else regressions).append((sid, co, detail, reason))
        for sid in cand.collected or sorted(cand.results):
            if (cand.outcome_of(sid) in PASS_OUTCOMES and
                    ref.outcome_of(sid) not in PASS_OUTCOMES):
                improved.append((sid, ref.outcome_of(sid)))

        print("Tests passing under %s but not under %s: %d (%d allow-listed)"
              % (opts.reference, opts.candidate,
                 len(regressions) + len(allowed), len(allowed)))
        notrun = [sid for sid, co, _, _ in regressions if co == "notrun"]
        for sid, co, detail, _ in regressions:
            if co == "notrun":
                continue
            print("  %-9s %s" % (co.upper(), sid))
            _print_detail(sid, detail, opts.verbose)
        if notrun:
            shown = notrun if opts.verbose else notrun[:5]
            print("  NOTRUN    %d test(s) never ran under %s (budget spent or "
                  "class/module fixture failed): %s%s"
                  % (len(notrun), opts.candidate, ", ".join(shown),
                     "" if len(shown) == len(notrun) else ", ... (-v: all)"))
        if allowed:
            print("  allow-listed (not applicable to %s):" % opts.candidate)
            for sid, co, detail, reason in allowed:
                print("  %-9s %s  -- %s" % (co, sid, reason.split(";")[0]))
        if improved:
            print("Tests passing under %s but not under %s: %d"
                  % (opts.candidate, opts.reference, len(improved)))
            for sid, ro in improved:
                print("  %-9s %s" % (ro, sid))
        # setUpModule/setUpClass/tearDown* errors only under the candidate:
        # regrtest would fail the whole test module for them.
        ref_fx = _fixture_errors(ref)
        for fkey, detail in sorted(_fixture_errors(cand).items()):
            if fkey in ref_fx:
                continue
            reason = _allowed(fkey)
            item = ("fixture " + fkey, "error", detail, reason)
            if reason:
                allowed.append(item)
            else:
                print("  %-9s %s" % ("ERROR", item[0]))
                _print_detail(item[0], detail, opts.verbose)
                fixture_regressions.append(item)
        if opts.rerun and len(regressions) > 20:
            print("  (%d tests: too many to be flakiness, not rerun)"
                  % len(regressions))
        elif regressions and opts.rerun:
            # As regrtest does: rerun what failed, once, in a fresh
            # interpreter; a test that passes then is reported as flaky.
            ids = [sid for sid, _, _, _ in regressions]
            log("\nre-running %d test(s) under %s in a fresh interpreter"
                % (len(ids), opts.candidate))
            rerun = MethodRun(opts.candidate, opts, workdir, log, ids=ids,
                              tag="-rerun")
            rerun.run()
            flaky = [x for x in regressions
                     if rerun.outcome_of(x[0]) in PASS_OUTCOMES]
            regressions = [x for x in regressions if x not in flaky]
            for sid, co, _, _ in flaky:
                print("  FLAKY     %s: %s in the suite, passed on rerun"
                      % (sid, co))
            for sid, co, _, _ in regressions:
                print("  %-9s %s (rerun: %s)" % (co.upper(), sid,
                                                 rerun.outcome_of(sid)))
        regressions += fixture_regressions
        if regressions:
            rc = max(rc, 1)

    if opts.json:
        data = {"python": opts.python, "version": ver, "workdir": workdir,
                "methods": {}}
        for m, r in runs.items():
            data["methods"][m] = {"counts": r.counts(), "elapsed": r.elapsed,
                                  "results": r.results, "fixtures": r.fixtures,
                                  "notes": r.notes,
                                  "lingering": r.lingering}
        data["regressions"] = [{"id": s, "outcome": o, "detail": d}
                               for s, o, d, _ in regressions]
        data["flaky"] = [{"id": s, "outcome": o, "detail": d}
                         for s, o, d, _ in flaky]
        data["allowed"] = [{"id": s, "outcome": o, "reason": why}
                           for s, o, _, why in allowed]
        with open(opts.json, "w") as f:
            json.dump(data, f, indent=1)
    print("\nlogs: %s\nexit status %d" % (workdir, rc))
    return rc


if __name__ == "__main__":
    sys.exit(main())
