"""Yosinski et al. (2014)'s 8-layer AlexNet-style CNN: 5 conv + 3 dense (the paper's Fig. 5 contrast).

Caffe reference layout without LRN and without the two-GPU grouping (grouped convolutions are not
supported by every CPU kernel). Names: `conv1`..`conv5`, `fc6`, `fc7`, `head_dense` (fc8).
Initialisation as Caffe's reference network, which Yosinski et al. (2014) trained (BVLC/caffe
models/bvlc_reference_caffenet/train_val.prototxt, 2014): Gaussian weights, std 0.01 (fc6, fc7: 0.005);
biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 in conv1, conv3, fc8 (docs/models.md).
"""

import keras

from mk_keras.models.layers import preprocessing
from mk_keras.models.registry import register_model

MODEL_CONFIGS = {
    # (filters, kernel, stride, max-pool after)
    "alexnet": {"convs": [(96, 11, 4, True), (256, 5, 1, True), (384, 3, 1, False), (384, 3, 1, False), (256, 3, 1, True)], "fc": 4096, "first_padding": "valid"},
    "alexnet_cifar": {"convs": [(64, 5, 1, True), (192, 5, 1, True), (384, 3, 1, False), (256, 3, 1, False), (256, 3, 1, True)], "fc": 1024, "first_padding": "same"},
    # CPU scale (the Fig. 3 claim preset): alexnet_cifar at quarter width, He-normal initialisation. With the
    # Caffe Gaussian one its loss stayed at chance for 200 steps at 7 of 10 bases (5 seeds, A and B; 2026-12-01).
    "alexnet_small_cifar": {"convs": [(16, 5, 1, True), (48, 5, 1, True), (96, 3, 1, False), (64, 3, 1, False), (64, 3, 1, True)], "fc": 256, "first_padding": "same",
                            "init": "he"},
}


# Convs whose Caffe reference bias starts at 1 (the others at 0).
_UNIT_BIAS_CONVS = (2, 4, 5)


def _initializers(init, std, unit_bias):
    """(kernel, bias) initialisers: "caffe" (Yosinski's: Gaussian `std`, bias 1 in `unit_bias` layers) or "he"
    (He-normal, zero bias: the ReLU default)."""
    if init == "he":
        return keras.initializers.HeNormal(), "zeros"
    if init != "caffe":
        raise ValueError(f"init={init!r}; allowed: caffe, he")
    return keras.initializers.RandomNormal(stddev=std), keras.initializers.Constant(1.0 if unit_bias else 0.0)


def AlexNet(convs, fc, first_padding="valid", num_classes=1000, input_shape=(227, 227, 3), dropout=0.5, include_top=True, name="alexnet",
            init="caffe"):
    """Generic 5-conv / 3-dense builder; `init`: "caffe" (the paper's Gaussian initialisation) or "he"."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocessing(inputs, input_shape[-1])
    for i, (filters, kernel, stride, pool) in enumerate(convs, start=1):
        padding = first_padding if i == 1 else "same"
        kernel_init, bias_init = _initializers(init, 0.01, i in _UNIT_BIAS_CONVS)
        x = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, activation="relu", kernel_initializer=kernel_init,
            bias_initializer=bias_init, name=f"conv{i}",
        )(x)
        if pool:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same" if first_padding == "same" else "valid", name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (6, 7):
        kernel_init, bias_init = _initializers(init, 0.005, True)
        x = keras.layers.Dense(fc, activation="relu", kernel_initializer=kernel_init, bias_initializer=bias_init,
                               name=f"fc{i}")(x)
        x = keras.layers.Dropout(dropout, name=f"drop{i}")(x)
    if include_top:
        x = keras.layers.Dense(num_classes, kernel_initializer=_initializers(init, 0.01, False)[0], dtype="float32",
                               name="head_dense")(x)
    return keras.Model(inputs, x, name=name)


def _variant(config_name, default_shape):
    def build(num_classes=1000, input_shape=None, name=None, **overrides):
        kwargs = {**MODEL_CONFIGS[config_name], "input_shape": tuple(input_shape or default_shape), **overrides}
        return AlexNet(num_classes=num_classes, name=name, **kwargs)

    return build


register_model("alexnet", "alexnet", "Yosinski 2014 AlexNet-style CNN, 227 px")(_variant("alexnet", (227, 227, 3)))
register_model("alexnet_cifar", "alexnet", "AlexNet-style CNN for 32 px inputs")(_variant("alexnet_cifar", (32, 32, 3)))
# revision 2 (2026-12-01): He-normal initialisation instead of the Caffe Gaussian one
register_model("alexnet_small_cifar", "alexnet", "alexnet_cifar at quarter width, He-normal init, 32 px", revision=2)(
    _variant("alexnet_small_cifar", (32, 32, 3))
)
