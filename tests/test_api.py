"""The embedding API: warmfork.Server and its handles."""
import os
import signal

import pytest

import warmfork
import helpers


def test_spawn_wait_exitcode():
    with warmfork.Server(preload=["json"]) as server:
        assert server.pid > 0
        handle = server.spawn(helpers.exit_with, 3)
        assert handle.pid > 0 and handle.pid != server.pid
        assert isinstance(handle.sentinel, int)
        assert handle.wait(20) == 3
        assert handle.exitcode == 3 and not handle.is_alive()
        handle.close()


def test_kwargs_and_pipe():
    import multiprocessing as mp
    r, w = mp.Pipe(duplex=False)
    with warmfork.Server() as server:
        # "json" is imported by the server itself, so a child has it.
        h = server.spawn(helpers.is_module_loaded, name="json", conn=w)
        w.close()
        assert r.recv() is True
        assert h.wait(20) == 0


def test_wait_timeout_then_terminate_and_kill():
    with warmfork.Server() as server:
        h = server.spawn(helpers.sleep, 30)
        assert h.wait(0.05) is None and h.exitcode is None
        h.terminate()
        assert h.wait(20) == -signal.SIGTERM
        h2 = server.spawn(helpers.sleep, 30)
        h2.kill()
        assert h2.wait(20) == -signal.SIGKILL


def test_servers_are_independent_of_the_context_and_each_other():
    with warmfork.Server(preload=["wave"]) as a, warmfork.Server() as b:
        assert a.pid != b.pid
        import multiprocessing as mp
        r, w = mp.Pipe(duplex=False)
        h = a.spawn(helpers.is_module_loaded, "wave", w)
        assert r.recv() is True
        h.wait(20)


def test_closed_server_refuses_spawn_and_children_finish():
    server = warmfork.Server()
    h = server.spawn(helpers.sleep, 0.3)
    server.close()
    with pytest.raises(ValueError):
        server.spawn(helpers.noop)
    assert h.wait(20) == 0          # the server lives on for its child


def test_bad_preload_argument():
    with pytest.raises(TypeError):
        warmfork.Server(preload=[1])


def test_failing_preload_warns():
    with pytest.warns(warmfork.PreloadWarning, match="warmfork_nope"):
        server = warmfork.Server(preload=["warmfork_nope"])
    server.close()


def test_killed_server_makes_spawn_raise_not_swap():
    # A framework owns its Server: warmfork does not replace it behind its
    # back; spawn() says the server is gone.
    from warmfork.client import ServerGone
    server = warmfork.Server()
    os.kill(server.pid, signal.SIGKILL)
    os.waitpid(server.pid, 0)
    with pytest.raises(ServerGone):
        server.spawn(helpers.noop)
    server.close()
