"""export_saved_model / verify_saved_model: round trips, tampering, the serving signature, JAX-trained models."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from export_helpers import make_run_dir, sha256

import mk_keras
from mk_keras.export import METADATA_FILE, export_saved_model, frozen_kernels, verify_saved_model

HERE = os.path.dirname(os.path.abspath(__file__))


def _metadata(path):
    with open(os.path.join(path, METADATA_FILE)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def convnext_export(tmp_path_factory):
    """A ConvNeXt run with its first 3 depthwise layers frozen, exported; plus the expected kernel hashes."""
    root = tmp_path_factory.mktemp("convnext")
    model, report = make_run_dir(str(root / "AnB_n3"), "convnext_micro_cifar", n=3, kind="depthwise")
    expected = [(e.target_layer, sha256(keras.ops.convert_to_numpy(model.get_layer(e.target_layer).kernel)))
                for e in report.entries]
    path = export_saved_model(str(root / "AnB_n3"), str(root / "export"))
    return path, expected, model


def test_convnext_export_metadata_records_run_and_frozen_kernels(convnext_export):
    path, expected, _ = convnext_export
    assert {"saved_model.pb", "variables", "model.keras", METADATA_FILE} <= set(os.listdir(path))
    meta = _metadata(path)
    assert [(k["layer"], k["sha256"]) for k in meta["frozen_kernels"]] == expected
    assert [k["variable"] for k in meta["frozen_kernels"]] == [f"{layer}/kernel" for layer, _ in expected]
    assert meta["frozen_layers"] == [layer for layer, _ in expected]
    assert [(p["layer"], p["sha256"], p["source_index"]) for p in meta["transfer_proofs"]] == [
        (layer, digest, i) for i, (layer, digest) in enumerate(expected)]
    assert (meta["n"], meta["kind"], meta["order"], meta["freeze"]) == (3, "depthwise", "first", True)
    assert meta["source"]["type"] == "run_dir" and meta["source"]["model"] == "convnext_micro_cifar"
    assert meta["filter_source"]["dataset"] == "fashion_mnist"
    assert meta["datasets"]["train"]["spec"] == "digits" and meta["datasets"]["eval"]["split"] == "test"
    assert meta["class_names"] == ["class_0", "class_1", "class_2"]
    assert meta["versions"]["keras"] == keras.__version__ and meta["versions"]["tensorflow"] == tf.__version__
    assert meta["versions"]["mk_keras"] == mk_keras.__version__
    assert "note" not in meta


def test_convnext_round_trip_verifies(convnext_export):
    path, _, _ = convnext_export
    result = verify_saved_model(path)
    assert result.ok, str(result)
    assert set(result.max_abs_diff) == {"serving_default", "serve_float32"}
    assert max(result.max_abs_diff.values()) <= 1e-5
    assert result.kernels_checked == 3 and result.kernels_differing == [] and result.proofs_checked == 3
    assert result.source_checked is None and "source model /runs/base_A/model.keras is not reachable" in str(result)
    assert "OK" in str(result)


def test_serving_signature_answers_uint8_batch(convnext_export):
    path, _, model = convnext_export
    serve = tf.saved_model.load(path).signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 32, 32, 3]
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    probs = serve(images=tf.constant(images))["probabilities"].numpy()
    assert probs.shape == (5, 3) and probs.dtype == np.float32
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(images.astype("float32"), training=False)))
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def _one_ulp_up(value):
    value = np.array(value)
    value.flat[0] = np.nextafter(value.flat[0], np.float32(np.inf))
    return value


def test_tampered_export_fails_verification(convnext_export, tmp_path):
    path, expected, _ = convnext_export
    tampered = str(tmp_path / "tampered")
    shutil.copytree(path, tampered)
    loaded = tf.saved_model.load(tampered)
    by_name = {v.name: v for v in loaded.variables}
    frozen = by_name[f"{expected[1][0]}/kernel:0"]
    frozen.assign(_one_ulp_up(frozen.numpy()))  # invisible in the outputs
    head = by_name["head_dense/kernel:0"]
    head.assign(head.numpy() * np.array([2.0, 1.0, 1.0], np.float32))  # a trainable weight: changes the outputs
    tf.train.Checkpoint(loaded).write(os.path.join(tampered, "variables", "variables"))
    keras_file = os.path.join(tampered, "model.keras")
    model = keras.saving.load_model(keras_file)
    kernel = model.get_layer(expected[0][0]).kernel
    kernel.assign(_one_ulp_up(keras.ops.convert_to_numpy(kernel)))
    model.save(keras_file)

    result = verify_saved_model(tampered)
    assert not result.ok
    assert result.kernels_differing == sorted(f"{layer}/kernel" for layer, _ in expected[:2])
    assert result.max_abs_diff["serving_default"] > 1e-5
    text = str(result)
    assert "FAILED" in text and "1/3 bit-identical" in text
    assert f"kernel {expected[0][0]}/kernel of the Keras model differs" in text
    assert f"kernel {expected[1][0]}/kernel in the SavedModel differs" in text
    assert "model.keras differs from the exported archive" in text


def _nudge_kernel(keras_file, layer):
    """Move the first value of `layer`'s kernel in the .keras file one float32 ulp up."""
    model = keras.saving.load_model(keras_file)
    kernel = model.get_layer(layer).kernel
    kernel.assign(_one_ulp_up(keras.ops.convert_to_numpy(kernel)))
    model.save(keras_file)


