"""tf.distribute end to end through mk-transfer: MirroredStrategy on two logical CPUs, and
MultiWorkerMirroredStrategy with two local worker processes. Each run is a subprocess (devices and
collectives are configured before TensorFlow starts) bounded by a timeout."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from mk_keras import create_model, filter_layers

pytestmark = pytest.mark.slow

TIMEOUT_S = 420
_TWO_CPUS = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mk_keras.cli import transfer
    sys.exit(transfer.main(["mk-transfer", *sys.argv[1:]]))
    """
)


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("source") / "source.keras"
    create_model("convnext_micro_cifar", 5).save(path)
    return str(path)


def _flags(source, run_dir, distribution):
    return [f"--source={source}", "--dataset=digits", "--classes=0,1,2,3,4", "--max_per_class=16",
            "--eval_max_per_class=8", "--batch_size=16", "--epochs=1", "--n=2", "--lr=4e-3",
            f"--distribution={distribution}", f"--run_dir={run_dir}", "--verbose=2"]


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _check_run(run_dir, source, replicas):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert metrics["recipe"]["distribution"]["num_replicas"] == replicas
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["epochs"][-1]["loss"])
    model = keras.saving.load_model(run_dir / "model.keras")
    src = keras.saving.load_model(source)
    trained = [keras.ops.convert_to_numpy(f.kernel) for f in filter_layers(model)]
    original = [keras.ops.convert_to_numpy(f.kernel) for f in filter_layers(src)]
    for i in range(2):
        np.testing.assert_array_equal(trained[i], original[i])
    assert not np.array_equal(trained[2], original[2])
    return model


@pytest.mark.long  # 25 s; MirroredStrategy also runs in test_optimizer's mirrored test
def test_mirrored_on_two_logical_cpus(tmp_path, source_path):
    run_dir = tmp_path / "mirrored"
    proc = subprocess.run([sys.executable, "-c", _TWO_CPUS, *_flags(source_path, run_dir, "mirrored")],
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(run_dir, source_path, replicas=2)


def test_multi_worker_two_local_processes(tmp_path, source_path, run_local_workers):
    run_dir = tmp_path / "multi"
    argv = [sys.executable, "-m", "mk_keras.cli.transfer", *_flags(source_path, run_dir, "multi_worker")]
    for code, out in run_local_workers(argv, TIMEOUT_S):
        assert code == 0, out[-3000:]
    chief = _check_run(run_dir, source_path, replicas=2)
    other = _check_run(run_dir / "worker1", source_path, replicas=2)
    for a, b in zip(chief.weights, other.weights):  # synchronous training: identical replicas
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), a.path)
