"""warmfork as a drop-in start method: the multiprocessing API end to end."""
import concurrent.futures
import multiprocessing as mp
import os
import signal
import socket
import sys
import time

import pytest

import warmfork
import helpers

ctx = mp.get_context("warmfork")


def test_registered_and_same_context():
    assert warmfork.get_context() is ctx
    assert ctx.get_start_method() == "warmfork"
    assert isinstance(ctx, warmfork.WarmforkContext)
    assert ctx.Process is warmfork.WarmforkProcess


def test_process_lifecycle():
    p = ctx.Process(target=helpers.exit_with, args=(7,), name="seven")
    assert p.name == "seven" and p.exitcode is None
    p.start()
    assert isinstance(p.pid, int) and p.pid > 0 and p.pid != os.getpid()
    assert isinstance(p.sentinel, int)
    p.join(10)
    assert p.exitcode == 7 and not p.is_alive()
    p.close()
    with pytest.raises(ValueError):
        p.pid


@pytest.mark.parametrize("how,code", [("terminate", -signal.SIGTERM),
                                      ("kill", -signal.SIGKILL)])
def test_terminate_and_kill_give_negative_signal(how, code):
    p = ctx.Process(target=helpers.sleep, args=(30,))
    p.start()
    assert p.is_alive()
    getattr(p, how)()
    p.join(10)
    assert p.exitcode == code


def test_join_timeout_and_sentinel():
    from multiprocessing.connection import wait
    p = ctx.Process(target=helpers.sleep, args=(0.5,))
    p.start()
    t = time.monotonic()
    p.join(0.05)
    assert p.exitcode is None and time.monotonic() - t < 0.4
    assert wait([p.sentinel], 10) == [p.sentinel]
    p.join()
    assert p.exitcode == 0


def test_daemon_flag_reaches_child_and_exception_gives_1():
    p = ctx.Process(target=helpers.exit_with, args=("boom",), daemon=True)
    p.start()
    p.join(10)
    assert p.daemon and p.exitcode == 1


def test_child_identity_follows_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", sys.path + ["/nonexistent-marker"])
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=helpers.send_identity, args=(w,), name="who")
    p.start()
    w.close()
    info = r.recv()
    p.join(10)
    assert info["pid"] == p.pid
    assert info["name"] == "who"
    assert info["parent_pid"] == os.getpid()
    assert info["cwd"] == str(tmp_path)
    assert "/nonexistent-marker" in info["sys_path"]
    assert info["start_method"] == "warmfork"


def test_parent_process_alive_while_parent_runs():
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=helpers.report_parent_alive, args=(w,))
    p.start()
    w.close()
    assert r.recv() is True
    p.join(10)


def test_connection_and_socket_args_travel_as_fds():
    a, b = socket.socketpair()
    p = ctx.Process(target=helpers.echo_over_socket, args=(b,))
    p.start()
    b.close()
    a.sendall(b"hello")
    assert a.recv(100) == b"HELLO"
    p.join(10)
    a.close()
    assert p.exitcode == 0


def test_child_holds_only_expected_fds():
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=helpers.report_fds, args=(w,))
    p.start()
    w.close()
    fds = r.recv()
    p.join(10)
    # stdio; our connection and the parent sentinel (pipes); the tracker
    # channel (a packet-mode pipe); /dev/null from the stdlib's _close_stdin in
    # _bootstrap.  None of the server's listener, clients or pipes.
    kinds = sorted(target.split(":")[0] for fd, target in fds.items()
                   if fd > 2)
    assert kinds == ["/dev/null", "pipe", "pipe", "pipe"], fds


def test_queue_simplequeue_pipe():
    q = ctx.Queue()
    sq = ctx.SimpleQueue()
    procs = [ctx.Process(target=helpers.put, args=(q, i)) for i in range(4)]
    procs += [ctx.Process(target=helpers.put, args=(sq, "s"))]
    for p in procs:
        p.start()
    assert sorted(q.get(timeout=10) for _ in range(4)) == [0, 1, 2, 3]
    assert sq.get() == "s"
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    q.close()
    q.join_thread()
    sq.close()


