"""End to end on real data with real training: mk-sweep killed with SIGKILL mid-run, rerun, complete outputs."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mk_keras.cli import sweep as cli

pytestmark = pytest.mark.slow

# digits (sklearn, 8x8 -> 32 px), classes split in two random halves; 4 runs of 2 x 10 steps.
FLAGS = ["--name=e2e", "--dataset_a=digits", "--classes_a=random_half:A:0", "--classes_b=random_half:B:0",
         "--models=convnext_micro_cifar", "--treatments=baseA,baseB,AnB,BnB", "--depths=2", "--epochs=2",
         "--steps_per_epoch=10", "--batch_size=32", "--eval_max_per_class=5", "--eval_every=0",
         "--steps_per_execution=1", "--checkpoint_every=1", "--deterministic"]
RUNS = ["convnext_micro_cifar-baseA-s0", "convnext_micro_cifar-baseB-s0",
        "convnext_micro_cifar-depthwise-AnB-n2-s0", "convnext_micro_cifar-depthwise-BnB-n2-s0"]


def _wait_for(predicate, proc, timeout_s=400):
    end = time.time() + timeout_s
    while time.time() < end:
        if predicate():
            return True
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    return False


@pytest.mark.long  # make test-long
def test_killed_sweep_resumes_to_complete_results(tmp_path):
    out = str(tmp_path / "sweep")
    first_result = os.path.join(out, "results", RUNS[0] + ".json")
    second_state = os.path.join(out, "runs", RUNS[1], "checkpoint", "state.npz")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "mk_keras.cli.sweep", *FLAGS, f"--output_dir={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert _wait_for(lambda: os.path.exists(second_state), proc), "the second run never checkpointed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert os.path.exists(first_result) and not os.path.exists(os.path.join(out, "results.csv"))
    first_mtime = os.path.getmtime(first_result)
    with open(os.path.join(out, "runs", RUNS[1], "metrics.json")) as f:
        assert json.load(f)["status"] == "running"  # killed mid-run, with a checkpoint

    assert cli.main(["mk-sweep", *FLAGS, f"--output_dir={out}"]) == 0

    assert os.path.getmtime(first_result) == first_mtime  # the finished run was skipped
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == RUNS  # no lost and no duplicated row
    assert all(r["status"] == "finished" and 0 <= float(r["top1"]) <= 1 for r in rows)
    base_b = float(rows[1]["top1"])
    assert float(rows[2]["relative_accuracy"]) == pytest.approx(float(rows[2]["top1"]) / base_b)
    assert int(rows[2]["frozen_params"]) > 0 and rows[2]["epochs"] == "2"
    with open(os.path.join(out, "runs", RUNS[1], "metrics.json")) as f:
        resumed = json.load(f)["resumed_at_steps"]
    assert resumed and 1 <= resumed[0] < 20  # continued from its checkpoint, not from scratch
    for name in ("results.jsonl", "report.md", "figures/relative_accuracy.png", "figures/retention.png",
                 "runs/" + RUNS[2] + "/flags.txt"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert not os.listdir(os.path.join(out, "locks"))
