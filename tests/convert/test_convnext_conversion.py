"""ConvNeXt V1/V2 conversion is exact: timm / official-naming PyTorch state dicts (.pth and .safetensors) and
keras.applications ConvNeXtTiny weights give the same logits (1e-4, float32) in the mk_keras builders.

The small-config tests run under both backends; the atto and Tiny models (same converter code, larger builds)
under TensorFlow only, to keep the JAX run short (its first build of each model compiles every op).
"""

import re

import numpy as np
import pytest

import safetensors.torch as safetensors_torch  # the test extra installs torch, timm and safetensors
import timm
import torch

import keras  # noqa: E402

from mk_keras.convert import convnext, core  # noqa: E402
from mk_keras.models import create_model  # noqa: E402
from mk_keras.models.convnext import ConvNeXt  # noqa: E402

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE = 64
TOL = 1e-4


def _perturb_(torch_model, seed=0):
    """Move norm, layer-scale and GRN parameters (init 1, 0, 1e-6, 0) and all biases well away from their init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in torch_model.named_parameters():
            if p.ndim == 1 or "grn" in name:
                noise = torch.randn(p.shape, generator=gen)
                p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.3 * noise)


def _images(n=2, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _torch_logits(torch_model, images):
    """The PyTorch model on its convention: NCHW (x/255 - mean)/std."""
    x = (images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        return torch_model.eval()(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()


def _save(state, path):
    if str(path).endswith(".safetensors"):
        safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def _to_official(state):
    """timm key names -> facebookresearch ConvNeXt / ConvNeXt-V2 names (GRN as (1, 1, 1, C))."""
    out = {}
    for key, value in state.items():
        key = key.replace("stem.", "downsample_layers.0.", 1) if key.startswith("stem.") else key
        key = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.", r"stages.\1.", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        if "mlp.grn." in key:
            key = key.replace("mlp.grn.weight", "grn.gamma").replace("mlp.grn.bias", "grn.beta")
            value = value.reshape(1, 1, 1, -1)
        key = {"head.norm.weight": "norm.weight", "head.norm.bias": "norm.bias", "head.fc.weight": "head.weight",
               "head.fc.bias": "head.bias"}.get(key, key)
        out[key] = value
    return out


SMALL = {"depths": (1, 1, 2, 1), "dims": (16, 24, 32, 40)}  # any depth/width: a 4-stage net that builds fast


def _small_timm(version, num_classes=7):
    """timm ConvNeXt with Linear MLPs (the official block layout), V1 with layer scale or V2 with GRN."""
    return timm.models.convnext.ConvNeXt(
        **SMALL, num_classes=num_classes, use_grn=version == 2, ls_init_value=1e-6 if version == 1 else None
    )


def _small_keras(version, num_classes=7):
    return ConvNeXt(list(SMALL["depths"]), list(SMALL["dims"]), num_classes=num_classes,
                    input_shape=(SIZE, SIZE, 3), version=version)


def _convert_and_compare(torch_model, model, path, transform=None):
    """Save the state dict as .pth and .safetensors (same arrays read back), convert from `path`, compare logits."""
    state = torch_model.state_dict()
    state = transform(state) if transform else state
    reads = {suffix: core.read_checkpoint(_save(state, path.with_suffix(suffix)))
             for suffix in (".pth", ".safetensors")}
    assert reads[".pth"].keys() == reads[".safetensors"].keys()
    assert all(np.array_equal(reads[".pth"][k], reads[".safetensors"][k]) for k in reads[".pth"])
    read = reads[path.suffix]
    core.apply_mapping(convnext.torch_assigns(model, read), read, f"{path.name!r} -> {model.name}")
    images = _images()
    want = _torch_logits(torch_model, images)
    got = keras.ops.convert_to_numpy(model(images, training=False))
    assert want.std() > 100 * TOL  # logits far from constant: a wrong mapping cannot pass by accident
    diff = float(np.abs(got - want).max())
    assert diff < TOL, f"max |logit diff| {diff}"
    return read


@pytest.mark.parametrize("name,suffix", [("convnext_atto", ".pth"), ("convnextv2_atto", ".safetensors")])
def test_timm_checkpoint_gives_same_logits(tmp_path, name, suffix):
    """timm's registered atto models use 1x1-conv MLPs (conv_mlp=True) and channels-first LayerNorms."""
    torch.manual_seed(0)
    torch_model = timm.create_model(name, pretrained=False, num_classes=10)
    _perturb_(torch_model)
    model = create_model(name, num_classes=10, input_shape=(SIZE, SIZE, 3))
    read = _convert_and_compare(torch_model, model, tmp_path / f"ckpt{suffix}")
    assert convnext.checkpoint_num_classes(read) == 10


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("version", [1, 2])
def test_official_naming_gives_same_logits(tmp_path, version):
    """Linear-MLP blocks at a small width/depth, keys renamed to the facebookresearch layout."""
    torch.manual_seed(version)
    torch_model = _small_timm(version)
    _perturb_(torch_model, seed=version)
    read = _convert_and_compare(torch_model, _small_keras(version), tmp_path / "official.pth", transform=_to_official)
    assert "downsample_layers.0.0.weight" in read and "head.weight" in read and "head.fc.weight" not in read
    assert convnext.checkpoint_num_classes(read) == 7


