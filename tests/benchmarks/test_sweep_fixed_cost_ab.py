"""benchmarks/sweep_fixed_cost_ab.py: two source trees alternate (A B, then B A), each sweep in a fresh process and
store, and their records carry the store's fixed-cost share."""

import json
import os
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import sweep_fixed_cost_ab  # noqa: E402

# a stand-in for `python -m mk_keras.cli.sweep`: one finished hit run in --store, fixed cost = its tree's FIXED
FAKE_SWEEP = textwrap.dedent('''
    import json, os, sys
    FIXED = {fixed}
    store = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--store="))
    run = os.path.join(store, "run")
    os.makedirs(run)
    timing = {{"total_s": 10.0 + FIXED, "setup_s": 1.0, "fit_s": 10.0 + FIXED - 2.0, "after_fit_s": 1.0, "steps": 100,
              "steady_step_s": 0.1, "fixed_s": FIXED, "model_cache": "hit"}}
    with open(os.path.join(run, "metrics.json"), "w") as f:
        json.dump({{"status": "finished", "model": "m", "timing": timing, "resumed_at_steps": []}}, f)
    assert os.environ["KERAS_BACKEND"] == "tensorflow"  # set, so mk-sweep never re-executes itself
    with open(os.environ["ORDER_FILE"], "a") as f:
        f.write(f"{{FIXED}}\\n")
''')


def _tree(path, fixed):
    for package in ("mk_keras", "mk_keras/cli"):
        os.makedirs(path / package)
        (path / package / "__init__.py").write_text("")
    (path / "mk_keras" / "cli" / "sweep.py").write_text(FAKE_SWEEP.format(fixed=fixed))
    return str(path)


def test_trees_alternate_and_each_sweep_reports_its_share(tmp_path, capsys, monkeypatch):
    a, b = _tree(tmp_path / "a", 10.0), _tree(tmp_path / "b", 5.0)
    monkeypatch.setenv("ORDER_FILE", str(tmp_path / "order"))
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # the driver sets tensorflow for its sweeps
    sweep_fixed_cost_ab.main([f"--trees={a},{b}", "--rounds=2", "--", "--flagfile=x.flags"])
    out = json.loads(capsys.readouterr().out)
    assert (tmp_path / "order").read_text().split() == ["10.0", "5.0", "5.0", "10.0"]  # A B B A
    assert [r["tree"] for r in out["sweeps"]] == [a, b, b, a]
    assert out["median"][a]["fixed_share"] == 0.5 and out["median"][b]["fixed_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert out["sweeps"][0]["hit_fixed_parts_median_s"] == {"setup_s": 1.0, "in_fit_s": 8.0, "after_fit_s": 1.0}
    assert out["flags"] == ["--flagfile=x.flags"]


@pytest.mark.parametrize("args, message", [
    (["--trees=onlyone", "--", "--x"], "--trees='onlyone'; allowed: two source trees"),
    (["--trees={a},{a}", "--rounds=0", "--", "--x"], "--rounds=0; allowed: a positive integer"),
    (["--trees={a},{a}", "--", "--backend=jax"], "--backend=jax; allowed: no --backend flag"),
])
def test_bad_arguments_are_refused_in_one_line(tmp_path, args, message):
    a = _tree(tmp_path / "a", 1.0)
    with pytest.raises(SystemExit, match=message.replace("(", r"\(")):
        sweep_fixed_cost_ab.main([arg.format(a=a) for arg in args])
