"""ConvNeXt V1 and V2 as flat functional graphs with real `DepthwiseConv2D` layers.

Layer names are deterministic: `stem_conv`, `stage{s}_downsample_conv`, `stage{s}_block{b}_dwconv`,
`..._norm`, `..._pwconv1`, `..._grn` (V2), `..._pwconv2`, `..._layer_scale` (V1), `head_dense`; stages
and blocks count from 1. Pointwise convolutions are `Dense` layers on NHWC tensors (as in
keras.applications), which `filter_layers(model, "pointwise")` counts.
`*_cifar` variants use a 2x2/2 stem for 28-64 px inputs (ImageNet variants: 4x4/4 at 224 px).
Initialisation as the reference `_init_weights` (facebookresearch/ConvNeXt models/convnext.py, ConvNeXt-V2
models/convnextv2.py, timm convnext.py): every conv and dense kernel (depthwise included) normal with std 0.02,
biases 0, LayerNorm 1/0, layer scale 1e-6, GRN 0 (docs/models.md).
"""

import keras

from mk_keras.models.initializers import trunc_normal_02
from mk_keras.models.layers import (
    GlobalResponseNormalization,
    LayerNorm,
    LayerScale,
    StochasticDepth,
    gelu,
    preprocessing,
)
from mk_keras.models.registry import register_model

MODEL_CONFIGS = {
    "atto": {"depths": [2, 2, 6, 2], "widths": [40, 80, 160, 320]},
    "femto": {"depths": [2, 2, 6, 2], "widths": [48, 96, 192, 384]},
    "pico": {"depths": [2, 2, 6, 2], "widths": [64, 128, 256, 512]},
    "nano": {"depths": [2, 2, 8, 2], "widths": [80, 160, 320, 640]},
    "tiny": {"depths": [3, 3, 9, 3], "widths": [96, 192, 384, 768]},
    "small": {"depths": [3, 3, 27, 3], "widths": [96, 192, 384, 768]},
    "base": {"depths": [3, 3, 27, 3], "widths": [128, 256, 512, 1024]},
}
# CPU-scale configs (only as *_cifar variants): "micro" is the quickstart's fast DS-CNN.
CPU_CONFIGS = {"micro": {"depths": [1, 1, 2, 1], "widths": [24, 48, 96, 192]}}


def _conv(filters, size, name):
    """A size x size / size patchify conv (stem, downsampling)."""
    return keras.layers.Conv2D(filters, size, strides=size, kernel_initializer=trunc_normal_02(), name=name)


def _dense(units, name, **kwargs):
    return keras.layers.Dense(units, kernel_initializer=trunc_normal_02(), name=name, **kwargs)


def convnext_block(x, dim, name, version=1, drop_path_rate=0.0, layer_scale_init=1e-6, kernel_size=7):
    """One ConvNeXt block: dwconv -> LN -> pwconv1 (4x) -> GELU [-> GRN] -> pwconv2 [-> scale] + x."""
    shortcut = x
    x = keras.layers.DepthwiseConv2D(
        kernel_size, padding="same", depthwise_initializer=trunc_normal_02(), name=f"{name}_dwconv"
    )(x)
    x = LayerNorm(epsilon=1e-6, name=f"{name}_norm")(x)
    x = _dense(4 * dim, f"{name}_pwconv1")(x)
    x = keras.layers.Activation(gelu, name=f"{name}_gelu")(x)
    if version == 2:
        x = GlobalResponseNormalization(name=f"{name}_grn")(x)
    x = _dense(dim, f"{name}_pwconv2")(x)
    if version == 1 and layer_scale_init:
        x = LayerScale(layer_scale_init, name=f"{name}_layer_scale")(x)
    if drop_path_rate:
        x = StochasticDepth(drop_path_rate, name=f"{name}_drop_path")(x)
    return keras.layers.Add(name=f"{name}_add")([shortcut, x])


def ConvNeXt(
    depths,
    widths,
    num_classes=1000,
    input_shape=(224, 224, 3),
    version=1,
    stem_stride=4,
    drop_path_rate=0.0,
    layer_scale_init=1e-6,
    kernel_size=7,
    include_top=True,
    name="convnext",
):
    """Generic ConvNeXt builder (V1 with layer scale, V2 with GRN); drop-path rate grows linearly per block."""
    if len(depths) != len(widths):
        raise ValueError(f"depths {depths} and widths {widths} must have the same length")
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocessing(inputs, input_shape[-1])
    x = _conv(widths[0], stem_stride, "stem_conv")(x)
    x = LayerNorm(epsilon=1e-6, name="stem_norm")(x)
    total, done = sum(depths), 0
    for s, (depth, width) in enumerate(zip(depths, widths), start=1):
        if s > 1:
            x = LayerNorm(epsilon=1e-6, name=f"stage{s}_downsample_norm")(x)
            x = _conv(width, 2, f"stage{s}_downsample_conv")(x)
        for b in range(1, depth + 1):
            rate = drop_path_rate * done / max(total - 1, 1)
            x = convnext_block(
                x, width, f"stage{s}_block{b}", version, rate, layer_scale_init, kernel_size
            )
            done += 1
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = LayerNorm(epsilon=1e-6, name="head_norm")(x)
    if include_top:
        x = _dense(num_classes, "head_dense", dtype="float32")(x)
    return keras.Model(inputs, x, name=name)


def _variant(size, version, cifar):
    config = {**MODEL_CONFIGS, **CPU_CONFIGS}[size]

    def build(num_classes=1000, input_shape=None, name=None, **overrides):
        kwargs = {
            **config,
            "version": version,
            "stem_stride": 2 if cifar else 4,
            "input_shape": tuple(input_shape or ((32, 32, 3) if cifar else (224, 224, 3))),
            **overrides,
        }
        return ConvNeXt(num_classes=num_classes, name=name, **kwargs)

    return build


for _version, _prefix in ((1, "convnext"), (2, "convnextv2")):
    for _size in MODEL_CONFIGS:
        register_model(f"{_prefix}_{_size}", _prefix, f"ConvNeXt V{_version}-{_size}, 224 px")(
            _variant(_size, _version, cifar=False)
        )
    for _size in ("micro", "atto", "femto", "pico", "nano"):
        register_model(f"{_prefix}_{_size}_cifar", _prefix, f"ConvNeXt V{_version}-{_size}, 2x2 stem, 32 px")(
            _variant(_size, _version, cifar=True)
        )
