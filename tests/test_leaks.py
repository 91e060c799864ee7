"""Kill parts of a real tree that holds named semaphores and shared memory:
no name leaks, none goes while in use, the tree has the expected shape.

Every scenario runs under the stdlib "forkserver" too. There the tree has
a resource-tracker process: that run shows the census can see one, and it
gives the warnings warmfork must repeat word for word and count for count.
The scenarios are described in leak_scenarios.py.
"""
import pytest

import leak_scenarios
import warmfork

METHODS = ("forkserver", "warmfork")

# Names in the tracker's "leaked" warnings, by scenario; the same for both
# methods. a: the 2 killed children's Locks and segments. b: the parent's
# Lock and segment, and the segment each child left (their Locks were
# unlinked by the children's finalizers). c: all 6.
WARNED = {
    "0": {},
    "a": {"semaphore": 2, "shared_memory": 2},
    "b": {"semaphore": 1, "shared_memory": 3},
    "c": {"semaphore": 3, "shared_memory": 3},
}

# The census while everything is in use, idle children aside. warmfork
# folds the tracker into its server (DESIGN.md section 1).
ROLES = {
    "forkserver": {"parent": 1, "server": 1, "tracker": 1, "child": 2,
                   "other": 0},
    "warmfork": {"parent": 1, "server": 1, "tracker": 0, "child": 2,
                 "other": 0},
}
# Children forked ahead (warmfork's pool). The server refills it only when
# it has nothing else to do, so the census may come before the refill.
MAX_IDLE = {"forkserver": 0, "warmfork": warmfork.DEFAULT_POOL_SIZE}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    """Run each (method, variant, scenario) once, whichever test asks first."""
    done = {}

    def get(method, variant, scenario):
        key = (method, variant, scenario)
        if key not in done:
            workdir = tmp_path_factory.mktemp("-".join(key))
            done[key] = leak_scenarios.run(method, scenario, variant,
                                           str(workdir))
        return done[key]
    return get


every_run = pytest.mark.parametrize(
    "method,variant,scenario",
    [(m, v, s) for m in METHODS for v in leak_scenarios.VARIANTS
     for s in leak_scenarios.SCENARIOS])


@every_run
def test_tree_has_one_server_and_no_other_helper(outcome, method, variant,
                                                 scenario):
    roles = dict(outcome(method, variant, scenario).roles)
    assert roles.pop("idle") <= MAX_IDLE[method]
    assert roles == ROLES[method]


@every_run
def test_no_name_outlives_the_tree(outcome, method, variant, scenario):
    result = outcome(method, variant, scenario)
    assert len(result.names) == 6
    assert result.at_kill == sorted(result.names)   # the kill found them all
    assert result.still_alive == []                 # server/tracker exited
    assert result.after == [], result.stderr


@every_run
def test_leaked_names_are_warned_as_by_the_stdlib(outcome, method, variant,
                                                  scenario):
    result = outcome(method, variant, scenario)
    assert result.warned == WARNED[scenario], result.stderr


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", leak_scenarios.VARIANTS)
@pytest.mark.parametrize("scenario", ["a", "b"])
def test_no_name_goes_while_a_live_process_uses_it(outcome, method, variant,
                                                   scenario):
    assert outcome(method, variant, scenario).too_early == []
