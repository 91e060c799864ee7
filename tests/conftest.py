import os
import sys

import pytest

# Children unpickle their targets by module name: make this folder importable
# in the server and its children, whatever pytest's import mode.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def open_fds():
    """The set of fds open in this process."""
    return set(int(fd) for fd in os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak():
    """Fail a test that leaves fds open in the test process."""
    before = open_fds()
    yield
    leaked = open_fds() - before
    # listdir's own fd is gone by now; anything left is the test's.
    assert not leaked, "leaked fds: %s" % {
        fd: os.readlink("/proc/self/fd/%d" % fd) for fd in leaked
        if os.path.exists("/proc/self/fd/%d" % fd)}
