"""Whole programs, run as scripts, under warmfork and the stdlib methods.

Issue 9 ("drop-in without surprises"): what a script sees and says under
warmfork must be what it sees and says under spawn or forkserver, except
that its top-level code runs once, in the server, instead of once per
child.  Each test runs a small script in a fresh interpreter and compares.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import procinfo

HERE = os.path.dirname(os.path.abspath(__file__))


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def run(args, cwd, timeout=60, **kwargs):
    env = dict(os.environ, PYTHONPATH=HERE)
    return subprocess.run([sys.executable] + list(args), cwd=str(cwd),
                          env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def gone(pid):
    return not procinfo.alive(pid)


def wait_gone(pids, timeout):
    """Wait until every pid has exited (gone or a zombie)."""
    return procinfo.wait_until(
        lambda: not any(procinfo.alive(pid) for pid in pids), timeout)


def shm_path(name):
    name = name.lstrip("/")
    return "/dev/shm/" + ("sem." + name if name.startswith("mp-") else name)


ARGPARSE = '''
    import argparse, json, os, sys
    import multiprocessing as mp

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--name", default="default")
    args = parser.parse_args()
    if mp.current_process().name == "MainProcess":
        print("banner", flush=True)      # the parent's, not its helpers'

    def work(_):
        return [args.lr, args.name, os.getcwd(), sys.argv[1:]]

    if __name__ == "__main__":
        import warmfork
        for method in ("spawn", "forkserver", "warmfork"):
            with mp.get_context(method).Pool(2) as pool:
                print(method, json.dumps(pool.map(work, range(2))),
                      flush=True)
'''


@pytest.fixture(scope="module")
def argparse_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("argparse")
    write(tmp_path, "train.py", ARGPARSE)
    out = run(["train.py", "--lr", "0.5", "--name", "x y"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path, out.stdout.splitlines()


def test_top_level_argparse_sees_the_parents_argv(argparse_run):
    # Issue 9, point 1: workers got lr == 0.1 (the default) under warmfork.
    tmp_path, lines = argparse_run
    results = dict(line.split(" ", 1) for line in lines if line != "banner")
    expected = [0.5, "x y", str(tmp_path), ["--lr", "0.5", "--name", "x y"]]
    for method in ("spawn", "forkserver", "warmfork"):
        assert json.loads(results[method]) == [expected, expected], method


def test_main_process_guard_by_name_skips_in_the_server(argparse_run):
    # `if current_process().name == "MainProcess":` keeps top-level code out
    # of spawn children (spawn.prepare names them first); the server that
    # runs __main__ is not the main process either.
    assert argparse_run[1].count("banner") == 1, argparse_run[1]


def test_top_level_argparse_with_dash_m(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write(pkg, "train.py", ARGPARSE)
    out = run(["-m", "pkg.train", "--lr", "0.25"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    results = dict(line.split(" ", 1) for line in out.stdout.splitlines()
                   if line != "banner")
    assert json.loads(results["warmfork"]) == json.loads(results["spawn"])
    assert json.loads(results["warmfork"])[0][0] == 0.25


FAILS_BEFORE_TARGET = '''
    import os, sys, importlib
    import multiprocessing as mp

    def refuse():
        raise ValueError("this argument cannot be unpickled")

    class Unpicklable:
        def __reduce__(self):
            return (refuse, ())

    def noop(*args):
        pass

    if __name__ == "__main__":
        import warmfork
        ctx = mp.get_context(sys.argv[1])

        def under_the_guard():           # the classic mistake
            pass

        # A module the parent imported, gone before the child looks for it.
        sys.path.insert(0, os.getcwd())
        with open("vanishing.py", "w") as f:
            f.write("def work():\\n    pass\\n")
        vanishing = importlib.import_module("vanishing")
        os.remove("vanishing.py")

        for target, args in [(under_the_guard, ()), (vanishing.work, ()),
                             (noop, (Unpicklable(),))]:
            p = ctx.Process(target=target, args=args)
            p.start()
            p.join(30)
            print(target.__name__, p.exitcode, flush=True)
'''


@pytest.mark.parametrize("method", ["spawn", "warmfork"])
def test_child_that_fails_before_its_target_prints_why(tmp_path, method):
    # Issue 9, point 2: warmfork children died with exit code 1 and not a
    # word.  spawn's interpreter prints the traceback; so must we.
    write(tmp_path, "mistakes.py", FAILS_BEFORE_TARGET)
    out = run(["mistakes.py", method], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["under_the_guard", "1", "work", "1",
                                  "noop", "1"]
    err = out.stderr
    assert err.count("Traceback (most recent call last)") == 3, err
    assert ("AttributeError: Can't get attribute 'under_the_guard' on "
            "<module '__mp_main__'") in err
    assert "ModuleNotFoundError: No module named 'vanishing'" in err
    assert "ValueError: this argument cannot be unpickled" in err


UNGUARDED_POOL = '''
    import multiprocessing as mp
    import warmfork

    def double(x):
        return 2 * x

    mp.set_start_method("warmfork")
    pool = mp.Pool(4)                  # no `if __name__ == "__main__":`
    print(pool.map(double, range(8)))
'''


def test_unguarded_top_level_pool_fails_once_and_says_why(tmp_path):
    # Issue 9, point 2: under spawn and forkserver every worker re-runs the
    # script, fails with the stdlib's RuntimeError, and the Pool replaces it
    # for ever.  warmfork's server runs the script once, fails the same
    # way, and the parent's Pool() raises that error: one traceback, exit.
    write(tmp_path, "unguarded.py", UNGUARDED_POOL)
    t = time.monotonic()
    out = run(["unguarded.py"], cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - t
    assert out.returncode == 1, (out.stdout, out.stderr)
    err = out.stderr
    assert "RuntimeError: warmfork: the server ran the top-level code" in err
    assert "finished its bootstrapping phase" in err
    assert 'line 9, in <module>\n    pool = mp.Pool(4)' in err
    # The parent's traceback, which quotes the server's: nothing else.
    assert err.count("Traceback (most recent call last)") == 2, err
    assert "leaked" not in err and "died unexpectedly" not in err, err
    assert elapsed < 30


TOP_LEVEL_LOCK = '''
    import json, sys
    import multiprocessing as mp
    import warmfork

    ctx = mp.get_context("warmfork")
    lock = ctx.Lock()                  # at the top level: also in the server
    queue = ctx.Queue()

    def name_of_lock(_):
        with lock:
            return lock._semlock.name

    if __name__ == "__main__":
        with ctx.Pool(2) as pool:
            names = sorted(set(pool.map(name_of_lock, range(4))))
        print(json.dumps({"parent": lock._semlock.name, "children": names}))
'''


def test_named_objects_at_the_top_level_stay_in_the_server(tmp_path):
    # A Lock at the top of the script is created in the server too (once,
    # shared by every child, as under fork).  It must neither start another
    # server nor fail the preload, and it is unlinked, without a leak
    # report, when the tree is gone.
    write(tmp_path, "toplock.py", TOP_LEVEL_LOCK)
    out = run(["-W", "error::RuntimeWarning", "toplock.py"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    names = json.loads(out.stdout)
    assert len(names["children"]) == 1           # the server's one lock
    assert names["children"] != [names["parent"]]
    for name in [names["parent"]] + names["children"]:
        assert not os.path.exists(shm_path(name)), name


BUSY_POOL = '''
    import gc, json, os, sys, time
    import multiprocessing as mp
    from multiprocessing import synchronize
    import warmfork

    def spin(_):
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pass

    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[1])
        pool = ctx.Pool(2)
        pool.map_async(spin, range(8))
        names = [o._semlock.name for o in gc.get_objects()
                 if isinstance(o, synchronize.SemLock)]
        pids = [p.pid for p in pool._pool]
        print(json.dumps({"names": names, "pids": pids}), flush=True)
        time.sleep(60)
'''


@pytest.mark.parametrize("method", ["forkserver", "warmfork"])
def test_sigterm_to_the_process_group_unlinks_and_reports(tmp_path, method):
    # Issue 9, point 3: `timeout 4 python prog.py` (SIGTERM to the whole
    # group) left every semaphore in /dev/shm.  The server outlives the
    # signal as the stdlib tracker does, unlinks, and says so.
    write(tmp_path, "busy.py", BUSY_POOL)
    env = dict(os.environ, PYTHONPATH=HERE)
    proc = subprocess.Popen([sys.executable, "busy.py", method],
                            cwd=str(tmp_path), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["names"] and all(os.path.exists(shm_path(n))
                                     for n in info["names"])
        os.killpg(proc.pid, signal.SIGTERM)
        # EOF on stderr: every process of the tree, tracker included, is gone.
        err = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGTERM
    assert wait_gone(info["pids"], 10)
    left = [n for n in info["names"] if os.path.exists(shm_path(n))]
    assert left == [], err
    assert ("resource_tracker: There appear to be %d leaked semaphore "
            "objects to clean up at shutdown" % len(info["names"])) in err


DAEMONS = '''
    import json, os, sys, time
    import multiprocessing as mp
    import warmfork

    def sleep():
        time.sleep(30)

    if __name__ == "__main__":
        ctx = mp.get_context("warmfork")
        daemonic = ctx.Process(target=sleep, daemon=True)
        other = ctx.Process(target=sleep)
        daemonic.start()
        other.start()
        from warmfork.popen_warmfork import default_server
        print(json.dumps({"daemonic": daemonic.pid, "other": other.pid,
                          "server": default_server().pid}), flush=True)
        os.kill(os.getpid(), 9)
'''


def test_daemonic_children_die_with_a_sigkilled_parent(tmp_path):
    # Issue 9, point 5: a SIGKILLed parent runs no atexit handler, so the
    # server terminates its daemonic children (within a second) and leaves
    # the others alone, as multiprocessing's own exit would have.
    write(tmp_path, "daemons.py", DAEMONS)
    env = dict(os.environ, PYTHONPATH=HERE)
    proc = subprocess.Popen([sys.executable, "daemons.py"],
                            cwd=str(tmp_path), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids = json.loads(proc.stdout.readline())
    try:
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        t = time.monotonic()
        assert wait_gone([pids["daemonic"]], 5)
        assert time.monotonic() - t < 1.0
        time.sleep(0.5)
        assert not gone(pids["other"]) and not gone(pids["server"])
    finally:
        if not gone(pids["other"]):
            os.kill(pids["other"], signal.SIGKILL)
    # The server stays for its last child, then exits.
    assert wait_gone([pids["server"]], 10)
    proc.communicate(timeout=30)


GET_ALL = '''
    import multiprocessing as mp
    from multiprocessing import *          # copies get_all_start_methods
    import multiprocessing.context as c
    print(mp.get_all_start_methods())
    print(get_all_start_methods())
    print(type(c._default_context).get_all_start_methods(c._default_context))
    print(mp.get_context("warmfork").get_start_method())
'''


def test_name_is_listed_without_importing_warmfork(tmp_path):
    # Issue 9, point 4: torch's DataLoader checks the name against
    # get_all_start_methods().  warmfork.pth registers the method when
    # multiprocessing loads; the stdlib's own list stays a prefix.
    import sysconfig
    if not os.path.exists(os.path.join(sysconfig.get_paths()["purelib"],
                                       "warmfork.pth")):
        pytest.skip("warmfork.pth comes with a regular install")
    write(tmp_path, "names.py", GET_ALL)
    out = run(["names.py"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed, star, stdlib, name = out.stdout.splitlines()
    assert listed == star == repr(eval(stdlib) + ["warmfork"])
    assert name == "warmfork"


def test_name_is_listed_last():
    import multiprocessing as mp
    import warmfork  # noqa: F401
    methods = mp.get_all_start_methods()
    assert methods[-1] == "warmfork" and methods.count("warmfork") == 1
    assert mp.get_all_start_methods() is not methods   # a fresh list
    from multiprocessing import context
    assert context._default_context.get_all_start_methods() == methods


ENVIRON = '''
    import os, sys
    import multiprocessing as mp
    import warmfork

    def show(queue):
        queue.put([os.environ.get("MASTER_PORT"), os.environ.get("GONE"),
                   os.environ.get("SAME")])

    if __name__ == "__main__":
        os.environ["GONE"] = "here"
        os.environ["SAME"] = "same"
        for method in ("spawn", "warmfork"):
            ctx = mp.get_context(method)
            queue = ctx.Queue()
            p = ctx.Process(target=show, args=(queue,))
            p.start()                          # the server starts here
            before = queue.get()
            p.join()
            os.environ["MASTER_PORT"] = "12355"     # torch DDP's recipe
            del os.environ["GONE"]
            p = ctx.Process(target=show, args=(queue,))
            p.start()
            print(method, before, queue.get())
            p.join()
            os.environ["GONE"] = "here"
            del os.environ["MASTER_PORT"]
'''


def test_children_get_the_parents_environment_of_the_moment(tmp_path):
    # Under spawn (and fork) a child inherits the parent's environment when
    # it starts; warmfork's server was started earlier (at the first start,
    # or by prestart()), so each start carries the changes since.
    write(tmp_path, "environ.py", ENVIRON)
    out = run(["environ.py"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    expected = "[None, 'here', 'same'] ['12355', None, 'same']"
    assert lines == ["spawn " + expected, "warmfork " + expected]


def test_terminate_right_after_start_is_never_lost():
    # A child runs for a moment between fork() and the C core's reset of
    # the SIGTERM the server ignores.  A SIGTERM sent then (terminate()
    # right after start(), or the server's to a daemonic child whose owner
    # just died) was discarded, and the child ran on: 26 of 40 here.
    import warmfork
    import helpers
    with warmfork.Server(pool_size=0) as server:     # every start forks
        codes = []
        for _ in range(20):
            handle = server.spawn(helpers.sleep, 30)
            handle.terminate()
            codes.append(handle.wait(10))
            if codes[-1] is None:
                handle.kill()
                handle.wait(10)
    assert codes == [-signal.SIGTERM] * 20