@pytest.mark.backend_agnostic
def test_mismatched_checkpoint_names_keys_and_changes_nothing(tmp_path):
    state = dict(_small_timm(1).state_dict())
    del state["stages.2.blocks.1.gamma"]
    state["stages.9.blocks.0.extra.weight"] = torch.zeros(3)
    read = core.read_checkpoint(_save(state, tmp_path / "bad.safetensors"))
    model = _small_keras(1)
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    with pytest.raises(ValueError) as err:
        core.apply_mapping(convnext.torch_assigns(model, read), read, "'bad.safetensors' -> convnext")
    message = str(err.value)
    assert "\n" not in message
    assert "missing keys stages.2.blocks.1.gamma;" in message
    assert "unexpected keys stages.9.blocks.0.extra.weight" in message
    assert all(np.array_equal(b, keras.ops.convert_to_numpy(v)) for b, v in zip(before, model.weights))


@pytest.mark.backend_agnostic
def test_wrong_version_width_or_family_is_refused():
    v2 = {k: v.numpy() for k, v in _small_timm(2).state_dict().items()}
    with pytest.raises(ValueError, match=r"missing keys stages\.0\.blocks\.0\.gamma.*unexpected keys "
                                         r"stages\.0\.blocks\.0\.mlp\.grn\.bias"):
        core.apply_mapping(convnext.torch_assigns(_small_keras(1), v2), v2, "v2 -> v1")
    v1 = {k: v.numpy() for k, v in _small_timm(1, num_classes=5).state_dict().items()}
    with pytest.raises(ValueError, match=r"head\.fc\.weight has shape \(5, 40\) -> \(40, 5\), "
                                         r"head_dense/kernel needs \(40, 7\)"):
        core.apply_mapping(convnext.torch_assigns(_small_keras(1), v1), v1, "5 classes -> 7")
    with pytest.raises(ValueError, match="not a ConvNeXt state dict.*conv1.weight"):
        convnext.torch_assigns(_small_keras(1), {"conv1.weight": np.zeros((1,))})
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs), name="other")
    with pytest.raises(ValueError, match="model 'other': layer 'fc' is not a ConvNeXt layer"):
        convnext.torch_assigns(other, v1)


def _perturb_keras_(app):
    """Norms, biases and layer scales (init 1, 0, 1e-6) moved well off their init."""
    rng = np.random.default_rng(0)
    for v in app.weights:
        if len(v.shape) == 1:
            v.assign(keras.ops.convert_to_numpy(v) + rng.normal(0.0, 0.3, v.shape).astype(np.float32))
    return app


def _keras_app_round_trip(build, tmp_path):
    """A keras.applications ConvNeXt with perturbed weights, saved with save_weights and loaded into a new one."""
    app = _perturb_keras_(build())
    path = tmp_path / "app.weights.h5"
    app.save_weights(path)
    loaded = build()
    loaded.load_weights(path)
    return loaded


def _compare_keras(app, model):
    core.apply_mapping(convnext.keras_assigns(model, app), core.keras_state(app), f"{app.name} -> {model.name}")
    images = _images()
    want = keras.ops.convert_to_numpy(app(images, training=False))
    got = keras.ops.convert_to_numpy(model(images, training=False))
    assert want.std() > 100 * TOL
    diff = float(np.abs(got - want).max())
    assert diff < TOL, f"max |logit diff| {diff}"


# keras.applications outputs softmax probabilities by default; compared here as logits (activation None)
_APP = {"weights": None, "input_shape": (SIZE, SIZE, 3), "classes": 10, "classifier_activation": None}


@pytest.mark.backend_agnostic
def test_keras_applications_convnext_small_config_gives_same_logits(tmp_path):
    """The application's generic builder at a small depth/width; layer-scale variables renamed by the reload.

    `ConvNeXtTiny` and its siblings call this builder (not exported: read from keras.src, keras pinned <3.16).
    """
    from keras.src.applications.convnext import ConvNeXt as AppConvNeXt

    app = _keras_app_round_trip(lambda: AppConvNeXt(
        list(SMALL["depths"]), list(SMALL["dims"]), name="convnext_mini", **_APP), tmp_path)
    _compare_keras(app, ConvNeXt(list(SMALL["depths"]), list(SMALL["dims"]), num_classes=10,
                                 input_shape=(SIZE, SIZE, 3)))


def test_keras_applications_convnext_tiny_gives_same_logits():
    assert set(convnext.KERAS_APPLICATIONS) == {"ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase"}
    app = _perturb_keras_(keras.applications.ConvNeXtTiny(**_APP))
    _compare_keras(app, create_model(convnext.KERAS_APPLICATIONS["ConvNeXtTiny"], num_classes=10,
                                     input_shape=(SIZE, SIZE, 3)))
