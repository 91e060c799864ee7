"""warmfork.Server for frameworks: per-spawn options, background start,
asyncio, and what a child inherits (README "Embedding warmfork")."""
import asyncio
import multiprocessing as mp
import os
import re
import subprocess
import sys
import threading

import pytest

import warmfork

import embed_targets as t


@pytest.fixture(scope="module")
def server():
    with warmfork.Server(preload=["embed_targets"]) as server:
        yield server


def _call(server, options, target, *args):
    """Run target(conn, *args) in a child set up by options; return what
    it sent and its exit code."""
    r, w = mp.Pipe(duplex=False)
    with r:
        handle = server.spawn_with(options, target, w, *args)
        w.close()
        value = r.recv()
    assert handle.wait(20) == 0
    handle.close()
    return value


def test_env_overrides_and_removal(server):
    opts = warmfork.SpawnOptions(env={"WF_A": "1", "HOME": None})
    env = _call(server, opts, t.send_environ, ["WF_A", "HOME", "PATH"])
    assert env == {"WF_A": "1", "HOME": None, "PATH": os.environ.get("PATH")}


def test_clear_env_starts_empty(server):
    opts = warmfork.SpawnOptions(env={"ONLY": "this"}, clear_env=True)
    assert _call(server, opts, t.send_environ_all) == {"ONLY": "this"}


def test_env_is_the_parents_of_the_moment(server, monkeypatch):
    # As under spawn: the parent's environment when it spawns, not when the
    # server started; env= overrides it.
    monkeypatch.setenv("WF_LATE", "parent")
    assert _call(server, None, t.send_environ, ["WF_LATE"]) == \
        {"WF_LATE": "parent"}
    opts = warmfork.SpawnOptions(env={"WF_LATE": "option"})
    assert _call(server, opts, t.send_environ, ["WF_LATE"]) == \
        {"WF_LATE": "option"}


