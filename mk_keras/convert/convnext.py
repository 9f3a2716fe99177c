"""ConvNeXt V1 / V2 weights -> `mk_keras.models.convnext` (`convnext_*`, `convnextv2_*`, any depth and width).

Sources:
- PyTorch state dicts in the official facebookresearch naming (`downsample_layers.0.0` stem conv,
  `stages.S.B.dwconv`, `.pwconv1`, `.gamma`, V2 `.grn.gamma/.grn.beta`, `norm`, `head`) or the timm naming
  (`stem.0`, `stages.S.downsample.1`, `stages.S.blocks.B.conv_dw`, `.mlp.fc1`, V2 `.mlp.grn.weight/.bias`,
  `head.norm`, `head.fc`); `torch_assigns` tells them apart by their keys.
- keras.applications `ConvNeXtTiny` / `Small` / `Base` (`KERAS_APPLICATIONS`), through `keras_assigns`.

What differs and how the conversion handles it (the converted model computes the same function):
- Input normalisation: mk_keras models take raw pixels in [0, 255] and apply (x/255 - mean)/std with the
  ImageNet mean/std as their first layers; the PyTorch models take that normalised tensor, so a PyTorch model
  fed normalised images equals the converted model fed raw pixels. keras.applications ConvNeXt with
  `include_preprocessing=True` (the default, the setting of its ImageNet weights) takes raw pixels and
  normalises with the same mean/std (scaled by 255), holding no weights for it; nothing to convert.
- LayerNorm: eps 1e-6 in all three sources and in mk_keras; the PyTorch channels-first LayerNorms (stem,
  downsampling; timm `conv_mlp` blocks) normalise over channels like the channels-last Keras ones.
- Layout: PyTorch convs are OIHW -> Keras HWIO; depthwise (C, 1, k, k) -> (k, k, C, 1); Linear (out, in) and
  timm's 1x1-conv MLP (`conv_mlp=True`, e.g. `convnext_atto`: (out, in, 1, 1)) -> Dense (in, out).
  keras.applications builds the depthwise conv as a grouped `Conv2D` (k, k, 1, C) -> (k, k, C, 1).
- GRN (V2): official `gamma`/`beta` of shape (1, 1, 1, C), timm `weight`/`bias` of shape (C,), the same
  function x + gamma * (x * N(x)) + beta with eps 1e-6 added to the channel mean of the spatial L2 norms.
- Output: keras.applications ends in softmax by default (`classifier_activation="softmax"`); mk_keras models
  and the PyTorch models output logits, so the converted model gives the application's pre-softmax values.
- GELU: exact (erf) in all sources and in mk_keras.
- Layer scale (V1): `gamma` (C,) everywhere (keras.applications names its variable `variable_N`, numbered
  per session, so it is found by its layer's name). V2 has no layer scale.
"""

import re

import numpy as np

from mk_keras.convert import core

KERAS_APPLICATIONS = {"ConvNeXtTiny": "convnext_tiny", "ConvNeXtSmall": "convnext_small",
                      "ConvNeXtBase": "convnext_base"}

_LAYER = re.compile(r"^(stem_conv|stem_norm|head_norm|head_dense|stage(\d+)_downsample_(norm|conv)"
                    r"|stage(\d+)_block(\d+)_(dwconv|norm|pwconv1|pwconv2|grn|layer_scale))$")
# Keras variable name -> PyTorch parameter name, per mk_keras layer kind
_TORCH_PARAMS = {
    "conv": {"kernel": "weight", "bias": "bias"},
    "norm": {"gamma": "weight", "beta": "bias"},
    "layer_scale": {"gamma": ""},
}
_OFFICIAL_BLOCK = {"dwconv": "dwconv", "norm": "norm", "pwconv1": "pwconv1", "pwconv2": "pwconv2",
                   "grn": "grn", "layer_scale": "gamma"}
_TIMM_BLOCK = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2",
               "grn": "mlp.grn", "layer_scale": "gamma"}


def _naming(state):
    if any(k.startswith("downsample_layers.") for k in state):
        return "official"
    if any(k.startswith("stem.0.") for k in state):
        return "timm"
    raise ValueError("not a ConvNeXt state dict: no 'downsample_layers.*' (official) or 'stem.0.*' (timm) keys; "
                     f"first keys: {', '.join(sorted(state)[:4])}")


def _layers(model):
    """(layer, parsed name) for every mk_keras layer holding weights; unknown ones raise ValueError."""
    out = []
    for layer in model.layers:
        if not layer.weights:
            continue
        match = _LAYER.match(layer.name)
        if match is None:
            raise ValueError(f"model {model.name!r}: layer {layer.name!r} is not a ConvNeXt layer the converter "
                             "knows (is the model a mk_keras convnext_*/convnextv2_* builder?)")
        out.append((layer, match))
    return out


def _variables(layer, params):
    """(variable, source parameter name) for every variable of `layer`; unknown variables raise ValueError."""
    pairs = []
    for v in layer.weights:
        if v.name not in params:
            raise ValueError(f"layer {layer.name!r} has variable {v.name!r}; the converter knows "
                             f"{', '.join(params)} (convert a freshly built model)")
        pairs.append((v, params[v.name]))
    return pairs


