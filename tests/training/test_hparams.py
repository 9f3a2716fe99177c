"""HParams sessions: a finished run's settings and final metrics read back from its TensorBoard event files."""

import glob
import os

import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import metadata

from mk_keras.training import RunSpec, train
from mk_keras.training.hparams import hparam_values, log_hparams


def _read(logdir):
    """(session start info or None, {tag: [(step, value)]}) of the event files directly in `logdir`."""
    start, scalars = None, {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    assert plugin.plugin_name == metadata.PLUGIN_NAME
                    assert start is None, "more than one session"
                    start = metadata.parse_session_start_info_plugin_data(plugin.content)
                elif plugin.plugin_name == "scalars":
                    scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return start, scalars


def _hparams(start):
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


@pytest.mark.backend_agnostic
def test_log_hparams_writes_the_identity_fields_and_final_metrics(tmp_path):
    spec = RunSpec(dataset="digits", source="runs/a/model.keras", source_sha256="ab" * 32, n=3, order="last",
                   seed=4, data_seed=7, lr=1e-3, epochs=3, image_size=32, classes=[0, 1, 2], data_dir="/data")
    metrics = {"spec_hash": spec.spec_hash(), "top1": 0.625, "top5": 0.875, "loss": 1.25, "epochs_completed": 3}
    log_hparams(str(tmp_path), spec.to_dict(), metrics)

    start, scalars = _read(str(tmp_path))
    assert start.group_name == spec.spec_hash()
    values = _hparams(start)
    assert values == hparam_values(spec.to_dict())
    assert values["model"] == "convnext_micro_cifar" and values["dataset"] == "digits"
    assert values["source"] == "runs/a/model.keras" and values["n"] == 3 and values["order"] == "last"
    assert values["kind"] == "depthwise" and values["freeze"] is True and values["kernel_transform"] == "None"
    assert values["init_seed"] == 4 and values["data_seed"] == 7 and values["lr"] == 1e-3
    assert values["epochs"] == 3 and values["batch_size"] == 128 and values["augment"] == "None"
    assert values["image_size"] == "[32, 32]" and values["classes"] == "[0, 1, 2]"
    # execution fields, the default seed and file hashes are not settings to compare runs by
    for key in ("data_dir", "eval_every", "versions", "seed", "source_sha256"):
        assert key not in values, key
    # final metrics at the last epoch's index (epoch scalars count epochs from 0)
    assert scalars == {"final_top1": [(2, 0.625)], "final_top5": [(2, 0.875)], "final_loss": [(2, 1.25)]}


@pytest.mark.backend_agnostic
def test_log_hparams_refuses_unfinished_metrics(tmp_path):
    with pytest.raises(ValueError, match=r"metrics lack \['top1', 'top5', 'loss'\]"):
        log_hparams(str(tmp_path), RunSpec().to_dict(), {"spec_hash": "x", "status": "failed"})
    assert not os.listdir(tmp_path)


@pytest.mark.slow  # TensorFlow only: under JAX the run costs ~40 s of compilation
def test_a_finished_run_holds_one_hparams_session(tmp_path):
    spec = RunSpec(dataset="digits", classes=[0, 1, 2], max_per_class=8, eval_max_per_class=4, batch_size=8,
                   epochs=1, n=1)
    metrics = train(spec, run_dir=str(tmp_path), verbose=0)
    start, scalars = _read(str(tmp_path / "tensorboard"))
    assert start.group_name == metrics["spec_hash"]
    assert _hparams(start) == hparam_values(metrics["spec"]) and _hparams(start)["n"] == 1
    assert scalars == {f"final_{k}": [(0, pytest.approx(metrics[k]))] for k in ("top1", "top5", "loss")}
