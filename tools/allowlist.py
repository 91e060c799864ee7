"""What tools/conformance.py does not hold against warmfork, and why.

ALLOWLIST: tests that pass under forkserver but cannot apply to warmfork.
Each key is an fnmatch pattern over "TestClass.test_method"; each value is
(first CPython version it applies to, reason). Each reason was checked
against test/_test_multiprocessing.py of 3.9 - 3.13. An entry whose tests
start to pass under warmfork is reported ("allowlisted but passed"):
delete it then.

Deliberately not listed, although they name the stdlib methods:
test_set_get and test_context (they loop over fork/spawn/
forkserver and restore the previous method with set_start_method(old,
force=True): they must pass with "warmfork" as the global method, spawn
children included, which need warmfork's .pth hook).
"""
import fnmatch

ALLOWLIST = {
    "*.test_forkserver_sigint": ((3, 9),
        "check_forkserver_death() skips unless get_start_method() == "
        "'forkserver'; it kills the stdlib server through multiprocessing."
        "forkserver._forkserver._forkserver_pid, which warmfork does not "
        "use (warmfork's own 'server died' behaviour: tests/test_server.py)"),
    "*.test_forkserver_sigkill": ((3, 9),
        "as test_forkserver_sigint, with SIGKILL"),
    "TestStartMethod.test_preload_resources": ((3, 9),
        "skips unless get_start_method() == 'forkserver'; it runs "
        "test/mp_preload.py, which calls get_context('forkserver') itself"),
    "TestStartMethod.test_get_all": ((3, 9),
        "asserts that get_all_start_methods() is one of four hard-coded "
        "lists; warmfork lists itself there on purpose (torch and others "
        "accept a start method name only if it is listed; README 'What "
        "differs'), so the test fails in any interpreter where warmfork is "
        "installed, under forkserver too"),
    "TestFlags.test_flags": ((3, 12),
        "re-runs the interpreter with -E -S -O and calls set_start_method("
        "<current method>) there; -S skips site, so the .pth hook cannot "
        "register warmfork (ValueError). Before 3.12 the test ignores the "
        "current method"),
}

# Tests run under no method (regrtest --ignore), as they say nothing about
# the start method and can stall the run.
NOT_RUN = {
    "WithThreadsTestPool.test_terminate":
        "ThreadPool (threads, no start method): on 3.9 - 3.12 workers that "
        "took a time.sleep(LONG_TIMEOUT=300) task before terminate() cannot "
        "be stopped, so join() sometimes waits 300 s (3.13 sleeps 1 s)",
}


def allowed(test_id, version):
    """The reason test_id may fail under warmfork on version (a tuple), or
    None."""
    for pattern, (since, reason) in ALLOWLIST.items():
        if version >= since and fnmatch.fnmatchcase(test_id, pattern):
            return reason
    return None
