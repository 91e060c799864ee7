"""Start latency and start+join round trip, per start method.

pytest-benchmark times whole calls, so ``test_start_latency`` keeps pipe
and process creation in ``setup`` and joins the previous child there.
The interleaved figures with ratios come from ``python -m warmfork bench``.
"""

from conftest import ROUNDS, WARMUP, pedantic
from warmfork.bench import cases


def test_lower_bound_fork_one_byte(benchmark):
    pedantic(benchmark, cases.sample, "start", None, {})


def test_lower_bound_fork_exit_waitpid(benchmark):
    pedantic(benchmark, cases.sample, "roundtrip", None, {})


def test_start_latency(benchmark, ctx):
    live = []

    def setup():
        _reap(live)
        parent_r, child_w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=child_w.send_bytes, args=(b"x",))
        live.append((p, parent_r, child_w))
        return (p, parent_r), {}

    def start(p, parent_r):
        p.start()
        parent_r.recv_bytes()

    try:
        benchmark.pedantic(start, setup=setup, rounds=ROUNDS,
                           warmup_rounds=WARMUP)
    finally:
        _reap(live)


def test_round_trip(benchmark, ctx):
    pedantic(benchmark, cases.sample, "roundtrip", ctx, {})


def _reap(live):
    while live:
        p, parent_r, child_w = live.pop()
        p.join()
        parent_r.close()
        child_w.close()
        assert p.exitcode == 0
