"""`--backend=jax` from a TensorFlow-backend environment: the console entry re-executes itself with
KERAS_BACKEND=jax and trains with keras.distribution.DataParallel over two host devices."""

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.long  # make test-long
def test_jax_data_parallel_run(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    argv = [sys.executable, "-m", "mk_keras.cli.train", "--backend=jax", "--distribution=data_parallel",
            "--dataset=digits", "--classes=0,1,2,3,4", "--max_per_class=16", "--eval_max_per_class=7",
            "--batch_size=16", "--epochs=1", "--verbose=0", f"--run_dir={tmp_path}"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["backend"] == "jax"
    assert metrics["recipe"]["distribution"] == {"name": "data_parallel", "num_replicas": 2, "task_type": None,
                                                 "task_id": 0, "is_chief": True}
    assert metrics["recipe"]["jit_compile"] is True
    assert metrics["eval_dataset"]["num_examples"] == 34  # 35, cut to a multiple of the 2 devices
    assert math.isfinite(metrics["loss"])
    assert "--backend=jax" in (tmp_path / "flags.txt").read_text()
