"""Quick checks of ``python -m warmfork bench``: helpers, JSON, a tiny run."""

import json
import os
import subprocess
import sys

import pytest

import warmfork
from warmfork.bench import goals, methods, plan, report, stats

SRC = os.path.dirname(os.path.dirname(os.path.abspath(warmfork.__file__)))


def _run(*args, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (SRC, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("q, want", [(0, 1), (50, 2.5), (90, 3.7),
                                     (99, 3.97), (100, 4)])
def test_percentile_interpolates_like_numpy(q, want):
    assert stats.percentile([4, 1, 3, 2], q) == pytest.approx(want)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_summarize_and_ratio():
    s = stats.summarize([3, 1, 2])
    assert (s["n"], s["min"], s["p50"], s["max"]) == (3, 1, 2, 3)
    assert stats.summarize([]) == {"n": 0}
    assert stats.ratio(3, 2) == 1.5
    assert stats.ratio(None, 2) is None and stats.ratio(1, 0) is None


def test_method_specs():
    assert methods.parse("spawn") == ("spawn", None)
    assert methods.parse("forkserver[]") == ("forkserver", [])
    spec = methods.parse("warmfork[numpy+a.b]")
    assert spec == ("warmfork", ["numpy", "a.b"])
    with pytest.raises(ValueError):
        methods.parse("spawn[numpy]")
    with pytest.raises(ValueError):
        methods.parse("forkserver[numpy")


def test_plan_puts_each_memory_size_in_its_own_parent():
    groups, _ = plan.build(plan.Settings.quick(), ["fork", "forkserver"],
                           plan.SELECTABLE, have_numpy=False)
    mems = [g.mem_mb for g in groups if "start" in g.figures]
    assert mems == [0, 512, 2048]
    assert not any(g.script or g.imports for g in groups)


def _row(figure, method, p50, case=None):
    return {"figure": figure, "method": method, "case": case or figure,
            "mem_mb": 2048 if "@" in figure else 0,
            "stats": {"p50": p50}}


def test_goals_pass_miss_and_missing():
    rows = [_row("start", "raw", 100), _row("start", "forkserver", 250),
            _row("start", "warmfork", 45), _row("burst", "warmfork", 90),
            _row("start@2048MB", "warmfork", 48, case="start"),
            _row("start+numpy", "warmfork[numpy]", 60, case="start")]
    got = {g["target"]: g["status"] for g in goals.evaluate(rows)}
    # isolated, back to back, x forkserver, round trip, throughput, CPU,
    # big parent, numpy, executor / forkserver, executor / fork
    assert list(got.values()) == ["PASS", "MISS", "PASS", "n/a", "n/a",
                                  "n/a", "PASS", "MISS", "n/a", "n/a"]


def test_fmt_value():
    assert report.fmt_value(1500, "ns") == "2 us"
    assert report.fmt_value(2.5e6, "ns") == "2.50 ms"
    assert report.fmt_value(3e9, "ns") == "3.00 s"
    assert report.fmt_value(2048, "kB") == "2.0 MB"
    assert report.fmt_value(212.0, "faults") == "212"


def test_tiny_run_json_shape(tmp_path):
    specs = ["fork", "forkserver"]
    if methods.warmfork_available():
        specs.append("warmfork")
    out = tmp_path / "bench.json"
    proc = _run("warmfork", "bench", "--rounds", "2", "--warmup", "1",
                "--cases", "start,roundtrip", "--methods", ",".join(specs),
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "isolated start" in proc.stdout and "targets" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data) == {"meta", "rows", "targets", "notes"}
    assert data["meta"]["methods"] == specs
    figures = {(r["figure"], r["method"]) for r in data["rows"]}
    assert figures == {(f, m) for f in ("start", "roundtrip")
                       for m in ["raw"] + specs}
    for r in data["rows"]:
        assert len(r["samples"]) == 2 and r["unit"] == "ns"
        assert all(isinstance(x, int) and x > 0 for x in r["samples"])
        assert set(r["stats"]) >= {"n", "p50", "p90", "p99"}
        assert r["ratio_lower_bound"] is not None
        assert r["ratio_forkserver"] is not None
    assert len(data["targets"]) == len(goals.evaluate([]))
    assert {t["status"] for t in data["targets"]} <= {"PASS", "MISS", "n/a"}


def test_worker_module_prints_json():
    proc = _run("warmfork.bench.worker", "--cases", "roundtrip",
                "--methods", "raw,fork", "--rounds", "1", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(r["method"], len(r["samples"])) for r in data["rows"]] == [
        ("raw", 1), ("fork", 1)]
    assert "@progress roundtrip 1 1" in proc.stderr


def test_unknown_command_and_case():
    assert _run("warmfork", "nope").returncode == 2
    proc = _run("warmfork", "bench", "--cases", "nope")
    assert proc.returncode != 0 and "unknown case" in proc.stderr
