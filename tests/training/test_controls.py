"""The `shuffled` and `delta` controls: shuffled kernels are a per-filter permutation of the source's, delta
kernels the identity filter; both stay frozen through training, keep the pairing with AnB, and are planned by
sweeps."""

import json

import keras
import numpy as np
import pytest

from mk_keras import create_model, filter_layers
from mk_keras.experiments import SweepConfig, plan
from mk_keras.experiments.sweep import train_kwargs
from mk_keras.training import RunSpec, train
from mk_keras.transfer import array_sha256, freeze_filters, transfer_filters

pytestmark = pytest.mark.backend_agnostic

MODEL = "convnext_micro_cifar"


def _np(v):
    return keras.ops.convert_to_numpy(v)


def _filters(kernel):
    """(filters, kh*kw) from a (kh, kw, a, b) kernel: one row per 2-D filter."""
    kh, kw = kernel.shape[:2]
    return kernel.reshape(kh * kw, -1).T


def _assert_permuted(shuffled, source):
    """Each filter holds the same values as the source's, and most are arranged differently."""
    a, b = _filters(shuffled), _filters(source)
    np.testing.assert_array_equal(np.sort(a, axis=1), np.sort(b, axis=1))
    moved = (a != b).any(axis=1).mean()
    assert moved > 0.9, moved


def _convs(seed, kernel_size=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, kernel_size, name="c1", bias_initializer="random_normal")(inputs)
    x = keras.layers.Conv2D(5, kernel_size, name="c2")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("kind", ["depthwise", "conv"])
def test_shuffle_permutes_each_copied_filter_with_a_recorded_seed(kind):
    source, target = ((create_model(MODEL, 2), create_model(MODEL, 2)) if kind == "depthwise"
                      else (_convs(1), _convs(2)))
    report = transfer_filters(source, target, 2, kind, kernel_transform="shuffle", transform_seed=7)
    assert (report.kernel_transform, report.transform_seed) == ("shuffle", 7)
    assert "kernel_transform=shuffle seed=7" in str(report)
    again = create_model(MODEL, 2) if kind == "depthwise" else _convs(2)
    transfer_filters(source, again, 2, kind, kernel_transform="shuffle", transform_seed=7)
    other = create_model(MODEL, 2) if kind == "depthwise" else _convs(2)
    transfer_filters(source, other, 2, kind, kernel_transform="shuffle", transform_seed=8)
    src, dst = filter_layers(source, kind), filter_layers(target, kind)
    for i, entry in enumerate(report.entries):
        written = _np(dst[i].kernel)
        _assert_permuted(written, _np(src[i].kernel))
        assert entry.mapping == "shuffle" and entry.frozen and entry.bias_copied
        assert entry.kernel_sha256 == array_sha256(written)  # the proof describes what was written
        assert entry.source_sha256 == array_sha256(_np(src[i].kernel))
        np.testing.assert_array_equal(_np(dst[i].layer.bias), _np(src[i].layer.bias))  # bias copied as is
        np.testing.assert_array_equal(_np(filter_layers(again, kind)[i].kernel), written)  # seeded
        assert not np.array_equal(_np(filter_layers(other, kind)[i].kernel), written)
    assert report.to_dict()["kernel_transform"] == "shuffle"


def test_delta_sets_identity_filters_and_freezes_them():
    model = create_model(MODEL, 2)
    before = {f.name: _np(f.layer.bias).copy() for f in filter_layers(model)}
    report = freeze_filters(model, 2, order="last", kernel_transform="delta")
    layers = filter_layers(model)
    assert report.kernel_transform == "delta" and [e.index for e in report.entries] == [3, 4]
    for f, entry in zip(layers[3:], report.entries, strict=True):
        kernel = _np(f.kernel)
        expected = np.zeros_like(kernel)
        expected[3, 3] = 1.0  # 7x7: the centre tap of every channel
        np.testing.assert_array_equal(kernel, expected)
        assert not f.layer.trainable and entry.kernel_sha256 == array_sha256(kernel) and entry.mapping == "delta"
        np.testing.assert_array_equal(_np(f.layer.bias), before[f.name])
    assert not np.array_equal(_np(layers[0].kernel)[:, :, 0, 0] != 0, expected[:, :, 0, 0] != 0)  # others untouched
    # A delta layer computes the identity: a depthwise conv with it returns its input.
    x = np.random.default_rng(0).standard_normal((1, 6, 6, layers[3].kernel.shape[2])).astype("float32")
    np.testing.assert_allclose(_np(keras.ops.depthwise_conv(x, _np(layers[3].kernel), padding="same")), x, atol=1e-6)


