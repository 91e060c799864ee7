"""warmfork.prestart(): the server preloads while the parent goes on."""
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import warmfork
from warmfork import client
from warmfork.context import current_pool_size

import helpers

HERE = os.path.dirname(os.path.abspath(__file__))
ctx = mp.get_context("warmfork")
PRELOAD_SECONDS = 0.8


@pytest.fixture
def slow_preload(tmp_path, monkeypatch):
    """A preload list of its own (so a server of its own) whose module
    takes PRELOAD_SECONDS to import."""
    name = "slow_%s" % uuid.uuid4().hex[:8]
    (tmp_path / (name + ".py")).write_text(
        "import time\ntime.sleep(%r)\n" % PRELOAD_SECONDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = warmfork.context.current_preload()
    warmfork.set_preload([name])
    yield (name,)
    warmfork.set_preload(saved)


def test_prestart_returns_at_once_and_the_first_start_waits_less(
        slow_preload):
    t = time.monotonic()
    warmfork.prestart()
    assert time.monotonic() - t < PRELOAD_SECONDS / 2
    server = client._servers[slow_preload]
    assert server.pending
    warmfork.prestart()                        # no second server
    assert client._servers[slow_preload] is server
    time.sleep(PRELOAD_SECONDS + 0.4)          # the parent's own work
    t = time.monotonic()
    p = ctx.Process(target=helpers.exit_with, args=(4,))
    p.start()
    p.join(20)
    assert p.exitcode == 4
    assert time.monotonic() - t < PRELOAD_SECONDS / 2
    assert not server.pending and client._servers[slow_preload] is server


def test_fork_while_a_prestarted_server_preloads(slow_preload):
    # A forked child forgets the pending server (its ready pipe too) and
    # starts warmfork processes on a server of its own.
    warmfork.prestart()
    assert client._servers[slow_preload].pending
    p = mp.get_context("fork").Process(target=_start_one)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    q = ctx.Process(target=helpers.noop)
    q.start()
    q.join(20)
    assert q.exitcode == 0


def _start_one():
    p = ctx.Process(target=helpers.exit_with, args=(0,))
    p.start()
    p.join(20)
    sys.exit(p.exitcode)


def test_prestarted_server_that_dies_is_raised_at_first_use_then_retried():
    key = ("colorsys",)                        # a server of its own
    client.prestart(key, 999, lambda: b"")    # wf_server_init: EINVAL
    socket_dir = os.path.dirname(client._servers[key].socket_path)
    assert os.path.isdir(socket_dir)
    with pytest.raises(RuntimeError, match="exited while starting"):
        client.server_for(key, 999, lambda: b"")
    assert key not in client._servers
    assert not os.path.exists(socket_dir)
    server = client.server_for(key, current_pool_size(), lambda: b"")
    assert not server.pending
    server.close()
    del client._servers[key]


def run(tmp_path, source, timeout=60):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=HERE)
    return subprocess.run([sys.executable, str(script)], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_prestart_at_the_top_level_starts_one_server(tmp_path):
    # The server runs __main__, and with it this prestart() call: there it
    # must do nothing (as in a child that re-runs __main__).
    out = run(tmp_path, '''
        import os
        import multiprocessing as mp
        import warmfork
        with open("ran", "a") as f:
            f.write("%d\\n" % os.getpid())
        warmfork.prestart()                 # no guard

        def where():
            return os.getppid()

        if __name__ == "__main__":
            with mp.get_context("warmfork").Pool(2) as pool:
                print(len(set(pool.starmap(where, [()] * 4))))
    ''')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]        # one server, every worker's
    assert len((tmp_path / "ran").read_text().split()) == 2


def test_parent_that_exits_before_the_server_is_ready(tmp_path):
    # Nobody reads the server's "ready": it must still serve its tracker
    # until the parent's EOF, then exit without a word.
    (tmp_path / "slowmod.py").write_text("import time\ntime.sleep(0.5)\n")
    out = run(tmp_path, '''
        import sys
        import warmfork
        sys.path.insert(0, ".")
        warmfork.set_preload(["slowmod"])
        warmfork.prestart()
        from warmfork import client
        print(client._servers[("slowmod",)].pid)
    ''')
    assert out.returncode == 0, out.stderr
    # run() returned at EOF on stderr, which the server holds too.
    from test_programs import wait_gone
    assert wait_gone([int(out.stdout)], 10)
    assert out.stderr == ""
