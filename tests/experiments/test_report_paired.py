"""report.md from fake result rows and run directories (no training): stored settings, paired differences
with confidence intervals, the summary, and the figures' error-bar captions."""

import dataclasses
import os

import numpy as np
import pytest
import scipy.stats

from mk_keras.experiments import COLUMNS, SweepConfig, merge
from mk_keras.experiments.results import atomic_write_json

SEEDS = (0, 1, 2)
TOP1 = {"baseA": [0.90, 0.92, 0.91], "baseB": [0.80, 0.86, 0.83], ("AnB", 1): [0.79, 0.85, 0.83],
        ("AnB", 2): [0.70, 0.78, 0.74], ("BnB", 1): [0.80, 0.85, 0.82], ("BnB", 2): [0.76, 0.81, 0.80],
        ("random_frozen", 1): [0.80, 0.86, 0.82], ("random_frozen", 2): [0.66, 0.75, 0.70]}
SOURCES = {"AnB": "baseA", "BnB": "baseB", "random_frozen": None}
SETTINGS = {"epochs": 3, "batch_size": 64, "lr": 0.0008, "max_per_class": 300, "deterministic": True,
            "backend": "tensorflow"}


def _run_id(treatment, seed, n=None):
    return "-".join(p for p in ("m", None if n is None else "conv", treatment, None if n is None else f"n{n}",
                                f"s{seed}") if p)


def _sweep(out, seeds=SEEDS, spec_key="spec", spec_override=None):
    """A sweep directory with sweep.json, results/ and runs/<id>/metrics.json for model m (conv, 2 layers)."""
    config = SweepConfig(name="fake", classes_a="fashion_garments", classes_b="fashion_accessories", models=["m"],
                         kinds=["conv"], depths=[1, 2], treatments=["baseA", "baseB", *SOURCES],
                         seeds=list(seeds), train_args={"epochs": 3})
    runs = []
    for seed in seeds:
        runs += [{"run_id": _run_id(t, seed), "model": "m", "treatment": t, "seed": seed, "kind": None, "n": None,
                  "train_n": None, "source_size": None, "source": None} for t in ("baseA", "baseB")]
        runs += [{"run_id": _run_id(t, seed, n), "model": "m", "treatment": t, "seed": seed, "kind": "conv", "n": n,
                  "train_n": n, "source_size": None, "source": SOURCES[t] and _run_id(SOURCES[t], seed)}
                 for t in SOURCES for n in (1, 2)]
    for sub in ("results", "runs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    atomic_write_json(os.path.join(out, "sweep.json"), {
        "config": dataclasses.asdict(config), "arms": [{"model": "m", "kind": "conv", "layers": 2,
                                                        "depths": [1, 2], "cross_depths": []}], "runs": runs})
    for run in runs:
        key = run["treatment"] if run["n"] is None else (run["treatment"], run["n"])
        row = {c: None for c in COLUMNS}
        row.update({k: run[k] for k in ("model", "kind", "treatment", "n", "seed", "source_size", "source",
                                        "run_id")}, experiment="fake", top1=TOP1[key][run["seed"]],
                   status="finished", wall_time_s=1.0, frozen_params=10 * (run["n"] or 0),
                   trainable_params=100 - 10 * (run["n"] or 0))
        atomic_write_json(os.path.join(out, "results", run["run_id"] + ".json"), row)
        spec = {**SETTINGS, "model": "m", "seed": run["seed"], "n": run["n"] or 0, "run_dir": run["run_id"],
                "dataset": "fashion_mnist", "classes": "fashion_garments" if key == "baseA" else "fashion_accessories"}
        spec.update((spec_override or {}).get(run["run_id"], {}))
        os.makedirs(os.path.join(out, "runs", run["run_id"]))
        atomic_write_json(os.path.join(out, "runs", run["run_id"], "metrics.json"),
                          {"status": "finished", spec_key: spec})
    return out


def _report(out):
    merge(out)
    with open(os.path.join(out, "report.md")) as f:
        return f.read()


def _ci_text(values, digits):
    mean = np.mean(values)
    half = scipy.stats.t.ppf(0.975, len(values) - 1) * scipy.stats.sem(values)
    return f"{mean:+.{digits}f} [{mean - half:+.{digits}f}, {mean + half:+.{digits}f}]"


