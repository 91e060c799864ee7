"""Shared fixtures of the pytest-benchmark suites (run: pytest benchmarks).

``WARMFORK_BENCH_ROUNDS`` sets the rounds per benchmark (default 20);
``--benchmark-disable`` runs each body once, as a smoke test.
"""

import multiprocessing
import os

import pytest

from warmfork.bench import methods

ROUNDS = int(os.environ.get("WARMFORK_BENCH_ROUNDS", "20"))
WARMUP = 2
METHODS = methods.default_methods()


@pytest.fixture(params=METHODS)
def method(request):
    return request.param


@pytest.fixture
def ctx(method):
    return multiprocessing.get_context(method)


def pedantic(benchmark, fn, *args, rounds=ROUNDS, setup=None):
    """Run fn under benchmark.pedantic with the suite's rounds and warm-up."""
    return benchmark.pedantic(fn, args=args, setup=setup, rounds=rounds,
                              warmup_rounds=WARMUP, iterations=1)
