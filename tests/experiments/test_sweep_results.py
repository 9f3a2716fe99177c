"""Relative accuracy, aggregation over seeds and the tables, checked against hand/NumPy values."""

import csv
import json

import numpy as np
import pytest

from mk_keras.experiments import COLUMNS, add_relative_accuracy, summarize
from mk_keras.experiments.results import write_tables


def _row(model, treatment, seed, top1, n=None, status="finished"):
    return {"model": model, "kind": None if n is None else "conv", "treatment": treatment, "n": n, "seed": seed,
            "source_size": None, "top1": top1, "status": status, "run_id": f"{model}-{treatment}-{n}-{seed}"}


def test_relative_accuracy_uses_baseB_of_same_model_and_seed():
    rows = add_relative_accuracy([
        _row("m1", "baseA", 0, 0.9), _row("m1", "baseB", 0, 0.8), _row("m1", "baseB", 1, 0.5),
        _row("m2", "baseB", 0, 0.4),
        _row("m1", "AnB", 0, 0.6, n=1), _row("m1", "AnB", 1, 0.6, n=1), _row("m2", "AnB", 0, 0.6, n=1),
        _row("m2", "AnB", 1, 0.6, n=1),  # no baseB for m2 seed 1
        _row("m1", "BnB", 0, None, n=2, status="failed"),
    ])
    rel = {r["run_id"]: r["relative_accuracy"] for r in rows}
    assert rel["m1-baseA-None-0"] is None
    assert rel["m1-baseB-None-0"] == 1.0
    assert rel["m1-AnB-1-0"] == pytest.approx(0.6 / 0.8)
    assert rel["m1-AnB-1-1"] == pytest.approx(0.6 / 0.5)
    assert rel["m2-AnB-1-0"] == pytest.approx(0.6 / 0.4)
    assert rel["m2-AnB-1-1"] is None
    assert rel["m1-BnB-2-0"] is None


def test_summary_mean_and_sample_std_over_seeds():
    top1 = [0.61, 0.7, 0.55]
    base = [0.8, 0.9, 0.85]
    rows = [_row("m", "baseB", s, b) for s, b in enumerate(base)] + [_row("m", "AnB", s, t, n=2)
                                                                     for s, t in enumerate(top1)]
    summary = summarize(add_relative_accuracy(rows))
    (anb,) = [s for s in summary if s["treatment"] == "AnB"]
    rel = np.array(top1) / np.array(base)
    assert anb["seeds"] == 3
    assert anb["relative_accuracy"] == pytest.approx(rel.mean())
    assert anb["relative_accuracy_std"] == pytest.approx(rel.std(ddof=1))
    assert anb["top1"] == pytest.approx(np.mean(top1))
    one = summarize(add_relative_accuracy(rows[:1] + rows[3:4]))
    assert [s["relative_accuracy_std"] for s in one] == [None, None]


def test_tables_have_every_column_and_row(tmp_path):
    rows = add_relative_accuracy([_row("m", "baseB", 0, 0.8), _row("m", "AnB", 0, 0.4, n=1)])
    csv_path, jsonl_path = write_tables(str(tmp_path), rows)
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == COLUMNS
    assert [float(r["relative_accuracy"]) for r in table] == [1.0, 0.5]
    assert table[0]["n"] == "" and table[1]["n"] == "1"
    lines = [json.loads(x) for x in open(jsonl_path)]
    assert [x["relative_accuracy"] for x in lines] == [1.0, 0.5] and tuple(lines[0]) == COLUMNS
