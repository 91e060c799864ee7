"""warmfork.Executor: a concurrent.futures.Executor, a fresh child per task."""
import asyncio
import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import threading

import pytest

import warmfork
from warmfork.executor import ChildDied, TaskTimeout

import embed_targets as t


@pytest.fixture(scope="module")
def server():
    with warmfork.Server(preload=["embed_targets"], pool_size=2) as server:
        yield server


@pytest.fixture
def ex(server):
    with warmfork.Executor(2, server=server) as ex:
        yield ex


def test_is_a_concurrent_futures_executor(ex):
    assert isinstance(ex, cf.Executor)
    assert isinstance(warmfork.Executor, type)
    assert ex.submit(t.add, 2, b=3).result(20) == 5
    assert list(ex.map(t.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert list(ex.map(abs, [], timeout=5)) == []


def test_every_task_runs_in_a_fresh_child(ex):
    results = [f.result(20) for f in
               [ex.submit(t.pid_and_state, i) for i in range(6)]]
    pids = [pid for pid, _ in results]
    assert len(set(pids)) == 6 and os.getpid() not in pids
    assert all(seen == [] for _, seen in results)    # no state carried over


def test_max_workers_bounds_the_children_alive(server):
    started_r, started_w = mp.Pipe(duplex=False)
    release_r, release_w = mp.Pipe(duplex=False)
    with warmfork.Executor(2, server=server) as ex:
        futures = [ex.submit(t.started_then_wait, started_w, release_r)
                   for _ in range(5)]
        first = {started_r.recv(), started_r.recv()}
        # Two children block on the release pipe: no slot is free, so the
        # other three tasks have not started (a slot frees at exit).
        assert sum(f.running() for f in futures) == 2
        assert not any(f.done() for f in futures)
        assert [f.running() for f in futures[2:]] == [False] * 3
        os.write(release_w.fileno(), b"x" * 5)
        pids = [f.result(20) for f in futures]
    assert first <= set(pids) and len(set(pids)) == 5
    for conn in (started_r, started_w, release_r, release_w):
        conn.close()


def test_exception_reaches_the_future_with_its_traceback(ex):
    future = ex.submit(t.fail, "boom")
    with pytest.raises(ValueError, match="boom") as info:
        future.result(20)
    remote = str(info.value.__cause__)
    assert "Traceback" in remote and "in fail" in remote
    assert 'raise ValueError(message)' in remote


def test_system_exit_in_a_task_reaches_the_future(ex):
    # As ProcessPoolExecutor: the task's BaseException is its result.
    with pytest.raises(SystemExit):
        ex.submit(t.sys_exit, 3).result(20)


@pytest.mark.parametrize("target,arg,code,word", [
    (t.exit_now, 7, 7, "exit code 7"),
    (t.kill_self, signal.SIGKILL, -signal.SIGKILL, "SIGKILL"),
    (t.kill_self, signal.SIGSEGV, -signal.SIGSEGV, "SIGSEGV"),
])
def test_a_child_that_dies_fails_only_its_future(ex, target, arg, code, word):
    dying = ex.submit(target, arg)
    fine = ex.submit(t.add, 1, 1)
    with pytest.raises(ChildDied, match=word) as info:
        dying.result(20)
    assert info.value.exitcode == code and info.value.pid > 0
    assert fine.result(20) == 2
    assert ex.submit(t.add, 2, 2).result(20) == 4     # not broken


def test_cancel_before_start(server, tmp_path):
    started_r, started_w = mp.Pipe(duplex=False)
    release_r, release_w = mp.Pipe(duplex=False)
    marker = tmp_path / "ran"
    with warmfork.Executor(1, server=server) as ex:
        blocker = ex.submit(t.started_then_wait, started_w, release_r)
        started_r.recv()
        queued = ex.submit(t.touch, str(marker))
        assert queued.cancel() and queued.cancelled()
        assert not blocker.cancel()          # running: too late, as stdlib
        os.write(release_w.fileno(), b"x")
        blocker.result(20)
    assert queued.cancelled() and not marker.exists()
    for conn in (started_r, started_w, release_r, release_w):
        conn.close()


def test_task_timeout_kills_the_child_and_fails_the_future(server):
    with warmfork.Executor(2, server=server, task_timeout=0.5) as ex:
        slow = ex.submit(t.sleep, 60)
        quick = ex.submit(t.add, 1, 2)
        with pytest.raises(TaskTimeout, match="killed") as info:
            slow.result(30)
        assert isinstance(info.value, cf.TimeoutError)
        assert quick.result(20) == 3
        assert ex.submit(t.add, 2, 2).result(20) == 4


def test_shutdown_waits_then_refuses(server):
    ex = warmfork.Executor(2, server=server)
    futures = [ex.submit(t.sleep, 0.05) for _ in range(4)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(t.add, 1)
    ex.shutdown()                            # twice is fine


def test_shutdown_cancel_futures(server):
    started_r, started_w = mp.Pipe(duplex=False)
    release_r, release_w = mp.Pipe(duplex=False)
    ex = warmfork.Executor(1, server=server)
    running = ex.submit(t.started_then_wait, started_w, release_r)
    started_r.recv()
    queued = [ex.submit(t.add, i) for i in range(3)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    os.write(release_w.fileno(), b"x")
    assert running.result(20) > 0
    ex.shutdown(wait=True)
    for conn in (started_r, started_w, release_r, release_w):
        conn.close()


def test_shutdown_without_wait_still_completes(server):
    ex = warmfork.Executor(2, server=server)
    futures = [ex.submit(t.add, i, 1) for i in range(4)]
    ex.shutdown(wait=False)
    assert [f.result(20) for f in futures] == [1, 2, 3, 4]


def test_dropped_executor_finishes_its_queue(server):
    future = warmfork.Executor(1, server=server).submit(t.add, 40, 2)
    assert future.result(20) == 42


def test_dropped_unused_executor_closes_its_server():
    import gc
    ex = warmfork.Executor(1, preload=["embed_targets"])
    server = ex.server
    del ex
    gc.collect()
    assert server._server is None


def test_pickling_problems_fail_the_future(ex):
    with pytest.raises(TypeError, match="pickle"):   # the argument
        ex.submit(t.add, threading.Lock()).result(20)
    with pytest.raises(TypeError, match="result could not be pickled"):
        ex.submit(t.make_lambda).result(20)
    with pytest.raises(TypeError, match="Unpicklable"):
        ex.submit(t.raise_unpicklable).result(20)
    assert ex.submit(t.add, 1).result(20) == 1


def test_a_socket_argument_reaches_the_child(ex):
    import socket
    mine, theirs = socket.socketpair()
    with mine:
        future = ex.submit(t.echo_upper, theirs)
        future.add_done_callback(lambda _: theirs.close())  # sent at start
        mine.sendall(b"request")
        assert mine.recv(100) == b"REQUEST"
        assert future.result(20) == 7


def test_result_bigger_than_a_pipe_buffer(ex):
    assert len(ex.submit(t.big, 4 << 20).result(30)) == 4 << 20


def test_options_apply_to_every_task(server, tmp_path):
    opts = warmfork.SpawnOptions(env={"WF_EXEC_TEST": "yes"},
                                 cwd=str(tmp_path), name="wf-task")
    with warmfork.Executor(2, server=server, options=opts) as ex:
        env = ex.submit(t.environ, "WF_EXEC_TEST").result(20)
        assert env == {"WF_EXEC_TEST": "yes"}
        assert ex.submit(t.cwd).result(20) == str(tmp_path)
        ident = ex.submit(t.identity).result(20)
        assert ident["comm"] == "wf-task" and ident["name"] == "wf-task"


def test_asyncio_wrap_future_and_run_in_executor(ex):
    async def main():
        loop = asyncio.get_running_loop()
        a = asyncio.wrap_future(ex.submit(t.add, 1, 2))
        b = loop.run_in_executor(ex, t.add, 3, 4)
        return await asyncio.gather(a, b)
    assert asyncio.run(main()) == [3, 7]


def test_own_server_is_closed_at_shutdown_and_nothing_leaks(no_fd_leak):
    threads = threading.active_count()
    ex = warmfork.Executor(2, preload=(m for m in ["embed_targets"]))
    assert ex.server.preload == ("embed_targets",)
    assert list(ex.map(t.add, range(4))) == [0, 1, 2, 3]
    server = ex.server
    ex.shutdown()
    assert server._server is None             # closed with the Executor
    assert threading.active_count() == threads


def test_shared_server_stays_open(server):
    with warmfork.Executor(1, server=server) as ex:
        ex.submit(t.add, 1).result(20)
    assert server.spawn(t.add, 1).wait(20) == 0


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        warmfork.Executor(0)
    with pytest.raises(ValueError):
        warmfork.Executor(1, task_timeout=0)
    with pytest.raises(TypeError):
        warmfork.Executor(1, options={"env": {}})
    with warmfork.Server() as server:
        with pytest.raises(ValueError, match="server"):
            warmfork.Executor(1, server=server, preload=["json"])
