"""A child of the warmfork server: from a START's fds to the target.

Runs only in a process the C core forked: a direct child, or an idle child
of the warm pool once its start has arrived.  The START's fds are read by
their WF_FD_* slot, the same names the parent used to send them.
"""
import os
import resource
import signal
import sys
import traceback

from . import stdlib_compat, stdlib_tracker

__all__ = ["DupFd", "get_inherited_fds", "Prefault", "prefault", "warm_up",
           "run"]

# The fds the parent passed for the process object (duplicate_for_child
# order), once this process is a child.
_inherited_fds = None
# Page faults this process had taken when its start began (for the bench:
# what a child of the warm pool did before is off the critical path).
faults_at_start = None


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


class Prefault:
    """Learned pre-faulting (csrc/wf_prefault.c): the first child whose
    target starts while no list exists writes down the pages it has
    written; each idle child then faults those in before it parks.

    The list is a file of page addresses in the server's private socket
    directory (mode 0700), so a child can hand it to later idle children
    without talking to the server.
    """

    MAX_PAGES = 8192                # 32 MB: far above a start's ~200

    def __init__(self, path):
        self.path = path            # None: off

    def learn_when_target_starts(self, process_obj):
        """Wrap process_obj.run: list the written pages, then run."""
        if self.path is None or os.path.exists(self.path):
            return
        run = process_obj.run

        def run_after_learning():
            self._learn()
            return run()
        process_obj.run = run_after_learning

    def _learn(self):
        from .core import ffi, lib
        pages = ffi.new("uint64_t[]", self.MAX_PAGES)
        count = lib.wf_written_pages(pages, self.MAX_PAGES)
        if count <= 0:
            return
        tmp = "%s.%d" % (self.path, os.getpid())
        try:
            with open(tmp, "wb") as f:
                f.write(ffi.buffer(pages, count * 8))
            os.replace(tmp, self.path)  # whole or not at all
        except OSError:
            pass                        # a nicety, never a failure

    def apply(self):
        """In an idle child: fault in the learned pages, if any."""
        if self.path is None:
            return
        from .core import ffi, lib
        try:
            with open(self.path, "rb") as f:
                data = f.read(self.MAX_PAGES * 8)
        except OSError:
            return                      # nothing learned yet
        count = len(data) // 8
        if count:
            lib.wf_prefault(ffi.from_buffer("uint64_t[]", data), count)


# Set by the server before its loop; children inherit it.
prefault = Prefault(None)


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
    global _inherited_fds, faults_at_start
    faults_at_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
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
        code = stdlib_compat.child_main(data_fd, parent_sentinel,
                                        prefault.learn_when_target_starts)
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
