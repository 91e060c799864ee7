"""The README's recipes for PyTorch, Dask and joblib, each run as a script.

Each test runs when its framework is installed and is skipped otherwise
(``pip install ".[test,frameworks]"`` brings Dask and joblib; torch is
installed on its own, see the README).  The scripts are the recipes: what a
user writes, in a fresh interpreter, with the framework's own start-method
setting.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from test_programs import gone, wait_gone

HERE = os.path.dirname(os.path.abspath(__file__))


def start(tmp_path, source, *args, env=None):
    script = tmp_path / "recipe.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=HERE, **(env or {}))
    return subprocess.Popen([sys.executable, str(script)] + list(args),
                            cwd=str(tmp_path), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(tmp_path, source, *args, env=None, timeout=180):
    proc = start(tmp_path, source, *args, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1]), err


TORCH_RECIPES = '''
    import json, os, sys
    import multiprocessing as mp
    import torch                                   # at the top level
    import torch.multiprocessing as tmp
    from torch.utils.data import DataLoader
    import warmfork

    class Items:                                   # a map-style dataset
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.tensor([i, os.getpid()])

    def rank_main(rank, out_dir):
        with open(os.path.join(out_dir, "rank%d" % rank), "w") as f:
            f.write(mp.get_start_method())

    if __name__ == "__main__":
        warmfork.prestart()          # import torch in the server meanwhile
        loader = DataLoader(Items(), batch_size=2, num_workers=2,
                            multiprocessing_context="warmfork")
        rows = torch.cat(list(loader))
        out_dir = sys.argv[1]
        tmp.start_processes(rank_main, args=(out_dir,), nprocs=2,
                            start_method="warmfork")
        print(json.dumps({
            "listed": tmp.get_all_start_methods(),
            "context": loader.multiprocessing_context.get_start_method(),
            "items": sorted(rows[:, 0].tolist()),
            "workers": len(set(rows[:, 1].tolist()) - {os.getpid()}),
            "ranks": {name: open(os.path.join(out_dir, name)).read()
                      for name in sorted(os.listdir(out_dir))}}))
'''


def test_torch_dataloader_and_start_processes(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "ranks").mkdir()
    result, _ = run(tmp_path, TORCH_RECIPES, str(tmp_path / "ranks"))
    assert result["listed"][-1] == "warmfork"
    assert result["context"] == "warmfork"
    assert result["items"] == list(range(8))
    assert result["workers"] == 2
    assert result["ranks"] == {"rank0": "warmfork", "rank1": "warmfork"}


TORCH_KILLED = '''
    import json, os
    import torch
    from torch.utils.data import DataLoader

    class Slow:
        def __len__(self):
            return 1000

        def __getitem__(self, i):
            import time
            time.sleep(0.05)
            return i

    if __name__ == "__main__":
        loader = DataLoader(Slow(), num_workers=2,
                            multiprocessing_context="warmfork")
        it = iter(loader)
        next(it)
        print(json.dumps({"workers": [w.pid for w in it._workers],
                          "daemon": [w.daemon for w in it._workers]}),
              flush=True)
        os.kill(os.getpid(), 9)
'''


def test_torch_dataloader_workers_die_with_a_sigkilled_parent(tmp_path):
    # DataLoader workers are daemonic.  Their own watchdog compares
    # os.getppid() with the pid it saw at start, which is the server's
    # under warmfork (as it is the forkserver's under forkserver), so it
    # never fires: the server terminates them.
    pytest.importorskip("torch")
    proc = start(tmp_path, TORCH_KILLED)
    workers = []
    try:
        info = json.loads(proc.stdout.readline())
        workers = info["workers"]
        proc.wait(60)
        t = time.monotonic()
        assert info["daemon"] == [True, True]
        assert proc.returncode == -signal.SIGKILL
        assert wait_gone(workers, 5)
        assert time.monotonic() - t < 1.0
    finally:
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


DASK_RECIPE = '''
    import json, os, sys
    import multiprocessing as mp
    from dask.distributed import Client, LocalCluster
    import warmfork

    def where(_):
        return [mp.get_start_method(), mp.current_process().daemon]

    if __name__ == "__main__":
        # What Dask preloads for "forkserver" only (distributed and its
        # dependencies), for warmfork's server:
        warmfork.set_preload(["__main__", "distributed"])
        with LocalCluster(n_workers=2, threads_per_worker=1,
                          processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                done = client.gather(client.map(where, range(8)))
                pids = client.run(os.getpid)
        print(json.dumps({"where": done, "workers": len(set(pids.values()))}))
'''


def test_dask_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    # The configuration key, here from the environment (or dask.config.set,
    # or a YAML file): Dask passes it to multiprocessing.get_context().
    env = {"DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": "warmfork"}
    result, err = run(tmp_path, DASK_RECIPE, env=env)
    assert result["workers"] == 2
    assert {tuple(w) for w in result["where"]} == {("warmfork", True)}
    assert "PreloadWarning" not in err


JOBLIB_RECIPES = '''
    import json
    import multiprocessing as mp
    from joblib import Parallel, delayed
    import warmfork

    def method(_):
        return mp.get_start_method()

    def methods(**kwargs):
        return sorted(set(Parallel(n_jobs=2, **kwargs)(
            delayed(method)(i) for i in range(8))))

    if __name__ == "__main__":
        print(json.dumps({
            "env": methods(backend="multiprocessing"),
            "context": methods(backend=mp.get_context("warmfork")),
            "loky": methods()}))
'''


def test_joblib_start_method_and_context(tmp_path):
    pytest.importorskip("joblib")
    result, _ = run(tmp_path, JOBLIB_RECIPES,
                    env={"JOBLIB_START_METHOD": "warmfork"})
    assert result["env"] == ["warmfork"]         # JOBLIB_START_METHOD
    assert result["context"] == ["warmfork"]     # Parallel(backend=ctx)
    assert result["loky"] == ["loky"]            # loky ignores both
