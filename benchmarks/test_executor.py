"""A fresh process per task: warmfork.Executor against the stdlib's pools.

One benchmark, three kinds per round: ProcessPoolExecutor(2,
max_tasks_per_child=1) under forkserver and ProcessPoolExecutor(2) with
reused fork workers run in ``setup`` (timed by hand), then
warmfork.Executor(2) is the timed body.  The ratios of the medians go to
``extra_info`` and are printed (``-s``); the same figure, with targets:
``python -m warmfork bench --cases executor``.
"""

import multiprocessing
import os
import statistics
import sys

import pytest

from warmfork.bench import cases

TASKS = int(os.environ.get("WARMFORK_BENCH_EXECUTOR_TASKS", "200"))
ROUNDS = int(os.environ.get("WARMFORK_BENCH_EXECUTOR_ROUNDS", "5"))
WARMUP = 1


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="max_tasks_per_child needs Python >= 3.11")
def test_executor_fresh_process_per_task(benchmark):
    opts = {"tasks": TASKS}
    warm = multiprocessing.get_context("warmfork")
    others = {m: [] for m in ("forkserver", "fork")}

    def setup():
        for method, samples in others.items():
            samples.append(cases.sample(
                "executor", multiprocessing.get_context(method), opts))
        return ("executor", warm, opts), {}

    benchmark.pedantic(cases.sample, setup=setup, rounds=ROUNDS,
                       warmup_rounds=WARMUP, iterations=1)
    benchmark.extra_info["tasks"] = TASKS
    if benchmark.stats is None:                  # --benchmark-disable
        return
    mine = benchmark.stats.stats.median * 1e9    # s -> ns, as the others
    for method, samples in others.items():
        median = statistics.median(samples[WARMUP:])
        benchmark.extra_info[f"{method}_median_s"] = median / 1e9
        benchmark.extra_info[f"warmfork_over_{method}"] = mine / median
        print(f"\nwarmfork.Executor / {method} pool: {mine / median:.3f}")
