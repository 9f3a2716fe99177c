"""MobileNetV2-style DS-CNN with 3x3 `DepthwiseConv2D` (a second DS-CNN family for cross-architecture transfer).

Names: `stem_conv`, `stage{s}_block{b}_expand`, `..._dwconv`, `..._project` (with `_bn`/`_relu`
suffixes), `head_conv`, `head_dense`. 17 depthwise layers at the standard configuration.
`mobilenetv2_cifar` keeps the first two strides at 1 for 28-64 px inputs.
Initialisation as torchvision (models/mobilenetv2.py): every conv, depthwise included, `kaiming_normal_(mode=
"fan_out")` with torch's fan-out, BatchNorm 1/0, the head normal(0, 0.01) with bias 0 (docs/models.md).
Options for exact weight conversion (mk_keras.convert.mobilenet; defaults as above): `padding="symmetric"` and
`bn_epsilon=1e-5` (torchvision), `preprocessing="tf"` (keras.applications), see models/conventions.py.
"""

import keras

from mk_keras.models.initializers import kaiming_normal_fan_out, kaiming_normal_fan_out_depthwise
from mk_keras.models.conventions import check_padding, input_preprocessing, pad_strided
from mk_keras.models.registry import register_model

# Inverted-residual settings per stage: expansion t, channels c, blocks n, first stride s.
MODEL_CONFIGS = {
    "mobilenetv2": {
        "stages": [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)],
        "stem_stride": 2,
    },
}
_BN_MOMENTUM = 0.9


def _make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu(x, filters, kernel, strides, name, relu=True, padding="same", bn_epsilon=1e-3):
    x, conv_padding = pad_strided(x, kernel, strides, padding, name)
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding=conv_padding, use_bias=False,
        kernel_initializer=kaiming_normal_fan_out(), name=name,
    )(x)
    x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=bn_epsilon, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def inverted_residual(x, expansion, filters, strides, name, kernel_size=3, padding="same", bn_epsilon=1e-3):
    """Expand 1x1 -> depthwise kxk -> project 1x1, residual when shapes allow."""
    in_channels = x.shape[-1]
    shortcut = x
    if expansion != 1:
        x = _conv_bn_relu(x, in_channels * expansion, 1, 1, f"{name}_expand", bn_epsilon=bn_epsilon)
    x, dw_padding = pad_strided(x, kernel_size, strides, padding, f"{name}_dwconv")
    x = keras.layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding=dw_padding, use_bias=False,
        depthwise_initializer=kaiming_normal_fan_out_depthwise(), name=f"{name}_dwconv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=bn_epsilon, name=f"{name}_dwconv_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dwconv_relu")(x)
    x = _conv_bn_relu(x, filters, 1, 1, f"{name}_project", relu=False, bn_epsilon=bn_epsilon)
    if strides == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def MobileNetV2(
    stages,
    num_classes=1000,
    input_shape=(224, 224, 3),
    alpha=1.0,
    stem_stride=2,
    small_inputs=False,
    kernel_size=3,
    include_top=True,
    name="mobilenetv2",
    padding="same",
    bn_epsilon=1e-3,
    preprocessing="imagenet",
):
    """Generic MobileNetV2 builder; `alpha` scales widths (rounded to multiples of 8)."""
    check_padding(padding)
    conv = {"padding": padding, "bn_epsilon": bn_epsilon}
    inputs = keras.Input(shape=input_shape, name="image")
    x = input_preprocessing(inputs, input_shape[-1], preprocessing)
    x = _conv_bn_relu(x, _make_divisible(32 * alpha), 3, 1 if small_inputs else stem_stride, "stem_conv", **conv)
    for s, (t, c, n, first_stride) in enumerate(stages, start=1):
        out = _make_divisible(c * alpha)
        for b in range(1, n + 1):
            strides = first_stride if b == 1 else 1
            if small_inputs and s <= 2:
                strides = 1
            x = inverted_residual(x, t, out, strides, f"stage{s}_block{b}", kernel_size, **conv)
    last = _make_divisible(1280 * max(alpha, 1.0))
    x = _conv_bn_relu(x, last, 1, 1, "head_conv", **conv)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if include_top:
        x = keras.layers.Dense(
            num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), dtype="float32",
            name="head_dense",
        )(x)
    return keras.Model(inputs, x, name=name)


def _variant(cifar, alpha=1.0):
    def build(num_classes=1000, input_shape=None, name=None, **overrides):
        kwargs = {
            **MODEL_CONFIGS["mobilenetv2"],
            "alpha": alpha,
            "small_inputs": cifar,
            "input_shape": tuple(input_shape or ((32, 32, 3) if cifar else (224, 224, 3))),
            **overrides,
        }
        return MobileNetV2(num_classes=num_classes, name=name, **kwargs)

    return build


register_model("mobilenetv2", "mobilenetv2", "MobileNetV2 (alpha 1.0), 224 px")(_variant(cifar=False))
register_model("mobilenetv2_cifar", "mobilenetv2", "MobileNetV2, strides 1 in stages 1-2, 32 px")(
    _variant(cifar=True)
)
# CPU scale (the cross-architecture claim preset): keras.applications' smallest width, alpha 0.35.
register_model("mobilenetv2_035_cifar", "mobilenetv2", "MobileNetV2 alpha 0.35, strides 1 in stages 1-2, 32 px")(
    _variant(cifar=True, alpha=0.35)
)
