"""ResNet-18/34 (basic blocks) and 50/101/152 (bottlenecks, stride on the 3x3) with BatchNorm.

Flat functional graphs with deterministic names: `stem_conv`, `stage{s}_block{b}_conv{1,2,3}`,
`..._bn{1,2,3}`, `..._shortcut_conv`, `head_dense`. `*_cifar` variants use a 3x3/1 stem and no
max-pool for 28-64 px inputs (Yosinski-style regular-CNN contrast at CPU scale).
Initialisation as torchvision (models/resnet.py): convs `kaiming_normal_(mode="fan_out", nonlinearity="relu")`,
BatchNorm gamma 1 / beta 0, the head PyTorch's default `nn.Linear` init (docs/models.md).
Options for exact weight conversion (mk_keras.convert.resnet; defaults as above): `stride_in_1x1=True` strides the
bottleneck's first 1x1 conv (ResNet v1, keras.applications ResNet50), `padding="symmetric"`, `preprocessing`
(models/conventions.py), `bn_epsilon` (1e-5 as torchvision; keras.applications ResNet50 uses 1.001e-5).
"""

import functools

import keras

from mk_keras.models.initializers import kaiming_normal_fan_out, torch_linear_default
from mk_keras.models.conventions import check_padding, input_preprocessing, pad_strided
from mk_keras.models.registry import register_model

MODEL_CONFIGS = {
    "resnet18": {"block": "basic", "depths": [2, 2, 2, 2]},
    "resnet34": {"block": "basic", "depths": [3, 4, 6, 3]},
    "resnet50": {"block": "bottleneck", "depths": [3, 4, 6, 3]},
    "resnet101": {"block": "bottleneck", "depths": [3, 4, 23, 3]},
    "resnet152": {"block": "bottleneck", "depths": [3, 8, 36, 3]},
}
# CPU-scale configs (only as *_cifar variants): the quickstart's fast regular CNN, and ResNet-18/34/50 at quarter
# width (16..128 channels, ~1/16 of the FLOPs) for the CPU-scale claim presets (flags/claims/).
_QUARTER = [16, 32, 64, 128]
CPU_CONFIGS = {
    "resnet10": {"block": "basic", "depths": [1, 1, 1, 1], "widths": [24, 48, 96, 192]},
    "resnet18_w16": {**MODEL_CONFIGS["resnet18"], "widths": _QUARTER},
    "resnet34_w16": {**MODEL_CONFIGS["resnet34"], "widths": _QUARTER},
    "resnet50_w16": {**MODEL_CONFIGS["resnet50"], "widths": _QUARTER},
}
_BN_MOMENTUM = 0.9


def _conv_bn(x, filters, kernel, strides, name, suffix, relu=True, padding="same", bn_epsilon=1e-5):
    conv_name = f"{name}_conv{suffix}"
    x, conv_padding = pad_strided(x, kernel, strides, padding, conv_name)
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding=conv_padding, use_bias=False,
        kernel_initializer=kaiming_normal_fan_out(), name=conv_name,
    )(x)
    x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=bn_epsilon, name=f"{name}_bn{suffix}")(x)
    return keras.layers.ReLU(name=f"{name}_relu{suffix}")(x) if relu else x


def _shortcut(x, filters, strides, name, bn_epsilon=1e-5):
    if strides == 1 and x.shape[-1] == filters:
        return x
    x = keras.layers.Conv2D(
        filters, 1, strides=strides, use_bias=False, kernel_initializer=kaiming_normal_fan_out(),
        name=f"{name}_shortcut_conv",
    )(x)
    return keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=bn_epsilon, name=f"{name}_shortcut_bn")(x)