def test_report_states_paired_differences_with_confidence_intervals(tmp_path):
    report = _report(_sweep(str(tmp_path)))
    pp = [100 * (a - b) for a, b in zip(TOP1["AnB", 2], TOP1["BnB", 2])]
    rel = [(a - b) / base for a, b, base in zip(TOP1["AnB", 2], TOP1["BnB", 2], TOP1["baseB"])]
    per_seed = ", ".join(f"s{s} {v:+.2f}" for s, v in zip(SEEDS, pp))
    assert f"| AnB − BnB | 2 | 3 | {_ci_text(pp, 2)} | {_ci_text(rel, 3)} | {per_seed} |" in report
    vs_base = [100 * (a - b) for a, b in zip(TOP1["BnB", 1], TOP1["baseB"])]
    assert f"| BnB − baseB | 1 | 3 | {_ci_text(vs_base, 2)} |" in report
    summary = report[report.index("## Summary"):]
    assert (f"- AnB − BnB: m (conv) n=2: {_ci_text(rel, 3)} relative accuracy, Δ top-1 "
            f"{_ci_text(pp, 2).replace(' [', ' pp [')} (3 seeds; the CI of Δ top-1 excludes 0; per seed: {per_seed})"
            ) in summary
    frozen_pp = [100 * (a - b) for a, b in zip(TOP1["AnB", 2], TOP1["random_frozen", 2])]
    frozen_rel = [p / 100 / base for p, base in zip(frozen_pp, TOP1["baseB"])]
    assert (f"- AnB − random_frozen: m (conv) n=2: {_ci_text(frozen_rel, 3)} relative accuracy, Δ top-1 "
            f"{_ci_text(frozen_pp, 2).replace(' [', ' pp [')} (3 seeds; the CI of Δ top-1 excludes 0; per seed: "
            "s0 +4.00, s1 +3.00, s2 +4.00)") in summary
    assert "AnB − random_frozen: what A's filters give over frozen random ones" in summary
    anb_rel = [a / b for a, b in zip(TOP1["AnB", 2], TOP1["baseB"])]
    mean, half = np.mean(anb_rel), scipy.stats.t.ppf(0.975, 2) * scipy.stats.sem(anb_rel)
    assert f"at the deepest n=2: {mean:.3f} [{mean - half:.3f}, {mean + half:.3f}], vs baseB of the same seed" \
        in summary
    assert "; 20 of 100 weights frozen (20.0%)" in summary
    assert "± is the sample standard deviation of the single runs over the seeds" in report
    assert "error bars: 95 % confidence interval of that mean over the k seeds (Student t" in report
    assert "![Paired differences vs n](figures/paired_differences.png)" in report
    assert os.path.getsize(tmp_path / "figures" / "paired_differences.png") > 0


def test_one_seed_report_says_there_is_no_interval(tmp_path):
    report = _report(_sweep(str(tmp_path), seeds=(0,)))
    assert "**One seed per run: no confidence intervals.**" in report
    assert "| AnB − BnB | 2 | 1 | -6.00 (1 seed: no CI) |" in report
    assert ("n=2: -0.075 (1 seed: no CI) relative accuracy, Δ top-1 -6.00 pp (1 seed: no CI) (1 seed; per seed: "
            "s0 -6.00)") in report


@pytest.mark.parametrize("spec_key", ["spec", "config"])
def test_settings_come_from_the_runs_stored_specification(tmp_path, spec_key):
    report = _report(_sweep(str(tmp_path), spec_key=spec_key))
    line = next(x for x in report.splitlines() if x.startswith("- **Training settings common to every"))
    assert line.endswith(": backend=tensorflow, batch_size=64, dataset=fashion_mnist, deterministic=true, epochs=3, "
                         "lr=0.0008, max_per_class=300, model=m")
    assert "defaults of" not in report and "Warning" not in report


def test_settings_that_differ_within_a_treatment_are_flagged(tmp_path):
    odd = {_run_id("AnB", 1, 2): {"lr": 0.004}}
    report = _report(_sweep(str(tmp_path), spec_override=odd))
    assert ("**Warning: settings differ between runs of one treatment, n and source size** (the seeds of such a "
            "cell are not comparable): m (conv) AnB n=2: lr = 0.0008 / 0.004") in report
    line = next(x for x in report.splitlines() if x.startswith("- **Training settings common to every"))
    assert "lr=" not in line and "epochs=3" in line


def test_runs_without_stored_settings_show_the_sweep_arguments(tmp_path):
    out = _sweep(str(tmp_path))
    for name in os.listdir(os.path.join(out, "runs")):
        atomic_write_json(os.path.join(out, "runs", name, "metrics.json"), {"status": "finished"})
    report = _report(out)
    assert ("- **Training settings:** no finished run stores its settings yet (the sweep's train_args: epochs=3)"
            in report)
