"""Start latency and child USS with a 1, 50 and 200 MB numpy argument.

The same array goes to every child, as a dataset goes to each DataLoader
worker: warmfork copies it into a sealed memfd at its first start and
sends that memfd again while the array is unchanged (buffers.py), so the
warm-up rounds hold the copy.  fork inherits the array; spawn and
forkserver pickle it through a pipe every time (they need ~1.5 s per start
at 200 MB here, so they get fewer rounds).

The contexts here are the suite's (conftest.py): stdlib forkserver with
its default preload, so its children import numpy to unpickle the array.
``python -m warmfork bench --cases args`` is the reference: interleaved,
numpy preloaded by forkserver and warmfork, a fresh parent per size, and
the targets.  USS runs that way here too, in a fresh worker per size.
"""

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import METHODS, ROUNDS, WARMUP
from warmfork.bench import cases, plan

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numpy") is None,
                                reason="numpy is not installed")

SIZES_MB = [1, 50, 200]


@pytest.fixture(scope="module", params=SIZES_MB,
                ids=[f"{mb}MB" for mb in SIZES_MB])
def array(request):
    import numpy
    return numpy.arange((request.param << 20) // 8, dtype=numpy.float64)


def test_start_with_array_argument(benchmark, ctx, method, array):
    slow = method in ("spawn", "forkserver") and array.nbytes > 1 << 20
    benchmark.pedantic(cases.sample, args=("argstart", ctx, {"arg": array}),
                       rounds=max(3, ROUNDS // 5) if slow else ROUNDS,
                       warmup_rounds=WARMUP, iterations=1)
    benchmark.extra_info["arg_mb"] = array.nbytes >> 20
    if method == "warmfork":
        from warmfork import buffers
        benchmark.extra_info["buffers"] = buffers.stats()


@pytest.mark.parametrize("mb", SIZES_MB, ids=[f"{mb}MB" for mb in SIZES_MB])
def test_child_uss_with_array_argument(benchmark, mb):
    specs = [f"{m}[{plan.NUMPY_PRELOAD}]"
             if m in ("forkserver", "warmfork") else m for m in METHODS]
    cmd = [sys.executable, "-m", "warmfork.bench.worker", "--cases",
           "arguss", "--methods", ",".join(specs), "--rounds", "2",
           "--warmup", "2", "--import", "numpy", "--arg-mb", str(mb)]

    def run():
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    data = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["arg_mb"] = mb
    for row in data["rows"]:
        benchmark.extra_info[f"uss_kb[{row['method']}]"] = min(row["samples"])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed")
def test_dataloader_big_array(benchmark, tmp_path):
    """benchmarks/dataloader_big_array.py: 200 MB array in a dataset, 4
    workers, not persistent, 5 epochs, each method in a fresh parent."""
    import os
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "dataloader_big_array.py")
    out = tmp_path / "dataloader.json"
    methods = ",".join(m for m in METHODS)

    def run():
        subprocess.run([sys.executable, script, "--methods", methods,
                        "--json", str(out)], check=True)
        return json.loads(out.read_text())

    data = benchmark.pedantic(run, rounds=1, iterations=1)
    for r in data["results"]:
        benchmark.extra_info[f"seconds[{r['method']}]"] = r["seconds"]
        benchmark.extra_info[f"peak_extra_mb[{r['method']}]"] = \
            r["peak_extra_mb"]