def basic_block(x, filters, strides, name, padding="same", bn_epsilon=1e-5):
    """3x3 -> 3x3 residual block (expansion 1)."""
    shortcut = _shortcut(x, filters, strides, name, bn_epsilon)
    x = _conv_bn(x, filters, 3, strides, name, 1, padding=padding, bn_epsilon=bn_epsilon)
    x = _conv_bn(x, filters, 3, 1, name, 2, relu=False, padding=padding, bn_epsilon=bn_epsilon)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def bottleneck_block(x, filters, strides, name, padding="same", bn_epsilon=1e-5, stride_in_1x1=False):
    """1x1 -> 3x3 (strided; v1.5) -> 1x1 (4x) residual block; `stride_in_1x1` strides the first 1x1 (v1)."""
    shortcut = _shortcut(x, 4 * filters, strides, name, bn_epsilon)
    first, middle = (strides, 1) if stride_in_1x1 else (1, strides)
    x = _conv_bn(x, filters, 1, first, name, 1, padding=padding, bn_epsilon=bn_epsilon)
    x = _conv_bn(x, filters, 3, middle, name, 2, padding=padding, bn_epsilon=bn_epsilon)
    x = _conv_bn(x, 4 * filters, 1, 1, name, 3, relu=False, padding=padding, bn_epsilon=bn_epsilon)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def ResNet(
    depths,
    block="basic",
    widths=(64, 128, 256, 512),
    num_classes=1000,
    input_shape=(224, 224, 3),
    small_inputs=False,
    include_top=True,
    name="resnet",
    stride_in_1x1=False,
    padding="same",
    bn_epsilon=1e-5,
    preprocessing="imagenet",
):
    """Generic ResNet (v1.5; v1 with `stride_in_1x1=True`) builder."""
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block={block!r}; allowed: 'basic', 'bottleneck'")
    if stride_in_1x1 and block != "bottleneck":
        raise ValueError("stride_in_1x1=True needs bottleneck blocks (resnet50/101/152); basic blocks have no 1x1")
    check_padding(padding)
    conv = {"padding": padding, "bn_epsilon": bn_epsilon}
    if block == "basic":
        block_fn = functools.partial(basic_block, **conv)
    else:
        block_fn = functools.partial(bottleneck_block, stride_in_1x1=stride_in_1x1, **conv)
    inputs = keras.Input(shape=input_shape, name="image")
    x = input_preprocessing(inputs, input_shape[-1], preprocessing)
    if small_inputs:
        x = _conv_bn(x, widths[0], 3, 1, "stem", "", **conv)
    else:
        x = _conv_bn(x, widths[0], 7, 2, "stem", "", **conv)
        x, pool_padding = pad_strided(x, 3, 2, padding, "stem_pool")  # after a ReLU: zeros act as -inf
        x = keras.layers.MaxPooling2D(3, strides=2, padding=pool_padding, name="stem_pool")(x)
    for s, (depth, width) in enumerate(zip(depths, widths), start=1):
        for b in range(1, depth + 1):
            strides = 2 if (b == 1 and s > 1) else 1
            x = block_fn(x, width, strides, f"stage{s}_block{b}")
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if include_top:
        kernel_init, bias_init = torch_linear_default(x.shape[-1])
        x = keras.layers.Dense(
            num_classes, kernel_initializer=kernel_init, bias_initializer=bias_init, dtype="float32",
            name="head_dense",
        )(x)
    return keras.Model(inputs, x, name=name)


def _variant(config, cifar):
    def build(num_classes=1000, input_shape=None, name=None, **overrides):
        kwargs = {
            **config,
            "small_inputs": cifar,
            "input_shape": tuple(input_shape or ((32, 32, 3) if cifar else (224, 224, 3))),
            **overrides,
        }
        return ResNet(num_classes=num_classes, name=name, **kwargs)

    return build


for _name, _config in MODEL_CONFIGS.items():
    register_model(_name, "resnet", f"{_name}, 224 px")(_variant(_config, cifar=False))
    register_model(f"{_name}_cifar", "resnet", f"{_name}, 3x3 stem, 32 px")(_variant(_config, cifar=True))
register_model("resnet10_cifar", "resnet", "ResNet-10 at 3/8 width, 3x3 stem, 32 px")(
    _variant(CPU_CONFIGS["resnet10"], cifar=True)
)
for _depth in (18, 34, 50):
    register_model(f"resnet{_depth}_w16_cifar", "resnet",
                   f"ResNet-{_depth} at quarter width (16..128), 3x3 stem, 32 px")(
        _variant(CPU_CONFIGS[f"resnet{_depth}_w16"], cifar=True)
    )
