"""HorNet (Rao et al., NeurIPS 2022) with 7x7 gnConv as flat functional graphs with real `DepthwiseConv2D` layers.

A HorNet block is `x + gamma1 * gnConv(LN(x))`, then `x + gamma2 * pwconv2(GELU(pwconv1(LN(x))))`. The
recursive gated convolution of order n on C channels splits C into dims = [C/2^(n-1), ..., C/2, C]:
`proj_in` (1x1, C -> 2C) gives `p` (dims[0] channels) and `q` (sum(dims) channels); one 7x7 depthwise conv on
`q`, times the scale s = 1/3, is split into d_0 .. d_(n-1); then `p = p * d_0`, `p = pw_k(p) * d_k`
(k = 1 .. n-1, 1x1 convs dims[k-1] -> dims[k]), and `proj_out` (1x1, C -> C). Stages use orders 2, 3, 4, 5.

Layer names are deterministic: `stem_conv`, `stem_norm`, `stage{s}_downsample_norm`, `stage{s}_downsample_conv`,
`stage{s}_block{b}_norm1`, `..._gnconv_proj_in`, `..._gnconv_split_in`, `..._gnconv_dwconv`,
`..._gnconv_scale`, `..._gnconv_split_dw`, `..._gnconv_mul{k}`, `..._gnconv_pw{k}`, `..._gnconv_proj_out`,
`..._gamma1`, `..._norm2`, `..._pwconv1`, `..._pwconv2`, `..._gamma2`, `head_norm`, `head_dense`; stages,
blocks and k count from 1. The 1x1 convolutions are `Dense` layers on NHWC tensors, which
`filter_layers(model, "pointwise")` counts; `filter_layers(model, "depthwise")` finds one gnConv dwconv per block.
`*_cifar` variants use a 2x2/2 stem for 28-64 px inputs (ImageNet variants: 4x4/4 at 224 px).

Differences from the official PyTorch code (github raoyongming/HorNet `hornet.py`), none of which changes the
function: NHWC instead of NCHW, so its channels_first LayerNorm is a LayerNorm over the last axis; the
`padding=3` of the 7x7 depthwise conv is "same"; the scale s multiplies the dwconv output in its own layer
(`Rescaling`), so the depthwise kernels are the checkpoint's filters; torch's `split` is `ChannelSplit`; images
enter as raw pixels in [0, 255] and the ImageNet mean/std normalisation (the official default) is the model's
first layers. Initialisation as the official `_init_weights` (`uniform_init=False`): every conv and linear
kernel, depthwise included, normal with std 0.02, biases 0, LayerNorm 1/0, gamma1/gamma2 1e-6 (docs/models.md).
"""

import keras
from keras import ops

from mk_keras.models.initializers import trunc_normal_02
from mk_keras.models.layers import LayerNorm, LayerScale, StochasticDepth, gelu, preprocessing
from mk_keras.models.registry import register_model

ORDERS = (2, 3, 4, 5)  # gnConv order per stage in every official HorNet
GNCONV_SCALE = 1.0 / 3.0  # s of every official HorNet
MODEL_CONFIGS = {
    "tiny": {"depths": [2, 3, 18, 2], "widths": [64, 128, 256, 512]},
    "small": {"depths": [2, 3, 18, 2], "widths": [96, 192, 384, 768]},
}
# CPU-scale config (only as a *_cifar variant)
CPU_CONFIGS = {"micro": {"depths": [1, 1, 2, 1], "widths": [24, 48, 96, 192]}}


@keras.saving.register_keras_serializable(package="mk_keras")
class ChannelSplit(keras.layers.Layer):
    """Splits the last axis into consecutive pieces of `sizes` channels (torch.split on the channel axis)."""

    def __init__(self, sizes, **kwargs):
        super().__init__(**kwargs)
        self.sizes = [int(s) for s in sizes]

    def call(self, x):
        if x.shape[-1] != sum(self.sizes):
            raise ValueError(f"{self.name}: {x.shape[-1]} channels cannot be split into {self.sizes}")
        bounds = [sum(self.sizes[:i]) for i in range(1, len(self.sizes))]
        return ops.split(x, bounds, axis=-1)

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[:-1]) + (s,) for s in self.sizes]

    def get_config(self):
        return {**super().get_config(), "sizes": self.sizes}


