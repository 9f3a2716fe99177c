"""Official HorNet PyTorch checkpoints (github raoyongming/HorNet, `hornet.py`, 7x7 gnConv) into `hornet_*`.

State-dict names -> layers of `mk_keras.models.hornet`:
`downsample_layers.0.{0,1}` -> `stem_conv`, `stem_norm`; `downsample_layers.{i}.{0,1}` -> `stage{i+1}_downsample_norm`,
`..._conv`; `stages.{i}.{j}.` + `norm1`, `gnconv.proj_in`, `gnconv.dwconv`, `gnconv.pws.{k}`, `gnconv.proj_out`,
`gamma1`, `norm2`, `pwconv1`, `pwconv2`, `gamma2` -> `stage{i+1}_block{j+1}_` + `norm1`, `gnconv_proj_in`,
`gnconv_dwconv`, `gnconv_pw{k+1}`, `gnconv_proj_out`, `gamma1`, `norm2`, `pwconv1`, `pwconv2`, `gamma2`;
`norm`, `head` -> `head_norm`, `head_dense`. The 1x1 convs (proj_in, pws, proj_out) become Dense kernels, the
depthwise (C, 1, 7, 7) weight a (7, 7, C, 1) kernel; LayerNorm weight/bias are gamma/beta.
The official checkpoints hold {"model": state_dict}; `core.read_checkpoint` unwraps it. The GF variants
(global filter layers) have other keys and are reported as not matching.
"""

import re

import keras

from mk_keras.convert.core import Assign
from mk_keras.models.layers import LayerScale

_BLOCK = re.compile(r"stage(\d+)_block(\d+)_(.+)")
_DOWNSAMPLE = re.compile(r"stage(\d+)_downsample_(norm|conv)")
_PW = re.compile(r"gnconv_pw(\d+)")
_BLOCK_PARTS = {
    "norm1": "norm1", "gnconv_proj_in": "gnconv.proj_in", "gnconv_dwconv": "gnconv.dwconv",
    "gnconv_proj_out": "gnconv.proj_out", "gamma1": "gamma1", "norm2": "norm2", "pwconv1": "pwconv1",
    "pwconv2": "pwconv2", "gamma2": "gamma2",
}
_FIXED = {"stem_conv": "downsample_layers.0.0", "stem_norm": "downsample_layers.0.1", "head_norm": "norm",
          "head_dense": "head"}


def checkpoint_num_classes(state):
    """The number of classes of a HorNet state dict (rows of `head.weight`)."""
    if "head.weight" not in state:
        raise ValueError("not a HorNet classifier state dict: it has no 'head.weight'")
    return int(state["head.weight"].shape[0])


def _prefix(name):
    """The state-dict prefix of the mk_keras HorNet layer `name`, or None for layers without one."""
    if name in _FIXED:
        return _FIXED[name]
    m = _DOWNSAMPLE.fullmatch(name)
    if m:
        return f"downsample_layers.{int(m[1]) - 1}.{0 if m[2] == 'norm' else 1}"
    m = _BLOCK.fullmatch(name)
    if not m:
        return None
    stem = f"stages.{int(m[1]) - 1}.{int(m[2]) - 1}."
    part = m[3]
    pw = _PW.fullmatch(part)
    if pw:
        return stem + f"gnconv.pws.{int(pw[1]) - 1}"
    return stem + _BLOCK_PARTS[part] if part in _BLOCK_PARTS else None


def _layer_assigns(layer, prefix):
    if isinstance(layer, keras.layers.LayerNormalization):
        return [Assign(layer.gamma, f"{prefix}.weight"), Assign(layer.beta, f"{prefix}.bias")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        layout = "depthwise"
    elif isinstance(layer, keras.layers.Conv2D):
        layout = "conv"
    elif isinstance(layer, keras.layers.Dense):
        layout = "dense" if prefix.endswith(("pwconv1", "pwconv2")) or prefix == "head" else "pointwise"
    elif isinstance(layer, LayerScale):
        return [Assign(layer.gamma, prefix)]
    else:
        return None
    return [Assign(layer.kernel, f"{prefix}.weight", layout), Assign(layer.bias, f"{prefix}.bias")]


def torch_assigns(model, state):
    """`core.Assign` entries loading an official HorNet state dict into the mk_keras HorNet `model`.

    Keys and shapes are checked by `core.apply_mapping`. Raises ValueError when `model` has weighted layers
    without a HorNet counterpart (not an mk_keras HorNet) or `state` is a GF (global filter) checkpoint.
    """
    gf = sorted(k for k in state if k.endswith("complex_weight"))
    if gf:
        raise ValueError(f"HorNet GF (global filter) checkpoints are not supported, only 7x7 ones; "
                         f"found {gf[0]} and {len(gf) - 1} more global filters")
    assigns, unknown = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _prefix(layer.name)
        entries = _layer_assigns(layer, prefix) if prefix else None
        if entries is None:
            unknown.append(layer.name)
        else:
            assigns.extend(entries)
    if unknown or not any(a.key.startswith("stages.") for a in assigns):
        shown = ", ".join(unknown[:6]) + (f" (+{len(unknown) - 6} more)" if len(unknown) > 6 else "")
        raise ValueError(f"model {model.name!r} is not an mk_keras HorNet (layers without a HorNet checkpoint "
                         f"key: {shown or 'no HorNet blocks'})")
    return assigns
