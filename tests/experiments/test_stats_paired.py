"""Paired per-seed differences and their Student-t confidence intervals, checked against hand and SciPy values."""

import math

import numpy as np
import pytest
import scipy.stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mk_keras.experiments import add_relative_accuracy, plots, summarize
from mk_keras.experiments.stats import comparisons, mean_ci, paired_differences


def _row(treatment, seed, top1, n=None, size=None, status="finished", model="m"):
    return {"model": model, "kind": None if n is None else "conv", "treatment": treatment, "n": n, "seed": seed,
            "source_size": size, "top1": top1, "status": status, "frozen_params": None, "trainable_params": None,
            "run_id": f"{model}-{treatment}-{size}-{n}-s{seed}"}


def test_mean_ci_is_the_student_t_interval():
    mean, half = mean_ci([1.0, 2.0, 4.0])
    s = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(4.302652729911275 * s / math.sqrt(3))  # t(0.975, 2) from a t table
    low, high = scipy.stats.t.interval(0.95, 2, loc=mean, scale=scipy.stats.sem([1.0, 2.0, 4.0]))
    assert (mean - half, mean + half) == pytest.approx((low, high))
    assert mean_ci([0.5]) == (0.5, None)
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([])


def test_comparisons_of_the_treatments_present():
    assert comparisons({"baseA", "baseB", "AnB", "BnB"}) == [("AnB", "baseB"), ("BnB", "baseB"), ("AnB", "BnB")]
    assert comparisons({"baseA", "baseB", "AnB", "random_frozen"}) == [
        ("AnB", "baseB"), ("random_frozen", "baseB"), ("AnB", "random_frozen")]
    assert comparisons({"baseA", "AnB"}) == []


def test_paired_differences_pair_runs_of_the_same_seed():
    base = [0.80, 0.90, 0.85]
    anb = {1: [0.78, 0.86, 0.84], 2: [0.70, 0.81, 0.79]}
    bnb = {1: [0.79, 0.88, 0.83], 2: [0.75, None, 0.80]}  # seed 1 of BnB n=2 failed
    rows = [_row("baseA", s, 0.9) for s in range(3)] + [_row("baseB", s, b) for s, b in enumerate(base)]
    for n in (1, 2):
        rows += [_row("AnB", s, v, n) for s, v in enumerate(anb[n])]
        rows += [_row("BnB", s, v, n, status="finished" if v is not None else "failed") for s, v in enumerate(bnb[n])]
    paired = {(p["x"], p["y"], p["n"]): p for p in paired_differences(add_relative_accuracy(rows))}
    assert set(paired) == {(x, y, n) for x, y in [("AnB", "baseB"), ("BnB", "baseB"), ("AnB", "BnB")]
                           for n in (1, 2)}

    gap = paired["AnB", "BnB", 2]
    assert gap["seeds"] == [0, 2] and gap["k"] == 2
    diffs = [100 * (0.70 - 0.75), 100 * (0.79 - 0.80)]
    assert gap["top1_pp"] == pytest.approx(diffs)
    assert gap["top1_pp_mean"] == pytest.approx(-3.0)
    assert gap["top1_pp_ci"] == pytest.approx(12.706204736174707 * np.std(diffs, ddof=1) / math.sqrt(2))
    assert gap["rel"] == pytest.approx([(0.70 - 0.75) / 0.80, (0.79 - 0.80) / 0.85])

    vs_base = paired["AnB", "baseB", 1]
    rel = [a / b - 1 for a, b in zip(anb[1], base)]
    assert vs_base["seeds"] == [0, 1, 2] and vs_base["rel"] == pytest.approx(rel)
    assert vs_base["rel_mean"] == pytest.approx(np.mean(rel))
    low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(rel), scale=scipy.stats.sem(rel))
    assert vs_base["rel_ci"] == pytest.approx((high - low) / 2)


def test_one_seed_has_no_interval_and_source_sizes_pair_with_unsized_controls():
    rows = [_row("baseA", 0, 0.9, size=100), _row("baseB", 0, 0.8), _row("AnB", 0, 0.6, 3, size=100),
            _row("AnB", 0, 0.7, 3, size=200), _row("BnB", 0, 0.75, 3), _row("AnB", 0, 0.7, 3, model="other")]
    paired = [p for p in paired_differences(add_relative_accuracy(rows)) if p["y"] == "BnB"]
    assert [(p["source_size"], p["k"], p["top1_pp_ci"], p["rel_ci"]) for p in paired] == [
        (100, 1, None, None), (200, 1, None, None)]
    assert [p["top1_pp_mean"] for p in paired] == pytest.approx([-15.0, -5.0])


def test_figure_error_bars_are_the_confidence_interval():
    rows = add_relative_accuracy([_row("baseB", s, b) for s, b in enumerate([0.8, 0.9, 0.85])] +
                                 [_row("AnB", s, t, 2) for s, t in enumerate([0.61, 0.7, 0.55])])
    summary = summarize(rows)
    (anb,) = [s for s in summary if s["treatment"] == "AnB"]
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    _, counts = plots._plot_lines(ax, summary, rows, {"model": "m", "kind": "conv", "layers": 3}, ("AnB",))
    (segment,) = ax.containers[0].lines[2][0].get_segments()
    half = mean_ci([r["relative_accuracy"] for r in rows if r["treatment"] == "AnB"])[1]
    assert anb["relative_accuracy_ci"] == pytest.approx(half)
    assert [y for _, y in segment] == pytest.approx([anb["relative_accuracy"] - half, anb["relative_accuracy"] + half])
    assert counts == [3]
    assert plots.bars_note(counts) == "error bars: 95 % CI over 3 seeds (Student t)"
    assert plots.bars_note([2, 3, 3]) == "error bars: 95 % CI over 2–3 seeds (Student t)"
    assert plots.bars_note([1, 1]) == "1 seed: no error bars (no CI)"