def gnconv_dims(width, order):
    """The channel widths [C/2^(order-1), ..., C/2, C] of a gnConv of `order` on `width` channels."""
    if order < 1 or width % 2 ** (order - 1):
        raise ValueError(f"gnConv of order {order} needs a width divisible by {2 ** max(order - 1, 0)}; got {width}")
    return [width // 2 ** i for i in reversed(range(order))]


def _dense(units, name, **kwargs):
    return keras.layers.Dense(units, kernel_initializer=trunc_normal_02(), name=name, **kwargs)


def gnconv(x, width, order, name, scale=GNCONV_SCALE, kernel_size=7):
    """Recursive gated convolution of `order` on NHWC `x` with `width` channels."""
    dims = gnconv_dims(width, order)
    fused = _dense(2 * width, f"{name}_proj_in")(x)
    p, q = ChannelSplit([dims[0], sum(dims)], name=f"{name}_split_in")(fused)
    q = keras.layers.DepthwiseConv2D(
        kernel_size, padding="same", depthwise_initializer=trunc_normal_02(), name=f"{name}_dwconv"
    )(q)
    q = keras.layers.Rescaling(scale, name=f"{name}_scale")(q)
    gates = ChannelSplit(dims, name=f"{name}_split_dw")(q) if order > 1 else [q]
    p = keras.layers.Multiply(name=f"{name}_mul1")([p, gates[0]])
    for k in range(1, order):
        p = _dense(dims[k], f"{name}_pw{k}")(p)
        p = keras.layers.Multiply(name=f"{name}_mul{k + 1}")([p, gates[k]])
    return _dense(width, f"{name}_proj_out")(p)


def hornet_block(x, width, order, name, drop_path_rate=0.0, layer_scale_init=1e-6, scale=GNCONV_SCALE,
                 kernel_size=7):
    """One HorNet block: x + gamma1 * gnConv(LN(x)), then x + gamma2 * MLP(LN(x)) (4x expansion, GELU)."""
    def residual(shortcut, branch, tag):
        if layer_scale_init:
            branch = LayerScale(layer_scale_init, name=f"{name}_gamma{tag}")(branch)
        if drop_path_rate:
            branch = StochasticDepth(drop_path_rate, name=f"{name}_drop_path{tag}")(branch)
        return keras.layers.Add(name=f"{name}_add{tag}")([shortcut, branch])

    y = LayerNorm(epsilon=1e-6, name=f"{name}_norm1")(x)
    x = residual(x, gnconv(y, width, order, f"{name}_gnconv", scale, kernel_size), 1)
    y = LayerNorm(epsilon=1e-6, name=f"{name}_norm2")(x)
    y = _dense(4 * width, f"{name}_pwconv1")(y)
    y = keras.layers.Activation(gelu, name=f"{name}_gelu")(y)
    y = _dense(width, f"{name}_pwconv2")(y)
    return residual(x, y, 2)


def HorNet(
    depths,
    widths,
    num_classes=1000,
    input_shape=(224, 224, 3),
    orders=ORDERS,
    scale=GNCONV_SCALE,
    stem_stride=4,
    drop_path_rate=0.0,
    layer_scale_init=1e-6,
    kernel_size=7,
    include_top=True,
    name="hornet",
):
    """Generic HorNet builder (7x7 gnConv); drop-path rate grows linearly per block, as the official code."""
    if not len(depths) == len(widths) == len(orders):
        raise ValueError(f"depths {list(depths)}, widths {list(widths)} and orders {list(orders)} "
                         "must have the same length")
    for width, order in zip(widths, orders):
        gnconv_dims(width, order)
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocessing(inputs, input_shape[-1])
    x = keras.layers.Conv2D(
        widths[0], stem_stride, strides=stem_stride, kernel_initializer=trunc_normal_02(), name="stem_conv"
    )(x)
    x = LayerNorm(epsilon=1e-6, name="stem_norm")(x)
    total, done = sum(depths), 0
    for s, (depth, width, order) in enumerate(zip(depths, widths, orders), start=1):
        if s > 1:
            x = LayerNorm(epsilon=1e-6, name=f"stage{s}_downsample_norm")(x)
            x = keras.layers.Conv2D(
                width, 2, strides=2, kernel_initializer=trunc_normal_02(), name=f"stage{s}_downsample_conv"
            )(x)
        for b in range(1, depth + 1):
            rate = drop_path_rate * done / max(total - 1, 1)
            x = hornet_block(x, width, order, f"stage{s}_block{b}", rate, layer_scale_init, scale, kernel_size)
            done += 1
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = LayerNorm(epsilon=1e-6, name="head_norm")(x)
    if include_top:
        x = _dense(num_classes, "head_dense", dtype="float32")(x)
    return keras.Model(inputs, x, name=name)


def _variant(size, cifar):
    config = {**MODEL_CONFIGS, **CPU_CONFIGS}[size]

    def build(num_classes=1000, input_shape=None, name=None, **overrides):
        kwargs = {
            **config,
            "stem_stride": 2 if cifar else 4,
            "input_shape": tuple(input_shape or ((32, 32, 3) if cifar else (224, 224, 3))),
            **overrides,
        }
        return HorNet(num_classes=num_classes, name=name, **kwargs)

    return build


for _size in MODEL_CONFIGS:
    register_model(f"hornet_{_size}_7x7", "hornet", f"HorNet-{_size[0].upper()} 7x7 gnConv, 224 px")(
        _variant(_size, cifar=False)
    )
register_model("hornet_micro_cifar", "hornet", "HorNet micro 7x7 gnConv, 2x2 stem, 32 px")(
    _variant("micro", cifar=True)
)
