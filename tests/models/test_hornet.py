"""HorNet builder: parameter counts of the official models, filter addressing, names, serialisation."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

import mk_keras
from mk_keras.models.hornet import MODEL_CONFIGS

sys.path.insert(0, str(Path(__file__).parents[1] / "convert"))
from hornet_reference import HorNetReference  # noqa: E402

# Rao et al. (2022), Table 1 (ImageNet-1k, 224 px, 1000 classes), in millions
PUBLISHED = {"hornet_tiny_7x7": 22.41, "hornet_small_7x7": 49.53}


def _trainable(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _count_by_blocks(name):
    """Trainable parameters of `name` from a build with one block per stage: blocks of a stage are alike, so
    the full count is that build's plus (depth - 1) times its block of each stage (a 224 px HorNet-S takes
    ~20 s to build on a 2-core CPU, one block per stage ~2 s)."""
    depths = MODEL_CONFIGS[name.split("_")[1]]["depths"]
    model = mk_keras.create_model(name, num_classes=1000, depths=[1] * len(depths))
    count = _trainable(model.trainable_weights)
    for s, depth in enumerate(depths, start=1):
        block = [w for l in model.layers if l.name.startswith(f"stage{s}_block1_") for w in l.trainable_weights]
        count += (depth - 1) * _trainable(block)
    return count


def _torch_count(name):
    config = MODEL_CONFIGS[name.split("_")[1]]
    with torch.device("meta"):  # shapes only, no memory or initialisation
        return sum(p.numel() for p in HorNetReference(**config, num_classes=1000).parameters())


# TensorFlow only: counts do not depend on the backend, and a JAX build compiles an initialiser per weight shape
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_official_models(name):
    count = _count_by_blocks(name)
    print(f"{name}: {count:,} trainable parameters")
    assert count == _torch_count(name)
    assert round(count / 1e6, 2) == PUBLISHED[name]


@pytest.mark.long
@pytest.mark.parametrize("name, expected", [("hornet_tiny_7x7", 22_409_512), ("hornet_small_7x7", 49_528_264)])
def test_full_224px_builds_have_the_counted_parameters(name, expected):
    model = mk_keras.create_model(name, num_classes=1000)
    assert _trainable(model.trainable_weights) == model.count_params() == expected == _torch_count(name)
    assert len(mk_keras.filter_layers(model, "depthwise")) == 25


def test_filter_addressing_names_and_initialisation():
    model = mk_keras.create_model("hornet_micro_cifar", num_classes=10)
    depthwise = mk_keras.filter_layers(model, "depthwise")
    assert [f.name for f in depthwise] == [f"stage{s}_block{b}_gnconv_dwconv"
                                          for s, d in enumerate([1, 1, 2, 1], start=1) for b in range(1, d + 1)]
    assert [(f.stage, f.block) for f in depthwise] == [(1, 1), (2, 1), (3, 1), (3, 2), (4, 1)]
    # gnConv of order n on C channels: one 7x7 depthwise conv over C/2^(n-1) + ... + C channels
    assert [f.kernel_shape for f in depthwise] == [(7, 7, 36, 1), (7, 7, 84, 1), (7, 7, 180, 1),
                                                   (7, 7, 180, 1), (7, 7, 372, 1)]
    real = [l for l in model.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert len(real) == 5
    assert len(mk_keras.filter_layers(model, "conv")) == 4  # stem and three downsampling convs
    # per block order + 3: proj_in, order - 1 pws, proj_out, pwconv1, pwconv2 (orders 2, 3, 4, 4, 5)
    assert len(mk_keras.filter_layers(model, "pointwise")) == 5 + 6 + 2 * 7 + 8
    assert not any(isinstance(l, keras.Model) for l in model.layers)
    assert mk_keras.model_family("hornet_small_7x7") == "hornet"
    assert {"hornet_tiny_7x7", "hornet_small_7x7", "hornet_micro_cifar"} <= set(mk_keras.list_models("hornet*"))

    # initialisation as the official _init_weights
    kernel = keras.ops.convert_to_numpy(model.get_layer("stage4_block1_pwconv1").kernel)  # 192 x 768
    assert kernel.std() == pytest.approx(0.02, rel=0.03)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("stage2_block1_gamma1").gamma), 1e-6)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            assert not np.any(keras.ops.convert_to_numpy(layer.bias)), layer.name


@pytest.mark.backend_agnostic
def test_keras_file_round_trip(tmp_path):
    # the weight shapes of tests/convert/test_hornet_convert.py (under JAX a build compiles one initialiser per shape)
    model = mk_keras.create_model("hornet_micro_cifar", num_classes=10, depths=[1, 1], widths=[24, 48],
                                  orders=[2, 3], drop_path_rate=0.1, input_shape=(16, 16, 3))
    for layer in model.layers:  # layer scales 1, so that the gnConv branches show in the logits
        if "_gamma" in layer.name:
            layer.gamma.assign(np.ones(layer.gamma.shape))
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    model.save(tmp_path / "hornet.keras")
    loaded = keras.saving.load_model(tmp_path / "hornet.keras")
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)),
                               atol=1e-6)
    assert loaded.get_layer("stage1_block1_gnconv_split_dw").get_config()["sizes"] == [12, 24]


@pytest.mark.backend_agnostic
def test_widths_must_split_into_the_gnconv_orders():
    with pytest.raises(ValueError, match=r"gnConv of order 5 needs a width divisible by 16; got 200"):
        mk_keras.create_model("hornet_micro_cifar", num_classes=10, widths=[24, 48, 96, 200])
    with pytest.raises(ValueError, match=r"must have the same length"):
        mk_keras.create_model("hornet_micro_cifar", num_classes=10, depths=[1, 1, 1])
