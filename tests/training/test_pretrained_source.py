"""Training with a pretrained source: a PyTorch checkpoint spec (`<model>:<file>.pth`) is converted, its
depthwise filters copied and frozen, and the run records the checkpoint file's sha256."""

import json

import keras
import numpy as np
import pytest
import timm
import torch

from mk_keras import filter_layers
from mk_keras.cli.transfer import source_model_name
from mk_keras.sources import file_sha256
from mk_keras.training import train


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "atto.pth"
    torch.save(timm.create_model("convnext_atto", pretrained=False, num_classes=3).state_dict(), path)
    return path


def test_checkpoint_source_gives_its_filters_frozen_and_its_hash(tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    spec = f"convnext_atto:{checkpoint}"
    assert source_model_name(spec) == "convnext_atto"
    metrics = train(model="convnext_atto_cifar", source=spec, n=2, dataset="digits", max_per_class=4,
                    eval_max_per_class=1, batch_size=8, epochs=1, steps_per_epoch=1, eval_every=0, steps_per_execution=1,
                    image_size=32, run_dir=str(tmp_path / "run"),
                    verbose=0)
    assert metrics["status"] == "finished"
    digest = file_sha256(checkpoint)
    assert metrics["spec"]["source_sha256"] == digest
    assert json.loads((tmp_path / "run" / "spec.json").read_text())["spec"]["source_sha256"] == digest
    model = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    layers = filter_layers(model, "depthwise")
    for entry, key in zip(layers[:2], ("stages.0.blocks.0.conv_dw.weight", "stages.0.blocks.1.conv_dw.weight")):
        expected = state[key].numpy().transpose(2, 3, 0, 1)  # (C, 1, 7, 7) -> (7, 7, C, 1)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(entry.kernel), expected)
        assert not entry.layer.trainable
    assert layers[2].layer.trainable


def test_keras_weights_source_is_the_converted_model(tmp_path):
    """A `keras:<Name>:PATH` source is converted (MobileNetV2: its own input scaling and BatchNorm epsilon),
    not the raw application, whose layers and conventions differ from the mk_keras model."""
    from mk_keras.models.conventions import read_conventions
    from mk_keras.training.run import _load

    app = keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3))  # 1000 classes, as :imagenet
    weights = tmp_path / "mnv2.weights.h5"
    app.save_weights(weights)
    model, info = _load(f"keras:MobileNetV2:{weights}", None)
    assert model.name == "mobilenetv2" and info["sha256"] == file_sha256(weights)
    assert read_conventions(model)["preprocessing"] == "tf"
    app_kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in app.layers
                   if isinstance(layer, keras.layers.DepthwiseConv2D)]
    for entry, expected in zip(filter_layers(model, "depthwise"), app_kernels, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(entry.kernel), expected)