def test_lock_value_event():
    lock = ctx.Lock()
    value = ctx.Value("i", 0, lock=False)
    procs = [ctx.Process(target=helpers.increment_under_lock,
                         args=(lock, value)) for _ in range(3)]
    start, done = ctx.Event(), ctx.Event()
    procs.append(ctx.Process(target=helpers.wait_event_then_set,
                             args=(start, done)))
    for p in procs:
        p.start()
    start.set()
    assert done.wait(10)
    for p in procs:
        p.join(10)
    assert value.value == 150


def test_pool():
    with ctx.Pool(2) as pool:
        assert pool.map(helpers.square, range(10)) == [x * x for x in range(10)]
        assert pool.apply_async(helpers.square, (7,)).get(10) == 49


def test_pool_maxtasksperchild_restarts_workers():
    with ctx.Pool(2, maxtasksperchild=1) as pool:
        assert pool.map(helpers.square, range(6), chunksize=1) == \
            [x * x for x in range(6)]


def test_manager():
    with ctx.Manager() as manager:
        d = manager.dict()
        q = manager.Queue()
        p = ctx.Process(target=helpers.put, args=(q, 1))
        p.start()
        p.join(10)
        d["k"] = q.get(timeout=10)
        assert dict(d) == {"k": 1}
        assert p.exitcode == 0


def test_process_pool_executor():
    # max_tasks_per_child=1: with 2 the stdlib executor itself hangs on
    # 3.11-3.13 here, under "forkserver" too (a CPython bug, not ours).
    kwargs = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=2, mp_context=ctx, **kwargs) as ex:
        assert list(ex.map(helpers.square, range(8))) == \
            [x * x for x in range(8)]


def _pth_installed():
    import sysconfig
    return os.path.exists(os.path.join(sysconfig.get_paths()["purelib"],
                                       "warmfork.pth"))


@pytest.mark.skipif(not _pth_installed(),
                    reason="warmfork.pth is installed by a regular (not "
                           "editable) install")
def test_set_start_method_in_fresh_interpreter(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(
        "import multiprocessing as mp\n"
        "import helpers\n"
        "if __name__ == '__main__':\n"
        "    mp.set_start_method('warmfork')\n"
        "    p = mp.Process(target=helpers.exit_with, args=(3,))\n"
        "    p.start(); p.join(20)\n"
        "    print(type(p).__name__, p.exitcode)\n")
    import subprocess
    env = helpers.test_env()
    out = subprocess.run([sys.executable, str(script)], env=env,
                         capture_output=True, text=True, timeout=60)
    # No "import warmfork" in the script: the .pth hook registers it.
    assert out.stdout.split() == ["Process", "3"], out.stderr


def test_forked_child_does_not_share_the_connection():
    # A "fork" child that starts warmfork processes gets its own server.
    fork_ctx = mp.get_context("fork")
    p0 = ctx.Process(target=helpers.noop)
    p0.start()
    p0.join(10)
    p = fork_ctx.Process(target=_start_one_warmfork_child)
    p.start()
    p.join(30)
    assert p.exitcode == 0


def _start_one_warmfork_child():
    p = ctx.Process(target=helpers.exit_with, args=(0,))
    p.start()
    p.join(10)
    sys.exit(p.exitcode)


def test_threads_starting_concurrently():
    # Every start() polls all children from its own thread: the exit code
    # must still be read exactly once (the stdlib forkserver can report 255).
    import threading
    results = []

    def start_some():
        for _ in range(5):
            p = ctx.Process(target=helpers.exit_with, args=(5,))
            p.start()
            p.join(10)
            results.append(p.exitcode)
    threads = [threading.Thread(target=start_some) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [5] * 20


@pytest.mark.parametrize("reference", ["forkserver", "fork"])
def test_child_atexit_handlers_run_as_under_the_stdlib(reference):
    # 3.13 runs a child's atexit handlers (gh-83856); older versions do not.
    def outcome(method):
        c = mp.get_context(method)
        r, w = c.Pipe(duplex=False)
        p = c.Process(target=helpers.register_atexit_then_return, args=(w,))
        p.start()
        w.close()
        p.join(20)
        try:
            return r.recv() if r.poll(2) else None
        except EOFError:
            return None
    assert outcome("warmfork") == outcome(reference)
