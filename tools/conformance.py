#!/usr/bin/env python3
"""CPython's multiprocessing suite under warmfork, compared with forkserver.

Runs test/_test_multiprocessing.py from the given interpreter's own `test`
package under the candidate method (default: warmfork) with regrtest
(tools/mp_regrtest.py), then compares each test's outcome with the
checked-in forkserver results of that CPython version,
tools/baseline/forkserver-X.Y.json. `--write-baseline` runs forkserver and
rewrites that file instead.

Exit status: 0 every test that passes under forkserver passes under the
candidate, or is allowlisted (tools/allowlist.py); 1 otherwise, or when
nothing ran; 2 usage error (e.g. no baseline for this version).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

import allowlist
import mp_regrtest

BASELINE = os.path.join(mp_regrtest.TOOLS, "baseline", "forkserver-%s.json")
LEAK_WARNING = re.compile(r"There appear to be \d+ leaked .* objects")


def python_version(python):
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info"
                          "[:3])"], check=True, capture_output=True, text=True)
    return tuple(int(x) for x in out.stdout.split())


def run_suite(opts, version):
    """Run the suite under opts.method; the results as baseline files hold
    them."""
    workdir = tempfile.mkdtemp(prefix="wf-conformance-")
    xml, log, elapsed, lingering = mp_regrtest.run(
        opts.python, opts.method, workdir, jobs=opts.jobs,
        timeout=opts.timeout, only=opts.only, ignore=allowlist.NOT_RUN)
    res = mp_regrtest.results(xml) if xml else {}
    with open(log, errors="replace") as f:
        warnings = sorted(set(m.group(0) for m in LEAK_WARNING.finditer(
            f.read())))
    return {"python": ".".join(map(str, version)), "method": opts.method,
            "seconds": round(elapsed), "counts": mp_regrtest.counts(res),
            "outcomes": {t: r["outcome"] for t, r in sorted(res.items())},
            "flaky": sorted(t for t, r in res.items()
                            if r["first"] not in mp_regrtest.PASS
                            and r["outcome"] in mp_regrtest.PASS),
            "details": {t: r["detail"].splitlines()[-1] for t, r in res.items()
                        if r["detail"] and r["outcome"] in ("fail", "error")},
            "leak_warnings": warnings, "lingering": lingering,
            "workdir": workdir, "log": log}


def compare(run, base, version, selected):
    """Sort the tests that differ: regressions, allowlisted, allowlisted
    but passed, better than the baseline."""
    out = {"regressions": [], "allowed": [], "allowed_passed": [],
           "better": []}
    for test_id, ref in base["outcomes"].items():
        if not selected(test_id):
            continue
        got = run["outcomes"].get(test_id, "not recorded")
        reason = allowlist.allowed(test_id, version)
        if got in mp_regrtest.PASS:
            if reason:
                out["allowed_passed"].append((test_id, got, reason))
            elif ref not in mp_regrtest.PASS:
                out["better"].append((test_id, ref, ""))
        elif ref in mp_regrtest.PASS:
            out["allowed" if reason else "regressions"].append(
                (test_id, got, reason or run["details"].get(test_id, "")))
    return out


def report(run, base, diff):
    row = "%-11s %7s %7s %7s %7s %7s %8s"
    print(row % ("", "passed", "failed", "errors", "skipped", "total", "time"))
    for name, r in ((run["method"], run), ("forkserver*", base)):
        c = r["counts"]
        print(row % (name, c["pass"] + c["xfail"], c["fail"] + c["uxsuccess"],
                     c["error"], c["skip"], sum(c.values()),
                     "%ds" % r["seconds"]))
    print("* checked-in baseline, CPython %s%s" % (
        base["python"], "" if base["python"] == run["python"] else
        " -- not this version: rewrite it (tools/README.md)"))
    titles = {
        "regressions": "pass under forkserver, not under %s" % run["method"],
        "allowed": "allowlisted (tools/allowlist.py)",
        "allowed_passed": "ALLOWLISTED BUT PASSED: drop them from "
                          "tools/allowlist.py",
        "better": "pass under %s, not under forkserver" % run["method"]}
    for key, title in titles.items():
        if diff[key]:
            print("%s: %d" % (title, len(diff[key])))
            for test_id, outcome, why in diff[key]:
                print("  %-12s %s" % (outcome, test_id))
                if why:
                    print(textwrap.fill(why, 79, initial_indent=" " * 6,
                                        subsequent_indent=" " * 6))
    if any(outcome == "not recorded" for _, outcome, _ in diff["regressions"]):
        print("(not recorded: did not run, or failed only in subtests; "
              "the log says which)")
    for what in ("flaky", "leak_warnings"):
        if run[what]:
            print("%s: %s" % (what.replace("_", " "), ", ".join(run[what])))
    for pid, cmd in run["lingering"]:
        print("still running 5 s after the suite (killed): %d %s"
              % (pid, cmd[:150]))
    print("regrtest log: %s (removed if the run passes; --keep)" % run["log"])


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter to test (default: this one); a "
                         "regular install of warmfork, for its .pth hook")
    ap.add_argument("--method", default="warmfork",
                    help="start method under test (default: warmfork)")
    ap.add_argument("--write-baseline", action="store_true",
                    help="run forkserver and write the baseline file")
    ap.add_argument("--baseline", metavar="FILE",
                    help="the baseline file to compare with, or to write "
                         "(default: tools/baseline/forkserver-X.Y.json)")
    ap.add_argument("--only", action="append", default=[], metavar="CLASS",
                    help="only test classes whose name contains CLASS")
    ap.add_argument("--jobs", "-j", type=int, default=0,
                    help="regrtest worker processes (default 0: regrtest's "
                         "own choice, CPUs + 2; the tests mostly sleep)")
    ap.add_argument("--timeout", type=int, default=180,
                    help="regrtest's limit per test class, seconds "
                         "(default: 180)")
    ap.add_argument("--json", help="also write this run's results here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (regrtest's log) of a "
                         "run that passed too")
    opts = ap.parse_args(argv)
    if opts.write_baseline:
        if opts.only:
            ap.error("a baseline covers the whole suite: no --only")
        opts.method = "forkserver"
    return opts


def main(argv=None):
    opts = parse_args(argv)
    version = python_version(opts.python)
    short = "%d.%d" % version[:2]
    baseline = opts.baseline or BASELINE % short
    if not opts.write_baseline and not os.path.exists(baseline):
        print("no baseline %s: write it with\n  tools/conformance.py "
              "--write-baseline --python %s" % (baseline, opts.python))
        return 2
    print("CPython %s (%s): %s" % (".".join(map(str, version)), opts.python,
                                   opts.method), flush=True)
    run = run_suite(opts, version)
    passed = run["counts"]["pass"] + run["counts"]["xfail"]
    for path in [opts.json] + [baseline] * opts.write_baseline:
        if path:
            with open(path, "w") as f:
                json.dump({k: v for k, v in run.items()
                           if k not in ("log", "workdir")}, f,
                          indent=0, sort_keys=True)
                f.write("\n")
    if opts.write_baseline:
        print("wrote %s: %s in %ds" % (baseline, run["counts"],
                                        run["seconds"]))
        status = 0 if passed else 1
    else:
        with open(baseline) as f:
            base = json.load(f)
        diff = compare(run, base, version,
                       lambda t: any(p in t.split(".")[0] for p in opts.only)
                       if opts.only else True)
        report(run, base, diff)
        status = 1 if diff["regressions"] or not passed else 0
    if not passed:
        with open(run["log"], errors="replace") as f:
            print("".join(f.readlines()[-30:]))
        print("NOTHING PASSED (is %r registered in %s?)"
              % (opts.method, opts.python))
    if status == 0 and not opts.keep:
        shutil.rmtree(run["workdir"], ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
