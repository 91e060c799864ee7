"""Processes per second: bare processes, and a one-task-per-child pool."""

import os
import sys

import pytest

from conftest import pedantic
from warmfork.bench import cases

# Smaller than the bench command's 500/200 to keep the suite short.
PROCS = int(os.environ.get("WARMFORK_BENCH_PROCS", "100"))
TASKS = int(os.environ.get("WARMFORK_BENCH_TASKS", "40"))


def test_throughput_lower_bound(benchmark):
    pedantic(benchmark, cases.sample, "throughput", None,
             {"procs": PROCS, "alive": 8}, rounds=3)
    benchmark.extra_info["procs"] = PROCS


def test_throughput(benchmark, ctx):
    pedantic(benchmark, cases.sample, "throughput", ctx,
             {"procs": PROCS, "alive": 8}, rounds=3)
    benchmark.extra_info["procs"] = PROCS


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="max_tasks_per_child needs Python >= 3.11")
def test_pool_one_task_per_child(benchmark, ctx, method):
    if method == "fork":
        pytest.skip("ProcessPoolExecutor refuses max_tasks_per_child "
                    "with 'fork'")
    pedantic(benchmark, cases.sample, "pool", ctx, {"tasks": TASKS},
             rounds=2)
    benchmark.extra_info["tasks"] = TASKS
