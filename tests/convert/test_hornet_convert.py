"""Official-layout HorNet state dicts convert exactly into mk_keras HorNet (random reference weights, .pth)."""

import keras
import numpy as np
import pytest
import torch
from hornet_reference import HorNetReference

import mk_keras
from mk_keras.convert import core, hornet

MICRO = {"depths": [1, 1, 2, 1], "widths": [24, 48, 96, 192]}  # hornet_micro_cifar
# Two stages (gnConv orders 2 and 3): the checks that also run under JAX, where a build compiles one initialiser per
# weight shape (hornet_micro_cifar: 43 shapes, about a minute on a loaded 2-core CPU)
TWO_STAGES = {"depths": [1, 1], "widths": [24, 48], "orders": [2, 3]}
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _reference(num_classes=10, **config):
    """A random reference: torch default init, norms, biases and layer scales moved away from their init."""
    torch.manual_seed(0)
    ref = HorNetReference(**config, num_classes=num_classes, stem_stride=2).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith(("gamma1", "gamma2")):
                p.uniform_(0.5, 1.5)
            elif p.ndim == 1 and "norm" in name or "downsample_layers.0.1" in name:
                p.add_(0.2 * torch.randn_like(p))
            elif p.ndim == 1:
                p.normal_(0.0, 0.1)
    return ref


def _model(**config):
    return mk_keras.create_model("hornet_micro_cifar", num_classes=10, **config)


def _save(ref, tmp_path):
    path = tmp_path / "hornet.pth"
    torch.save(ref.state_dict(), path)
    return path


def _torch_logits(ref, pixels):
    x = torch.from_numpy(((pixels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        return ref(x).numpy()


# TensorFlow only (see TWO_STAGES); the JAX run checks the same conversion on two stages below
def test_converted_hornet_gives_the_reference_logits(tmp_path):
    ref = _reference(**MICRO)
    state = core.read_checkpoint(_save(ref, tmp_path))
    assert hornet.checkpoint_num_classes(state) == 10
    model = _model()
    core.apply_mapping(hornet.torch_assigns(model, state), state, "hornet.pth -> hornet_micro_cifar")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    want = _torch_logits(ref, pixels)
    got = keras.ops.convert_to_numpy(model(pixels))
    assert want.std() > 0.2  # logits of order 1: 1e-4 is a strict bound
    print(f"max |keras - torch| = {np.abs(got - want).max():.3g}")
    assert np.abs(got - want).max() < 1e-4
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("stage3_block2_gnconv_dwconv").kernel)[:, :, 5, 0],
        ref.stages[2][1].gnconv.dwconv.weight[5, 0].detach().numpy(),
    )  # the depthwise filters are the checkpoint's own, the scale 1/3 stays outside them


@pytest.mark.backend_agnostic
def test_two_stage_conversion_is_exact_and_needs_the_gnconv_scale(tmp_path):
    ref = _reference(**TWO_STAGES)
    state = core.read_checkpoint(_save(ref, tmp_path))
    pixels = np.random.default_rng(1).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    diffs = []
    for scale in (1.0 / 3.0, 1.0):
        model = _model(**TWO_STAGES, scale=scale, input_shape=(16, 16, 3))
        core.apply_mapping(hornet.torch_assigns(model, state), state, "hornet.pth")
        diffs.append(np.abs(keras.ops.convert_to_numpy(model(pixels)) - _torch_logits(ref, pixels)).max())
    print(f"max |keras - torch| = {diffs[0]:.3g} with s = 1/3, {diffs[1]:.3g} with s = 1")
    assert diffs[0] < 1e-4 < 1e-2 < diffs[1]


@pytest.mark.backend_agnostic
def test_mismatching_checkpoint_is_one_line_naming_the_keys():
    state = {k: v.numpy() for k, v in _reference(**TWO_STAGES).state_dict().items()}
    state["stages.1.0.gnconv.pws.7.weight"] = state.pop("stages.1.0.gnconv.pws.1.weight")
    model = _model(**TWO_STAGES)
    before = keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel)
    with pytest.raises(ValueError) as err:
        core.apply_mapping(hornet.torch_assigns(model, state), state, "ckpt.pth -> hornet_micro_cifar")
    message = str(err.value)
    assert "\n" not in message
    assert "missing keys stages.1.0.gnconv.pws.1.weight" in message
    assert "unexpected keys stages.1.0.gnconv.pws.7.weight" in message
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel), before)


@pytest.mark.backend_agnostic
def test_deeper_checkpoint_and_wrong_width_are_reported():
    state = {k: v.numpy() for k, v in _reference(**{**TWO_STAGES, "depths": [1, 2]}).state_dict().items()}
    model = _model(**TWO_STAGES)
    with pytest.raises(ValueError, match=r"unexpected keys stages\.1\.1\.gamma1"):
        core.apply_mapping(hornet.torch_assigns(model, state), state, "deeper")
    wide = {k: v.numpy() for k, v in _reference(**{**TWO_STAGES, "widths": [32, 64]}).state_dict().items()}
    with pytest.raises(ValueError, match=r"downsample_layers\.0\.0\.weight has shape \(32, 3, 2, 2\)"):
        core.apply_mapping(hornet.torch_assigns(model, wide), wide, "wider")


@pytest.mark.backend_agnostic
def test_non_hornet_model_and_gf_checkpoint_are_refused():
    state = {"head.weight": np.zeros((10, 48), np.float32)}
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.DepthwiseConv2D(3, name="stage1_block1_dwconv")],
                             name="other")
    with pytest.raises(ValueError, match=r"'other' is not an mk_keras HorNet .*stage1_block1_dwconv"):
        hornet.torch_assigns(other, state)
    gf = {**state, "stages.2.0.gnconv.dwconv.complex_weight": np.zeros((48, 14, 8, 2), np.float32)}
    with pytest.raises(ValueError, match=r"GF \(global filter\) checkpoints are not supported"):
        hornet.torch_assigns(_model(**TWO_STAGES), gf)
    with pytest.raises(ValueError, match=r"no 'head\.weight'"):
        hornet.checkpoint_num_classes({"norm.weight": np.ones(3)})