def test_frozen_kernel_changed_after_transfer_fails_verify(tmp_path):
    run = str(tmp_path / "run")
    make_run_dir(run, "convnext_micro_cifar", n=2, kind="depthwise")
    _nudge_kernel(os.path.join(run, "model.keras"), "stage2_block1_dwconv")  # as a training bug would
    path = export_saved_model(run, str(tmp_path / "export"))
    result = verify_saved_model(path)
    assert not result.ok and result.kernels_differing == ["stage2_block1_dwconv/kernel"]
    assert max(result.max_abs_diff.values()) <= 1e-5  # the export itself is self-consistent
    assert result.problems == ["layer stage2_block1_dwconv: frozen kernel stage2_block1_dwconv/kernel changed "
                               "after the transfer (sha256 " + _metadata(path)["frozen_kernels"][1]["sha256"][:12]
                               + " in the export vs " + _metadata(path)["transfer_proofs"][1]["sha256"][:12]
                               + " assigned by the transfer)"]
    shutil.rmtree(run)  # without the run directory the proofs copied into the metadata still catch it
    result = verify_saved_model(path)
    assert not result.ok and "stage2_block1_dwconv: frozen kernel" in str(result)
    assert f"{run}/transfer_report.json is not reachable" in str(result)


@pytest.mark.long  # 33 s; the frozen-kernel proofs are checked by the other verify tests in make test
def test_verify_checks_the_source_model_when_reachable(tmp_path):
    run, source = str(tmp_path / "run"), str(tmp_path / "base_A" / "model.keras")
    make_run_dir(run, "convnext_micro_cifar", n=2, kind="depthwise", source_path=source)
    path = export_saved_model(run, str(tmp_path / "export"))
    result = verify_saved_model(path)
    assert result.ok and result.source_checked == source and result.proofs_checked == 2, str(result)
    assert f"source kernels against {source}" in str(result)
    _nudge_kernel(source, "stage1_block1_dwconv")
    result = verify_saved_model(path)
    assert not result.ok and len(result.problems) == 1
    assert result.problems[0].startswith(f"source layer stage1_block1_dwconv: its kernel in {source} is not the one "
                                         "transferred into stage1_block1_dwconv")


def test_variable_level_frozen_kernel_is_exported_from_its_transfer_report(tmp_path):
    def separable():
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x)))

    target = separable()
    report = mk_keras.transfer_filters(separable(), target, 1)
    assert [w.path for _, w in frozen_kernels(target)] == ["sep/depthwise_kernel"]  # in memory
    keras_file = str(tmp_path / "m.keras")
    target.save(keras_file)  # .keras files do not keep variable-level trainable flags
    assert frozen_kernels(keras.saving.load_model(keras_file)) == []
    path = export_saved_model(keras_file, str(tmp_path / "export"), transfer=report)
    meta = _metadata(path)
    assert [k["variable"] for k in meta["frozen_kernels"]] == ["sep/depthwise_kernel"]
    assert meta["frozen_layers"] == ["sep"] and len(meta["transfer_proofs"]) == 1
    result = verify_saved_model(path)
    assert result.ok and result.proofs_checked == 1, str(result)


def test_model_without_frozen_layers_exports_and_overwrite_replaces_only_on_success(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs, name="tiny")
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("previous export")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_saved_model(model, str(target))
    assert (target / "old.txt").exists()

    export_saved_model(model, str(target), overwrite=True, class_names=["no", "yes"])
    meta = _metadata(str(target))
    assert meta["frozen_layers"] == [] and meta["frozen_kernels"] == []
    assert meta["note"] == "the model has no frozen layers"
    assert meta["class_names"] == ["no", "yes"] and meta["n"] is None
    assert not (target / "old.txt").exists()

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="cannot load"):
        export_saved_model(str(corrupt), str(target), overwrite=True)
    assert _metadata(str(target)) == meta  # the previous export is untouched
    assert sorted(os.listdir(tmp_path)) == ["corrupt.keras", "export"]  # no temporary directory left


_JAX_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import keras, numpy as np
from export_helpers import make_run_dir, sha256
assert keras.backend.backend() == "jax"
run_dir, out = sys.argv[2], sys.argv[3]
model, report = make_run_dir(run_dir, "convnext_micro_cifar", n=2, kind="depthwise")
images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
logits = model.predict(images.astype("float32"), verbose=0)  # one jit-compiled call (eager JAX compiles per op)
probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
np.savez(os.path.join(out, "jax.npz"), images=images, probs=probs)
with open(os.path.join(out, "hashes.json"), "w") as f:
    json.dump([sha256(keras.ops.convert_to_numpy(model.get_layer(e.target_layer).kernel)) for e in report.entries], f)
"""


@pytest.mark.long  # 32 s: trains under JAX in a subprocess
def test_jax_trained_model_exports_through_keras_file(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _JAX_SCRIPT, HERE, str(tmp_path / "jax_run"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export_saved_model(str(tmp_path / "jax_run"), str(tmp_path / "export"))  # this process runs TensorFlow
    meta = _metadata(str(tmp_path / "export"))
    assert meta["source"]["trained_backend"] == "jax"
    with open(tmp_path / "hashes.json") as f:
        assert [k["sha256"] for k in meta["frozen_kernels"]] == json.load(f)
    jax_out = np.load(tmp_path / "jax.npz")
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    probs = serve(images=tf.constant(jax_out["images"]))["probabilities"].numpy()
    np.testing.assert_allclose(probs, jax_out["probs"], atol=1e-5)


def test_export_refuses_other_backends(monkeypatch, tmp_path):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="TensorFlow backend"):
        export_saved_model(str(tmp_path / "run"), str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()
