"""Relative accuracy, aggregation over seeds, the tables and unreadable result files, checked against hand/NumPy
values."""

import csv
import json
import os
import re

import numpy as np
import pytest

from mk_keras.experiments import COLUMNS, add_relative_accuracy, merge, summarize
from mk_keras.experiments.results import load_definition, read_metrics, read_result, write_tables


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
    assert anb["relative_accuracy_ci"] == pytest.approx(4.302652729911275 * rel.std(ddof=1) / np.sqrt(3))
    assert anb["top1"] == pytest.approx(np.mean(top1))
    one = summarize(add_relative_accuracy(rows[:1] + rows[3:4]))
    assert [s["relative_accuracy_std"] for s in one] == [None, None]
    assert [s["relative_accuracy_ci"] for s in one] == [None, None]


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


def test_corrupt_json_files_raise_one_line_naming_the_file(tmp_path):
    out = str(tmp_path)
    for sub in ("results", "runs/x"):
        os.makedirs(os.path.join(out, sub))
    assert read_result(out, "x") is None and read_metrics(os.path.join(out, "runs", "x")) is None
    result = os.path.join(out, "results", "x.json")
    with open(result, "w") as f:
        f.write('{"run_id": "x", "top')  # killed mid-write (outside atomic_write_json)
    with pytest.raises(ValueError, match=f"^{re.escape(result)} is truncated or corrupt .*; delete it and rerun the "
                                         "sweep to redo run x") as e:
        read_result(out, "x")
    assert "\n" not in str(e.value)
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"config": {}, "arms": [], "runs": [{"run_id": "x"}]}, f)
    with pytest.raises(ValueError, match=re.escape(result)):
        merge(out)  # as `mk-sweep --merge_only` does
    metrics = os.path.join(out, "runs", "x", "metrics.json")
    with open(metrics, "wb") as f:
        f.write(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=f"^{re.escape(metrics)} is truncated or corrupt \\(not UTF-8 text\\); "
                                         f"delete the run directory {re.escape(os.path.join(out, 'runs', 'x'))}"):
        read_metrics(os.path.join(out, "runs", "x"))
    with open(os.path.join(out, "sweep.json"), "w") as f:
        f.write("")
    with pytest.raises(ValueError, match=r"sweep.json is truncated or corrupt .*rerun the sweep \(mk-sweep "
                                         r"--flagfile=.*flags.txt, plus any"):
        load_definition(out)
