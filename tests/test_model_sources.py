"""`mk_keras.sources.load_source`: every spec kind, what it records, and a one-line error for every bad spec."""

import hashlib
import json
import zipfile

import keras
import numpy as np
import pytest

from mk_keras.sources import TRAINED_KINDS, load_source

pytestmark = pytest.mark.backend_agnostic


def _tiny(classes=3):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(x), name="tiny")


def _run_dir(path, model=None, **metrics):
    path.mkdir()
    if model is not None:
        model.save(path / "model.keras")
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def _truncated_copy(src, dst):
    """A valid zip whose model.weights.h5 is cut in half."""
    with zipfile.ZipFile(src) as z_in, zipfile.ZipFile(dst, "w") as z_out:
        for name in z_in.namelist():
            data = z_in.read(name)
            z_out.writestr(name, data[: len(data) // 2] if name == "model.weights.h5" else data)
    return dst


def _kernel(model):
    return keras.ops.convert_to_numpy(model.get_layer("dw").kernel)


def test_keras_file_round_trip_with_sha256(tmp_path):
    model = _tiny()
    model.save(tmp_path / "b.keras")
    src = load_source(str(tmp_path / "b.keras"))
    assert (src.kind, src.label, src.path, src.info) == ("keras_file", "b", str(tmp_path / "b.keras"), {})
    assert src.sha256 == hashlib.sha256((tmp_path / "b.keras").read_bytes()).hexdigest()
    np.testing.assert_array_equal(_kernel(src.model), _kernel(model))
    assert load_source(tmp_path / "b.keras").sha256 == src.sha256  # os.PathLike works too


def test_run_directory_records_its_metrics_spec_or_legacy_config(tmp_path):
    model = _tiny()
    run = _run_dir(tmp_path / "base", model, status="finished", top1=0.75,
                   spec={"dataset": "digits", "classes": "0,1,2", "epochs": 3})
    src = load_source(str(run))
    assert (src.kind, src.label, src.path) == ("run_dir", "base", str(run / "model.keras"))
    assert src.info == {"dataset": "digits", "classes": "0,1,2", "top1": 0.75, "status": "finished"}
    np.testing.assert_array_equal(_kernel(src.model), _kernel(model))
    record = json.loads(json.dumps(src.to_dict()))
    assert record == {"type": "run_dir", "spec": str(run), "label": "base", "model": "tiny",
                      "path": str(run / "model.keras"), "sha256": src.sha256, "dataset": "digits",
                      "classes": "0,1,2", "top1": 0.75, "status": "finished"}
    line = src.describe()
    assert "\n" not in line and line.startswith(f"run directory {run}: tiny, sha256 {src.sha256[:12]}")
    assert "digits classes=0,1,2" in line and "top1 0.750" in line

    legacy = _run_dir(tmp_path / "old", model, status="finished", top1=0.5,
                      config={"dataset": "fashion_mnist", "classes": "fashion_garments"})
    assert load_source(legacy).info["classes"] == "fashion_garments"
    # The same model.keras named directly is a file, but keeps its run's info.
    direct = load_source(str(legacy / "model.keras"))
    assert direct.kind == "keras_file" and direct.info["dataset"] == "fashion_mnist"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="keras.applications structure and weight files, the same under every backend")
def test_objects_registry_names_and_keras_applications(tmp_path):
    model = _tiny()
    src = load_source(model)
    assert src.model is model and (src.kind, src.label, src.path, src.sha256) == ("object", "tiny", None, None)
    reg = load_source("convnext_micro_cifar", num_classes=3)
    assert reg.kind == "registry" and reg.model.output_shape == (None, 3) and reg.sha256 is None
    assert load_source("convnext_micro_cifar").model.output_shape == (None, 10)
    app = load_source("keras:MobileNetV3Small", num_classes=7)
    assert app.kind == "keras_application" and app.label == "keras:MobileNetV3Small"
    assert app.model.output_shape == (None, 7)


def test_trained_kinds_refuse_random_models_before_building_them(monkeypatch):
    monkeypatch.setattr("mk_keras.sources.create_model", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(ValueError, match=r"'convnext_micro_cifar' is a registry model \(random init\); allowed "
                                         r"here: keras.Model object, run directory, .keras file"):
        load_source("convnext_micro_cifar", kinds=TRAINED_KINDS)


def test_loading_draws_from_the_seeded_random_stream(tmp_path):
    """Why callers build their seed-dependent model before loading a source (see the module docstring)."""
    _tiny().save(tmp_path / "a.keras")
    keras.utils.set_random_seed(0)
    first = _kernel(_tiny())
    keras.utils.set_random_seed(0)
    load_source(str(tmp_path / "a.keras"))
    assert not np.array_equal(_kernel(_tiny()), first)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: p / "missing.keras", FileNotFoundError, "'{p}/missing.keras' does not exist"),
        (lambda p: p / "no" / "run", FileNotFoundError, "'{p}/no/run' does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", ValueError, "'{p}/empty' is not a run directory"),
        (lambda p: _run_dir(p / "r", status="running"), FileNotFoundError,
         "run directory '{p}/r' has no model.keras (unfinished run: its metrics.json says status 'running')"),
        (lambda p: _run_dir(p / "r", _tiny(), status="failed"), ValueError,
         "'{p}/r' holds an unfinished run (its metrics.json says status 'failed')"),
        (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", ValueError,
         "'{p}/notes.txt' is not a .keras file or a run directory"),
        (lambda p: (p / "bad.keras").write_bytes(b"not a zip") and p / "bad.keras", ValueError,
         "cannot load model file '{p}/bad.keras'"),
        (lambda p: _tiny().save(p / "ok.keras") or _truncated_copy(p / "ok.keras", p / "cut.keras"), ValueError,
         "cannot load model file '{p}/cut.keras' (OSError: Unable to synchronously open file (truncated file"),
        (lambda p: "convnext_micro_cfar", ValueError,
         "unknown model spec 'convnext_micro_cfar': not a run directory, .keras file, keras:<Application> or "
         "registry name (close registry names: convnext_micro_cifar"),
        (lambda p: "keras:NoSuchNet", ValueError, "unknown keras.applications model 'NoSuchNet'"),
        (lambda p: 3, ValueError, "model spec 3 must be a keras.Model, a path"),
        (lambda p: "keras:MobileNetV2:weights.h5", ValueError,
         "weights 'weights.h5' in 'keras:MobileNetV2:weights.h5': allowed 'imagenet' or a .weights.h5 file"),
        (lambda p: f"keras:MobileNetV2:{p}/none.weights.h5", FileNotFoundError,
         "weights file '{p}/none.weights.h5' in 'keras:MobileNetV2:{p}/none.weights.h5' does not exist"),
        (lambda p: f"convnext_tny:{p}/x.pth", ValueError,
         "unknown model 'convnext_tny' in checkpoint spec 'convnext_tny:{p}/x.pth' (close registry names: "
         "convnext_tiny"),
        (lambda p: f"convnext_tiny:{p}/x.safetensors", FileNotFoundError, "checkpoint '{p}/x.safetensors' in"),
        (lambda p: f"{p}/x.pth", ValueError, "'{p}/x.pth' is a PyTorch checkpoint without its model; write "
         "<registry model>:{p}/x.pth"),
    ],
)
def test_bad_specs_raise_one_line(tmp_path, make, error, message):
    spec = make(tmp_path)
    with pytest.raises(error) as info:
        load_source(spec if isinstance(spec, (str, int)) else str(spec))
    text = str(info.value)
    assert message.format(p=tmp_path) in text and "\n" not in text and len(text) < 500


