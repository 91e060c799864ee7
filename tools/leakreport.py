#!/usr/bin/env python3
"""Leaked names and process counts, forkserver next to warmfork: a table.

Runs the SIGKILL scenarios of tests/leak_scenarios.py (which
tests/test_leaks.py asserts on) and prints what each one saw. The exit
status says only whether every scenario could run.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tests"))
import leak_scenarios  # noqa: E402

ROW = "%-10s %-8s %-46s %-20s %5s %7s %5s %9s %-22s %6s"


def processes(roles):
    """'total (parent/server/tracker/children +idle)'."""
    text = "%d (%d/%d/%d/%d" % (sum(roles.values()), roles["parent"],
                                roles["server"], roles["tracker"],
                                roles["child"])
    for extra in ("idle", "other"):
        if roles[extra]:
            text += " +%d %s" % (roles[extra], extra)
    return text + ")"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter of the scenario parents (default: "
                         "this one); it must import warmfork")
    ap.add_argument("--methods", default="forkserver,warmfork")
    ap.add_argument("--variants", default=",".join(leak_scenarios.VARIANTS))
    opts = ap.parse_args(argv)
    print(ROW % ("method", "variant", "scenario", "processes (p/s/t/c)",
                 "names", "at kill", "after", "too early", "warned", "exit s"))
    failed = 0
    for method in opts.methods.split(","):
        for variant in opts.variants.split(","):
            for scenario, text in leak_scenarios.SCENARIOS.items():
                label = "%s: %s" % (scenario, text)
                try:
                    with tempfile.TemporaryDirectory() as workdir:
                        r = leak_scenarios.run(method, scenario, variant,
                                               workdir, opts.python)
                except (leak_scenarios.ScenarioFailed, OSError) as exc:
                    failed += 1
                    print("%-10s %-8s %-46s FAILED: %s"
                          % (method, variant, label, exc))
                    continue
                warned = ",".join("%d %s" % (n, kind)
                                  for kind, n in sorted(r.warned.items()))
                print(ROW % (method, variant, label, processes(r.roles),
                             len(r.names), len(r.at_kill), len(r.after),
                             len(r.too_early), warned or "-",
                             "%.2f" % r.exit_seconds))
    print("processes: while the parent and 2 children hold their names. at "
          "kill: names there when the SIGKILL(s) came; after: still there "
          "once every process, server and tracker too, exited; too early: "
          "gone while a process used them (a, b); warned: the tracker's "
          "'leaked' warnings; exit s: kill to the last process gone. "
          "default: set_start_method(), SharedMemory first; context: "
          "get_context(), Lock first.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