def test_bad_control_arguments_fail_in_one_line():
    model = create_model(MODEL, 2)
    with pytest.raises(ValueError, match="kernel_transform='delta' with kind='conv'; allowed: depthwise"):
        freeze_filters(_convs(0), 1, "conv", kernel_transform="delta")
    with pytest.raises(ValueError, match="kernel_transform='shuffle' for freeze_filters; allowed: None, 'delta'"):
        freeze_filters(model, 1, kernel_transform="shuffle")
    with pytest.raises(ValueError, match="needs an integer transform_seed, got None"):
        transfer_filters(create_model(MODEL, 2), model, 1, kernel_transform="shuffle")
    with pytest.raises(ValueError, match="kernel_transform='delta' for transfer_filters; allowed: None, 'shuffle'"):
        transfer_filters(create_model(MODEL, 2), model, 1, kernel_transform="delta", transform_seed=0)
    with pytest.raises(ValueError, match=r"needs spatial kernels; layer 'c1' has a kernel of shape \(1, 1, 4, 6\)"):
        transfer_filters(_convs(0, 1), _convs(1, 1), 1, "pointwise", kernel_transform="shuffle", transform_seed=0)
    for fields, message in [
        (dict(kernel_transform="shuffle", n=2), "source=None copies none"),
        (dict(source="master_keys", n=2, kernel_transform="shuffle"), "source='master_keys' copies none"),
        (dict(source="run", n=2, kind="pointwise", kernel_transform="shuffle"), "1x1 kernels have no spatial"),
        (dict(source="delta", n=2, kind="conv"), "kind='conv' with source='delta'; allowed: depthwise"),
        (dict(source="delta", n=2, freeze=False), "freeze=False with source='delta'"),
        (dict(source="delta", n=2, master_key_reference="run"), "master_key_reference is set but source='delta'"),
        (dict(source="run", n=2, master_key_method="A"), "master_key_method is set but source='run'"),
    ]:
        with pytest.raises(ValueError, match=fields and message.replace("(", r"\(")):
            RunSpec(**fields)
    spec = RunSpec(source="run", n=2)
    assert spec.replace(kernel_transform="shuffle").spec_hash() != spec.spec_hash()
    assert RunSpec(source="master_keys", n=1).master_key_method == "B"


def test_sweep_plans_both_controls_with_their_train_arguments():
    p = plan(SweepConfig(name="c", classes_a="fashion_garments", classes_b="fashion_accessories",
                         models=[MODEL, "resnet10_cifar"], treatments=["baseA", "baseB", "AnB", "shuffled", "delta"],
                         depths=["2"], train_args={"master_key_method": "A"}))
    runs = {r.run_id: r for r in p.runs}
    shuffled = runs[f"{MODEL}-depthwise-shuffled-n2-s0"]
    assert shuffled.source == f"{MODEL}-baseA-s0" and "resnet10_cifar-conv-shuffled-n2-s0" in runs
    assert f"{MODEL}-depthwise-delta-n2-s0" in runs and "resnet10_cifar-conv-delta-n2-s0" not in runs
    kw = train_kwargs(shuffled, p.config, "/out")
    assert (kw["kernel_transform"], kw["freeze"], kw["n"]) == ("shuffle", True, 2)
    assert kw["source"].endswith(f"{MODEL}-baseA-s0") and "master_key_method" not in kw
    kw = train_kwargs(runs[f"{MODEL}-depthwise-delta-n2-s0"], p.config, "/out")
    assert (kw["source"], kw["kind"], kw["n"]) == ("delta", "depthwise", 2) and "kernel_transform" not in kw
    with pytest.raises(ValueError, match="treatment 'delta' needs a model with kind depthwise"):
        plan(SweepConfig(name="c", models=["resnet10_cifar"], treatments=["baseB", "delta"], depths=["2"]))
    with pytest.raises(ValueError, match="treatment 'shuffled' needs 'baseA'"):
        plan(SweepConfig(name="c", models=[MODEL], treatments=["baseB", "shuffled"], depths=["2"]))