def test_keras_application_with_a_local_weights_file(tmp_path):
    app = keras.applications.MobileNetV2(weights=None, classes=4)
    app.save_weights(tmp_path / "mnv2.weights.h5")
    spec = f"keras:MobileNetV2:{tmp_path}/mnv2.weights.h5"
    src = load_source(spec, num_classes=4, kinds=TRAINED_KINDS)
    assert (src.kind, src.path) == ("keras_weights", f"{tmp_path}/mnv2.weights.h5")
    assert src.sha256 == hashlib.sha256((tmp_path / "mnv2.weights.h5").read_bytes()).hexdigest()
    for a, b in zip(src.model.weights, app.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_imagenet_download_failure_is_one_line(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ValueError) as info:
        load_source("keras:MobileNetV2:imagenet")
    text = str(info.value)
    assert text.startswith("keras.applications.MobileNetV2: cannot download the ImageNet weights (Exception: URL "
                           "fetch failure") and "\n" not in text


def test_imagenet_weights_record_the_file_keras_fetched(tmp_path, monkeypatch):
    """The hash is that of the file Keras' get_file returned (here a local stand-in, nothing is downloaded)."""
    from keras.src.utils import file_utils

    app = keras.applications.MobileNetV2(weights=None)
    app.save_weights(tmp_path / "mnv2.weights.h5")
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: str(tmp_path / "mnv2.weights.h5"))
    src = load_source("keras:MobileNetV2:imagenet", kinds=TRAINED_KINDS)
    assert (src.kind, src.path) == ("keras_weights", str(tmp_path / "mnv2.weights.h5"))
    assert src.sha256 == hashlib.sha256((tmp_path / "mnv2.weights.h5").read_bytes()).hexdigest()


def test_checkpoint_spec_is_a_trained_source(tmp_path):
    import timm
    import torch

    torch.manual_seed(0)
    state = timm.create_model("convnext_atto", pretrained=False, num_classes=3).state_dict()
    torch.save(state, tmp_path / "atto.pt")
    src = load_source(f"convnext_atto:{tmp_path}/atto.pt", kinds=TRAINED_KINDS)
    assert (src.kind, src.model.name, src.model.output_shape[-1]) == ("checkpoint", "convnext_atto", 3)
    assert src.sha256 == hashlib.sha256((tmp_path / "atto.pt").read_bytes()).hexdigest()
    assert src.to_dict()["path"] == f"{tmp_path}/atto.pt"
    np.testing.assert_array_equal(src.model.get_layer("stem_conv").kernel.numpy(),
                                  np.transpose(state["stem.0.weight"].numpy(), (2, 3, 1, 0)))
    with pytest.raises(ValueError, match="does not match"):
        load_source(f"convnext_femto:{tmp_path}/atto.pt")
