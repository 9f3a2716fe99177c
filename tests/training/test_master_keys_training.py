"""train(source="master_keys"): frozen master-key kernels fitted to a reference stay bit-identical while their
shifts train; a run that dies mid-epoch resumes to the uninterrupted result; bad combinations fail early."""

import json

import keras
import numpy as np
import pytest

from mk_keras import create_model, filter_layers
from mk_keras.master_keys import fit_master_keys, master_keys
from mk_keras.models.layers import MasterKeyDepthwiseConv2D
from mk_keras.training import MASTER_KEYS, train

DW = ["stage1_block1_dwconv", "stage2_block1_dwconv"]


def _np(v):
    return keras.ops.convert_to_numpy(v)


class Crash(BaseException):
    """The process dying (not an Exception, so `train` records no failure: metrics.json stays 'running')."""


class CrashAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise Crash


def _kwargs(run_dir, reference):
    return dict(model="convnext_micro_cifar", dataset="digits", max_per_class=16, eval_max_per_class=4,
                batch_size=16, epochs=2, steps_per_epoch=3, steps_per_execution=1, checkpoint_every=2, lr=4e-3,
                warmup_epochs=0, eval_every=0, deterministic=True, seed=1, source=MASTER_KEYS, n=2,
                master_key_reference=reference, run_dir=str(run_dir), verbose=0)


@pytest.mark.slow
def test_fitted_master_keys_stay_frozen_shifts_train_and_a_crashed_run_resumes(tmp_path):
    reference = tmp_path / "reference.keras"
    create_model("convnext_micro_cifar", 3).save(reference)
    fits = [fit_master_keys(_np(f.kernel)[:, :, :, 0].transpose(2, 0, 1))
            for f in filter_layers(keras.saving.load_model(reference))[:2]]

    killed = tmp_path / "killed"
    with pytest.raises(Crash):
        train(**_kwargs(killed, str(reference)), callbacks=[CrashAt(5)])
    assert json.loads((killed / "metrics.json").read_text())["status"] == "running"
    resumed = train(**_kwargs(killed, str(reference)))
    assert resumed["status"] == "finished" and resumed["resumed_at_steps"] == [5]

    start = {}

    def snapshot(model):
        start.update({f.name: (_np(f.kernel).copy(), _np(getattr(f.layer, "shift", f.kernel)).copy())
                      for f in filter_layers(model)})
        return {}

    straight = train(**_kwargs(tmp_path / "straight", str(reference)), init_hook=snapshot)
    assert resumed["top1"] == straight["top1"] and resumed["loss"] == straight["loss"]
    a = keras.saving.load_model(killed / "model.keras")
    b = keras.saving.load_model(tmp_path / "straight" / "model.keras")
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(_np(wa), _np(wb), wa.path)

    # The master keys: s * F per channel (F the published unit-norm key), s = sign(a) of the fit; bit-identical
    # before and after training.
    keys = master_keys(7)
    flat = keys.reshape(8, -1).astype(np.float64)
    means, centred_norms = flat.mean(axis=1), np.linalg.norm(flat - flat.mean(axis=1, keepdims=True), axis=1)
    layers = filter_layers(b)
    for layer, fit in zip(layers[:2], fits):
        signs = np.where(fit.a < 0, -1, 1)
        expected = (signs[:, None, None] * keys[fit.index]).transpose(1, 2, 0)[..., None]
        assert isinstance(layer.layer, MasterKeyDepthwiseConv2D) and not layer.kernel.trainable
        np.testing.assert_array_equal(_np(layer.kernel), expected.astype("float32"))
        np.testing.assert_array_equal(start[layer.name][0], expected.astype("float32"))
        # the fitted shift: kernel + shift = (a x̂ + b) |F_c| / |a|, the fit up to a positive scale
        shift = fit.b * centred_norms[fit.index] / np.abs(fit.a) - signs * means[fit.index]
        np.testing.assert_allclose(start[layer.name][1], shift, rtol=1e-5, atol=1e-7)
        assert not np.array_equal(_np(layer.layer.shift), start[layer.name][1])  # ... then trained
    for layer in layers[2:]:
        assert type(layer.layer) is keras.layers.DepthwiseConv2D
        assert not np.array_equal(_np(layer.kernel), start[layer.name][0])

    assert straight["frozen_layers"] == DW
    assert straight["params"]["frozen"] == 7 * 7 * 24 + 7 * 7 * 48  # kernels only: shifts and biases train
    transfer = straight["transfer"]
    assert transfer["source"]["type"] == MASTER_KEYS and transfer["source"]["reference"]["path"] == str(reference)
    assert transfer["master_key_method"] == "B" and straight["spec"]["master_key_method"] == "B"
    assert [m["key_counts"] for m in transfer["master_keys"]] == [np.bincount(f.index, minlength=8).tolist()
                                                                  for f in fits]
    report = json.loads((tmp_path / "straight" / "transfer_report.json").read_text())
    assert report["shift"] == "kernel" and [e["layer"] for e in report["entries"]] == DW
    assert [e["key_index"] for e in report["entries"]] == [f.index.tolist() for f in fits]


@pytest.mark.parametrize("overrides, message", [
    ({"kind": "conv"}, "kind='conv' with source='master_keys'; allowed: depthwise"),
    ({"n": 0}, "n=0 with source='master_keys'"),
    ({"freeze": False}, "freeze=False with source='master_keys'"),
    ({"kernel_map": "auto"}, "kernel_map='auto' does not apply to source='master_keys'"),
    ({"source": None}, "master_key_reference is set but source=None"),
    ({"master_key_method": "C"}, "master_key_method='C'; allowed: None, 'B', 'A'"),
    ({"master_key_reference": "/nonexistent/run"}, "master_key_reference: model spec '/nonexistent/run' does not exist"),
])
def test_bad_master_key_arguments_fail_before_anything_is_written(tmp_path, overrides, message):
    kwargs = {**_kwargs(tmp_path / "run", str(tmp_path)), **overrides}
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace("(", r"\(")):
        train(**kwargs)
    assert not (tmp_path / "run").exists()