@pytest.mark.long  # make test-long (three short training runs: about 2 min on 2 busy cores)
@pytest.mark.slow
def test_trained_controls_keep_frozen_kernels_and_the_pairing_with_anb(tmp_path):
    keras.utils.set_random_seed(123)
    source = tmp_path / "source.keras"
    create_model(MODEL, 10).save(source)
    source_kernels = [_np(f.kernel) for f in filter_layers(keras.saving.load_model(source))]
    args = dict(model=MODEL, dataset="digits", max_per_class=8, eval_max_per_class=2, batch_size=8, epochs=1,
                steps_per_epoch=2, eval_every=0, steps_per_execution=1, verbose=0, seed=5, n=2, lr=1e-2,
                warmup_epochs=0)
    arms = {"AnB": dict(source=str(source)), "shuffled": dict(source=str(source), kernel_transform="shuffle"),
            "delta": dict(source="delta")}
    runs = {}
    for name, extra in arms.items():
        seen = {}

        def snapshot(model, seen=seen):
            seen.update({layer.name: [_np(w).copy() for w in layer.weights] for layer in model.layers if layer.weights})
            return {}

        metrics = train(**args, **extra, init_hook=snapshot, run_dir=str(tmp_path / name))
        runs[name] = (metrics, seen, filter_layers(keras.saving.load_model(tmp_path / name / "model.keras")))
    anb_metrics, anb_start, _ = runs["AnB"]
    frozen = ["stage1_block1_dwconv", "stage2_block1_dwconv"]
    for name, (metrics, start, trained) in runs.items():
        assert metrics["initial_weights"] == anb_metrics["initial_weights"], name  # pairing
        assert metrics["frozen_layers"] == frozen, name
        for layer, values in anb_start.items():
            if layer not in frozen:  # every layer the treatment did not set starts as AnB's
                for a, b in zip(values, start[layer], strict=True):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name}: {layer}")
        for i, f in enumerate(trained[:2]):  # frozen kernels bit-identical after training
            np.testing.assert_array_equal(_np(f.kernel), start[f.name][0], f"{name}: {f.name}")
        assert not np.array_equal(_np(trained[2].kernel), start[trained[2].name][0])  # the rest trained
    for i, f in enumerate(runs["shuffled"][2][:2]):
        _assert_permuted(_np(f.kernel), source_kernels[i])
    for f in runs["delta"][2][:2]:
        assert _np(f.kernel).sum() == f.kernel.shape[2] and _np(f.kernel)[3, 3].min() == 1
    report = json.loads((tmp_path / "shuffled" / "transfer_report.json").read_text())
    assert (report["kernel_transform"], report["transform_seed"]) == ("shuffle", 5)
    assert runs["shuffled"][0]["transfer"]["kernel_transform"] == "shuffle"
    assert runs["shuffled"][0]["spec_hash"] != anb_metrics["spec_hash"]
    report = json.loads((tmp_path / "delta" / "transfer_report.json").read_text())
    assert report["kernel_transform"] == "delta" and report["source"] == {"type": "delta"}
    assert runs["delta"][0]["spec"]["source"] == "delta" and runs["delta"][0]["spec"]["source_sha256"] is None
