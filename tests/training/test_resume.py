"""Fault tolerance: a run killed with SIGKILL mid-epoch resumes from its last checkpoint and ends exactly like
an uninterrupted run (CPU, deterministic mode), with checkpoints taken by steps or by wall time; transferred
kernels stay frozen; NaN losses fail cleanly."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from mk_keras import create_model, filter_layers
from mk_keras.training import TrainingFailed, reuse, train

pytestmark = pytest.mark.slow

# 2 epochs of 16 steps (160 examples, batch 10), 8 steps per compiled call. checkpoint_every=3: checkpoints
# after the calls ending at steps 8, 16 (epoch end), 24, 32. By wall time: the killed process's clock advances
# 1000 s per reading, so every call end is checkpointed (steps alone, 1000, never would).
_KILLED_RUN = textwrap.dedent(
    """
    import functools, itertools, json, os, signal, sys, time
    import keras
    from mk_keras.training import checkpoint, run, train

    kwargs, kill_at, fake_clock = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    if fake_clock:
        run.RunMonitor = functools.partial(run.RunMonitor, clock=itertools.count(0, 1000).__next__)

    class KillAt(keras.callbacks.Callback):
        # SIGKILL once the checkpoint of step `kill_at` (written in the background) is on disk.
        def on_train_batch_end(self, batch, logs=None):
            if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) >= kill_at:
                directory = os.path.join(kwargs["run_dir"], "checkpoint")
                deadline = time.monotonic() + 60
                while ((checkpoint.read_meta(directory) or {}).get("step", 0) < kill_at
                       and time.monotonic() < deadline):
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGKILL)

    train(**kwargs, callbacks=[KillAt()])
    """
)


def _kernels(model, kind="depthwise"):
    return [keras.ops.convert_to_numpy(f.kernel) for f in filter_layers(model, kind)]


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("source") / "source.keras"
    create_model("convnext_micro_cifar", 10).save(path)
    return str(path)


def _kwargs(run_dir, source, checkpoint_every=3, checkpoint_every_s=300.0):
    return dict(model="convnext_micro_cifar", dataset="digits", max_per_class=16, eval_max_per_class=8,
                batch_size=10, epochs=2, lr=4e-3, warmup_epochs=0.5, augment="basic", steps_per_execution=8,
                checkpoint_every=checkpoint_every, checkpoint_every_s=checkpoint_every_s, deterministic=True,
                seed=3, source=source, n=2, run_dir=str(run_dir), verbose=0)


def _strip_times(epochs):
    return [{k: v for k, v in e.items() if k != "wall_time_s"} for e in epochs]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, source_path):
    """The uninterrupted run, and the depthwise kernels it started from (after the transfer)."""
    snapshot = {}

    def remember_initial_kernels(model):
        snapshot["dw"] = _kernels(model)
        return {"depthwise_layers": len(snapshot["dw"])}

    run_dir = tmp_path_factory.mktemp("straight")
    metrics = train(**_kwargs(run_dir, source_path), init_hook=remember_initial_kernels)
    return metrics, run_dir, snapshot["dw"]


def _killed_and_resumed(run_dir, source_path, kill_at_step, by_wall_time=False, reuse_on_resume=False):
    kwargs = _kwargs(run_dir, source_path, **({"checkpoint_every": 1000, "checkpoint_every_s": 150.0}
                                              if by_wall_time else {}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, json.dumps(kwargs), str(kill_at_step),
                           str(int(by_wall_time))], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    state = json.loads((run_dir / "metrics.json").read_text())
    assert state["status"] == "running"
    assert (run_dir / "checkpoint" / "state.npz").exists() and not (run_dir / "model.keras").exists()
    return state, train(**kwargs, reuse=reuse_on_resume)


def _assert_same_run(resumed, killed_dir, straight, straight_dir):
    for key in ("top1", "top5", "loss"):
        assert resumed[key] == straight[key], key
    assert _strip_times(resumed["epochs"]) == _strip_times(straight["epochs"])
    a = keras.saving.load_model(killed_dir / "model.keras")
    b = keras.saving.load_model(straight_dir / "model.keras")
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wb), wa.path)


@pytest.mark.long  # make test-long
def test_resume_during_the_first_epoch_is_bit_identical(tmp_path, source_path, straight_run):
    # Killed after the call that ends at step 8 (checkpointed by steps): resumes inside epoch 1.
    state, resumed = _killed_and_resumed(tmp_path / "killed", source_path, kill_at_step=8)
    assert state["epochs_completed"] == 0
    assert resumed["status"] == "finished" and resumed["resumed_at_steps"] == [8]
    straight, straight_dir, _ = straight_run
    _assert_same_run(resumed, tmp_path / "killed", straight, straight_dir)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, source_path, straight_run):
    # The step-24 checkpoint (epoch 2 of 2) is one taken by wall time (steps: checkpoint_every=1000).
    killed_dir = tmp_path / "killed"
    state, resumed = _killed_and_resumed(killed_dir, source_path, kill_at_step=24, by_wall_time=True)
    assert state["epochs_completed"] == 1
    assert resumed["status"] == "finished"
    assert resumed["resumed_at_steps"] == [24]
    assert not (killed_dir / "checkpoint").exists()

    straight, straight_dir, initial_dw = straight_run
    assert straight["init_hook"] == {"depthwise_layers": 5}
    assert straight["resumed_at_steps"] == []
    _assert_same_run(resumed, killed_dir, straight, straight_dir)
    b = keras.saving.load_model(straight_dir / "model.keras")

    # Frozen kernels are bit-identical to the source; the trainable ones moved during training.
    source_dw = _kernels(keras.saving.load_model(source_path))
    trained_dw = _kernels(b)
    for i in range(5):
        if i < 2:
            np.testing.assert_array_equal(trained_dw[i], source_dw[i])
            np.testing.assert_array_equal(initial_dw[i], source_dw[i])
        else:
            assert not np.array_equal(trained_dw[i], initial_dw[i]), i
    assert straight["frozen_layers"] == ["stage1_block1_dwconv", "stage2_block1_dwconv"]
    assert straight["params"]["frozen"] == (7 * 7 * 24 + 24) + (7 * 7 * 48 + 48)


def test_nan_loss_fails_the_run(tmp_path):
    def poison(model):
        layer = model.get_layer("head_dense")
        layer.kernel.assign(np.full(layer.kernel.shape, np.nan, "float32"))
        return {}

    with pytest.raises(TrainingFailed, match="NaN or infinite at step 1"):
        train(dataset="digits", max_per_class=4, eval_max_per_class=2, batch_size=8, epochs=1, eval_every=0,
              steps_per_execution=1, run_dir=str(tmp_path), init_hook=poison, verbose=0)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "NaN" in metrics["error"]
    assert not (tmp_path / "model.keras").exists()


def test_a_resume_through_the_reuse_cache_is_bit_identical(tmp_path, source_path, straight_run, monkeypatch):
    # A sweep process resumes a retried run on a compiled model kept from an earlier run of the same key.
    monkeypatch.setattr(reuse, "CACHE", reuse.ModelCache())
    filler = train(**{**_kwargs(tmp_path / "filler", source_path), "seed": 4}, reuse=True)
    assert filler["timing"]["model_cache"] == "miss"
    killed_dir = tmp_path / "killed"
    state, resumed = _killed_and_resumed(killed_dir, source_path, kill_at_step=8, reuse_on_resume=True)
    assert resumed["timing"]["model_cache"] == "hit" and resumed["resumed_at_steps"] == [8]
    assert resumed["timing"]["steps"] == 24
    straight, straight_dir, _ = straight_run
    _assert_same_run(resumed, killed_dir, straight, straight_dir)
