"""A sweep with --distribution=multi_worker on two local worker processes: one strategy per process, reused by
every run; the chief claims each run and the other worker trains it in step."""

import csv
import json
import sys

import keras
import numpy as np
import pytest

import mk_keras  # noqa: F401  (registers its layers for load_model)

pytestmark = pytest.mark.slow

FLAGS = ["--name=mw", "--dataset_a=digits", "--classes_a=random_half:A:0", "--classes_b=random_half:B:0",
         "--models=convnext_micro_cifar", "--treatments=baseA,baseB,AnB", "--depths=2", "--epochs=1",
         "--steps_per_epoch=4", "--batch_size=16", "--eval_max_per_class=4", "--eval_every=0",
         "--distribution=multi_worker"]
RUNS = ["convnext_micro_cifar-baseA-s0", "convnext_micro_cifar-baseB-s0", "convnext_micro_cifar-depthwise-AnB-n2-s0"]


@pytest.mark.long  # two TensorFlow processes training three runs in step: 330 s on a loaded 2-core machine
def test_multi_worker_sweep_on_two_local_workers(tmp_path, run_local_workers):
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "mk_keras.cli.sweep", *FLAGS, f"--output_dir={out}"]
    for code, text in run_local_workers(argv, 420):
        assert code == 0, text[-3000:]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == RUNS and all(r["status"] == "finished" for r in rows)
    for run_id in RUNS:  # the second worker trained every run with the chief: identical replicas
        chief, other = out / "runs" / run_id, out / "runs" / run_id / "worker1"
        for d in (chief, other):
            metrics = json.loads((d / "metrics.json").read_text())
            assert metrics["status"] == "finished" and metrics["recipe"]["distribution"]["num_replicas"] == 2
        a, b = (keras.saving.load_model(d / "model.keras") for d in (chief, other))
        for x, y in zip(a.weights, b.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y), x.path)
