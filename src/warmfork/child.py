"""A child of the warmfork server: from a START's fds to the target.

Runs only in a process the C core forked: a direct child, or an idle child
of the warm pool once its start has arrived.  The START's fds are read by
their WF_FD_* slot, the same names the parent used to send them.
"""
import os
import signal
import sys
import traceback

from . import stdlib_compat, stdlib_tracker

__all__ = ["DupFd", "get_inherited_fds", "warm_up", "run"]

# The fds the parent passed for the process object (duplicate_for_child
# order), once this process is a child.
_inherited_fds = None


def get_inherited_fds():
    """Return the fds the parent passed to this child, in order."""
    return _inherited_fds


class DupFd:
    """An fd the child finds among the ones it inherited (the parent's
    Popen.DupFd: pickled in place of the fd itself)."""

    def __init__(self, ind):
        self.ind = ind

    def detach(self):
        return _inherited_fds[self.ind]


def warm_up(sample):
    """In an idle child, before it parks: do what a start will do first.

    Unpickling a typical start's data (built by the parent, see
    popen_warmfork.warm_up_sample) touches the objects a real start's
    unpickling touches, so their copy-on-write page faults (~7 us each
    here) happen now, off the critical path.  No user code runs, and
    nothing is kept.
    """
    import io
    import pickle
    if not sample:
        return
    try:
        f = io.BytesIO(sample)
        pickle.load(f)
        pickle.load(f)
    except Exception:
        pass                        # a nicety, never a failure


def run(srv, lib):
    """Run the process object the parent sends; never returns."""
    global _inherited_fds
    code = 1
    try:
        fds = [srv.child_fds[i] for i in range(srv.child_nfds)]
        data_fd = fds[lib.WF_FD_DATA]
        _inherited_fds = fds[lib.WF_FD_INHERITED:]
        # Use the parent's resource tracker, as the stdlib's forkserver
        # children do: usually our server's channel, but a stdlib tracker
        # if the parent had one running before warmfork started.
        stdlib_tracker.use_in_child(fds[lib.WF_FD_TRACKER])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if stdlib_compat.EXIT_FUNCTION_RUNS_AT_EXIT:
            stdlib_compat.run_exit_function_at_exit()
        # The parent keeps a dup of the data pipe's write end: its EOF tells
        # the child that the parent is gone (multiprocessing.parent_process).
        parent_sentinel = os.dup(data_fd)
        code = stdlib_compat.child_main(data_fd, parent_sentinel)
    except stdlib_compat.ParentGone:
        code = 1                    # no target ran; nothing to say
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        # What went wrong before the target ran (an unpicklable target, a
        # function defined under `if __name__ == "__main__":`): print it,
        # as a spawn or forkserver child's interpreter would.
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
        code = 1
    finally:
        if stdlib_compat.EXIT_FUNCTION_RUNS_AT_EXIT:
            stdlib_compat.run_child_atexit()
        os._exit(code)
