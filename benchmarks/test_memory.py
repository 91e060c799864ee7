"""Start latency with a big parent, and a child's private memory (USS).

Here the test process itself grows; ``python -m warmfork bench`` uses a
fresh parent per size instead, so its figures do not depend on the order
tests run in.  USS needs numpy preloaded in the server, and a forkserver's
preload is fixed once it runs, so that test measures in a fresh worker.
"""

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import METHODS, pedantic
from warmfork.bench import cases, plan, worker

MEM_MB = [0, 512]


@pytest.fixture(params=MEM_MB, ids=[f"{mb}MB" for mb in MEM_MB])
def parent_mb(request):
    ballast = worker.grow(request.param)
    yield request.param
    del ballast


def test_start_latency_big_parent(benchmark, ctx, parent_mb):
    pedantic(benchmark, cases.sample, "start", ctx, {})
    benchmark.extra_info["parent_mb"] = parent_mb


def test_fork_big_parent(benchmark, parent_mb):
    pedantic(benchmark, cases.sample, "start", None, {})
    benchmark.extra_info["parent_mb"] = parent_mb


@pytest.mark.skipif(importlib.util.find_spec("numpy") is None,
                    reason="numpy is not installed")
def test_uss_numpy_preloaded(benchmark):
    specs = [f"{m}[{plan.NUMPY_PRELOAD}]"
             if m in ("forkserver", "warmfork") else m for m in METHODS]
    cmd = [sys.executable, "-m", "warmfork.bench.worker", "--cases", "uss",
           "--methods", ",".join(specs), "--rounds", "3", "--warmup", "1",
           "--import", "numpy"]

    def run():
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    data = benchmark.pedantic(run, rounds=1, iterations=1)
    for row in data["rows"]:
        benchmark.extra_info[f"uss_kb[{row['method']}]"] = min(row["samples"])