def test_cwd_absolute_relative_and_missing(server, tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    assert _call(server, warmfork.SpawnOptions(cwd=sub), t.send_cwd) == \
        str(sub)
    monkeypatch.chdir(tmp_path)           # relative: to the parent's cwd
    assert _call(server, warmfork.SpawnOptions(cwd="sub"), t.send_cwd) == \
        str(sub)
    with pytest.raises(FileNotFoundError):
        server.spawn_with(warmfork.SpawnOptions(cwd="missing"), t.add, 1)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        server.spawn_with(warmfork.SpawnOptions(cwd="file"), t.add, 1)


def test_stdout_and_stderr_to_files_and_devnull(server, tmp_path, capfd):
    out = tmp_path / "out.log"
    out.write_text("before\n")
    opts = warmfork.SpawnOptions(stdout=out, stderr=os.devnull)
    h = server.spawn_with(opts, t.write_stdio, "to the file\n", "lost\n")
    assert h.wait(20) == 0
    assert out.read_text() == "before\nto the file\n"       # appended
    assert "lost" not in capfd.readouterr().err


def test_stdio_to_an_fd_or_a_file_object_of_the_parent(server, tmp_path):
    path = tmp_path / "both.log"
    with open(path, "w") as f:
        opts = warmfork.SpawnOptions(stdout=f, stderr=f.fileno())
        h = server.spawn_with(opts, t.write_stdio, "out\n", "err\n")
        assert h.wait(20) == 0
    assert sorted(path.read_text().split()) == ["err", "out"]


def test_stdin_from_a_file(server, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("hello child")
    opts = warmfork.SpawnOptions(stdin=path)
    assert _call(server, opts, t.read_stdin_to) == "hello child"


def test_default_stdio_is_the_servers(capfd):
    # The server took the parent's fds 1 and 2 when it started (here:
    # pytest's capture files); its children write there.
    with warmfork.Server(preload=["embed_targets"]) as server:
        h = server.spawn(t.write_stdio, "out-inherited\n", "err-inherited\n")
        assert h.wait(20) == 0
    out, err = capfd.readouterr()
    assert "out-inherited" in out and "err-inherited" in err


def test_bad_options_are_refused_in_the_parent(server):
    with pytest.raises(ValueError):
        warmfork.SpawnOptions(env={"A=B": "x"})
    with pytest.raises(TypeError):
        warmfork.SpawnOptions(env={"A": 1})
    with pytest.raises(TypeError):
        warmfork.SpawnOptions(stdout=object())
    with pytest.raises(ValueError):
        warmfork.SpawnOptions(stderr=-7)
    with pytest.raises(TypeError):
        warmfork.SpawnOptions(name=b"bytes")
    with pytest.raises(FileNotFoundError):
        server.spawn_with(warmfork.SpawnOptions(stdin="/nonexistent/x"),
                          t.add, 1)


def test_name_in_ps_and_current_process(server):
    opts = warmfork.SpawnOptions(name="frame-worker-0123456789")
    ident = _call(server, opts, t.send_identity)
    assert ident["comm"] == "frame-worker-01"               # 15 bytes
    assert ident["name"] == "frame-worker-0123456789"
    # Not cut in the middle of a UTF-8 sequence.
    ident = _call(server, warmfork.SpawnOptions(name="é" * 10),
                  t.send_identity)
    assert ident["comm"] == "é" * 7


def test_ps_shows_the_name(server):
    started_r, started_w = mp.Pipe(duplex=False)
    release_r, release_w = mp.Pipe(duplex=False)
    opts = warmfork.SpawnOptions(name="wf-ps-name")
    h = server.spawn_with(opts, t.started_then_wait, started_w, release_r)
    assert started_r.recv() == h.pid            # options applied by now
    ps = subprocess.run(["ps", "-o", "comm=", "-p", str(h.pid)],
                        capture_output=True, text=True)
    assert ps.stdout.strip() == "wf-ps-name"
    os.write(release_w.fileno(), b"x")
    assert h.wait(20) == 0
    for conn in (started_r, started_w, release_r, release_w):
        conn.close()


def test_parent_is_the_spawner_os_parent_is_the_server(server):
    ident = _call(server, None, t.send_identity)
    assert ident["parent_pid"] == os.getpid()
    assert ident["ppid"] == server.pid


def test_spawn_with_none_is_spawn(server):
    h = server.spawn_with(None, t.exit_with, 4)
    assert h.wait(20) == 4


def test_options_fds_are_closed_in_the_parent(server, tmp_path,
                                              no_fd_leak):
    opts = warmfork.SpawnOptions(stdout=tmp_path / "o", stdin=os.devnull)
    h = server.spawn_with(opts, t.add, 1)
    assert h.wait(20) == 0
    h.close()


def test_background_start():
    server = warmfork.Server(preload=["embed_targets"], background=True)
    try:
        h = server.spawn(t.exit_with, 5)      # waits for the start
        assert h.wait(20) == 5
        assert server.pid > 0
    finally:
        server.close()
    assert not any(th.name == "warmfork-server-start"
                   for th in threading.enumerate())


def test_background_start_close_without_use():
    server = warmfork.Server(background=True)
    server.close()
    with pytest.raises(ValueError, match="closed"):
        server.spawn(t.add, 1)


def test_background_start_failure_is_raised_at_first_use(tmp_path,
                                                         monkeypatch):
    (tmp_path / "wf_exit_on_import.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    server = warmfork.Server(preload=["wf_exit_on_import"], background=True)
    with pytest.raises(RuntimeError, match="exited while starting"):
        server.spawn(t.add, 1)
    with pytest.raises(RuntimeError, match="exited while starting"):
        server.pid
    server.close()                               # quiet


def test_await_handles_without_a_thread_per_child(server):
    async def main():
        threads = threading.active_count()
        handles = [server.spawn(t.exit_with, i) for i in range(4)]
        codes = await asyncio.gather(*handles)
        assert threading.active_count() == threads
        return codes
    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_await_one_handle_twice_and_cancel_one_wait(server):
    r, w = mp.Pipe(duplex=False)

    async def main():
        h = server.spawn(t.read_stdin_to, w)   # stdin: /dev/null, returns
        slow = server.spawn(t.sleep, 60)
        waiter = asyncio.ensure_future(slow.wait_async())
        await asyncio.sleep(0.01)
        waiter.cancel()                        # removes only its reader
        a, b = await asyncio.gather(h, h.wait_async())
        slow.kill()
        return a, b, await slow
    a, b, killed = asyncio.run(main())
    w.close()
    assert (a, b) == (0, 0) and killed == -9
    assert r.recv() == ""


README_EXAMPLE = re.compile(r"<!-- embedding-example -->\n```python\n(.*?)```",
                            re.S)


def test_readme_example_runs(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        match = README_EXAMPLE.search(f.read())
    assert match, "README: no embedding example"
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 passed, 1 failed, 1 crashed, 1 timed out" in proc.stdout, \
        proc.stdout
