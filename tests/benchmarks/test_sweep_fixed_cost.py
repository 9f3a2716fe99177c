"""benchmarks/sweep_fixed_cost.py: the fixed-cost share of finished runs, each counted once."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import sweep_fixed_cost  # noqa: E402


def _run(path, model, cache, total, steps, step_s, **extra):
    os.makedirs(path)
    timing = {"total_s": total, "steps": steps, "steady_step_s": step_s, "fixed_s": total - steps * step_s,
              "model_cache": cache}
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump({"status": "finished", "model": model, "timing": timing, "resumed_at_steps": [], **extra}, f)


def test_share_counts_each_run_once_and_leaves_out_untimed_and_resumed_runs(tmp_path, capsys):
    store = tmp_path / "store"
    _run(store / "a", "m1", "miss", 30.0, 100, 0.1)  # fixed 20
    _run(store / "b", "m1", "hit", 15.0, 100, 0.1)  # fixed 5
    _run(store / "c", "m2", "off", 10.0, 50, 0.1)  # fixed 5
    _run(store / "resumed", "m2", "off", 99.0, 10, 0.1, resumed_at_steps=[40])
    os.makedirs(store / "old")
    (store / "old" / "metrics.json").write_text(json.dumps({"status": "finished", "model": "m1"}))
    os.makedirs(store / "failed")
    (store / "failed" / "metrics.json").write_text(json.dumps({"status": "failed", "model": "m1"}))
    sweep = tmp_path / "sweep" / "runs"
    os.makedirs(sweep)
    os.symlink(store / "a", sweep / "a")  # a sweep's link into the store: the same run

    sweep_fixed_cost.main([str(store), str(tmp_path / "sweep")])
    out = json.loads(capsys.readouterr().out)
    assert (out["finished_runs"], out["left_out_runs"]) == (5, 2)
    assert out["all"]["runs"] == 3
    assert out["all"]["fixed_s"] == pytest.approx(30.0) and out["all"]["total_s"] == pytest.approx(55.0)
    assert out["all"]["fixed_share"] == pytest.approx(30 / 55, abs=1e-3)
    assert {k: v["runs"] for k, v in out["by_model_cache"].items()} == {"hit": 1, "miss": 1, "off": 1}
    assert out["by_model"]["m1"]["fixed_share"] == pytest.approx(25 / 45, abs=1e-3)


def test_a_path_that_is_not_a_directory_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="nope"):
        sweep_fixed_cost.main([str(tmp_path / "nope")])