def _dense_layout(a):
    """Linear (out, in) or 1x1 conv (out, in, 1, 1) -> Dense (in, out)."""
    return core.LAYOUTS["pointwise" if a.ndim == 4 else "dense"](a)


def _vector(a):
    """GRN (1, 1, 1, C) (official) or (C,) -> (C,)."""
    return a.reshape(-1)


def _torch_target(match, naming):
    """(key prefix, layer kind, kernel layout) of a parsed mk_keras layer name for this naming."""
    name = match.group(0)
    official = naming == "official"
    if name == "stem_conv":
        return ("downsample_layers.0.0" if official else "stem.0"), "conv", "conv"
    if name == "stem_norm":
        return ("downsample_layers.0.1" if official else "stem.1"), "norm", None
    if name == "head_norm":
        return ("norm" if official else "head.norm"), "norm", None
    if name == "head_dense":
        return ("head" if official else "head.fc"), "conv", _dense_layout
    if match.group(2):  # downsampling: LayerNorm, then the 2x2/2 conv
        s = int(match.group(2)) - 1
        index = 0 if match.group(3) == "norm" else 1
        prefix = f"downsample_layers.{s}.{index}" if official else f"stages.{s}.downsample.{index}"
        return prefix, ("norm" if index == 0 else "conv"), "conv"
    s, b, part = int(match.group(4)) - 1, int(match.group(5)) - 1, match.group(6)
    block = f"stages.{s}.{b}." if official else f"stages.{s}.blocks.{b}."
    prefix = block + (_OFFICIAL_BLOCK if official else _TIMM_BLOCK)[part]
    kind = {"norm": "norm", "layer_scale": "layer_scale", "grn": "grn"}.get(part, "conv")
    layout = "depthwise" if part == "dwconv" else _dense_layout
    return prefix, kind, layout


def torch_assigns(model, state):
    """The `core.Assign` list copying an official or timm ConvNeXt V1/V2 state dict into mk_keras `model`."""
    naming = _naming(state)
    grn_params = ({"gamma": "gamma", "beta": "beta"} if naming == "official"
                  else {"gamma": "weight", "beta": "bias"})
    assigns = []
    for layer, match in _layers(model):
        prefix, kind, kernel_layout = _torch_target(match, naming)
        params = grn_params if kind == "grn" else _TORCH_PARAMS[kind]
        for variable, param in _variables(layer, params):
            key = f"{prefix}.{param}" if param else prefix
            if variable.name == "kernel":
                layout = kernel_layout
            elif kind in ("grn", "layer_scale"):
                layout = _vector
            else:
                layout = "same"
            assigns.append(core.Assign(variable, key, layout))
    return assigns


def checkpoint_num_classes(state):
    """Number of classes of a ConvNeXt state dict (rows of its classifier), official or timm naming."""
    key = "head.weight" if _naming(state) == "official" else "head.fc.weight"
    if key not in state:
        raise ValueError(f"ConvNeXt state dict has no classifier {key!r} (a headless or pre-training checkpoint?)")
    return int(state[key].shape[0])


def _grouped_to_depthwise(a):
    """keras.applications grouped-conv depthwise kernel (k, k, 1, C) -> DepthwiseConv2D (k, k, C, 1)."""
    return np.transpose(a, (0, 1, 3, 2))


def keras_assigns(model, app_model):
    """The `core.Assign` list copying a keras.applications ConvNeXt (`core.keras_state(app_model)`) into `model`.

    Keys are the application's variable paths; its layer-scale variables (named `variable_N` by a session
    counter) are looked up by layer name in `core.keras_state(app_model)`.
    """
    p = app_model.name
    state_keys = [v.path for v in app_model.weights]
    assigns = []
    for layer, match in _layers(model):
        name = match.group(0)
        layout = "same"
        if name in ("stem_conv", "stem_norm"):
            target = f"{p}_stem/{p}_stem_{'conv' if name == 'stem_conv' else 'layernorm'}"
        elif name in ("head_norm", "head_dense"):
            target = f"{p}_head_{'layernorm' if name == 'head_norm' else 'dense'}"
        elif match.group(2):
            i = int(match.group(2)) - 2
            part = "layernorm" if match.group(3) == "norm" else "conv"
            target = f"{p}_downsampling_block_{i}/{p}_downsampling_{part}_{i}"
        else:
            s, b, part = int(match.group(4)) - 1, int(match.group(5)) - 1, match.group(6)
            part = {"dwconv": "depthwise_conv", "norm": "layernorm", "pwconv1": "pointwise_conv_1",
                    "pwconv2": "pointwise_conv_2"}.get(part, part)
            target = f"{p}_stage_{s}_block_{b}_{part}"
            if part == "depthwise_conv":
                layout = _grouped_to_depthwise
        for variable in layer.weights:
            key = f"{target}/{variable.name}"
            if name.endswith("_layer_scale"):
                found = [k for k in state_keys if k.startswith(f"{target}/")]
                key = found[0] if len(found) == 1 else key
            assigns.append(core.Assign(variable, key, layout if variable.name == "kernel" else "same"))
    return assigns
