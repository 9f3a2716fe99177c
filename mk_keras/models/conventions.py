"""Builder options that reproduce other frameworks' conventions exactly (padding, input normalisation).

Used by the ResNet and MobileNetV2 builders so that converted torchvision / keras.applications weights give the
reference's outputs (mk_keras.convert). The defaults leave the builders as they always were.

- padding "same": Keras 'same' everywhere; a strided window over an even-sized input gets its extra padding at
  the bottom/right only (e.g. 3x3/2: 0 before, 1 after). "symmetric": every strided window with k > 1 is padded
  by k // 2 on all sides by a `ZeroPadding2D` named `<layer>_pad`, then runs 'valid' (torchvision's
  `padding=k // 2`, keras.applications ResNet50's stem and pool). Zero padding before a max-pool equals
  PyTorch's -inf padding only on non-negative inputs (the ResNet stem pool follows a ReLU).
- preprocessing, raw [0, 255] RGB pixels in: "imagenet" (x / 255 - mean) / std (torchvision's transform,
  `models.layers.preprocessing`); "tf" x / 127.5 - 1 (keras.applications MobileNetV2); "caffe" x - the
  ImageNet mean in RGB order (keras.applications ResNet50 also flips RGB to BGR: its converter flips the stem
  kernel's input channels instead, so the model still takes RGB).
"""

import keras
import numpy as np

from mk_keras.models.layers import preprocessing as imagenet_preprocessing

PADDINGS = ("same", "symmetric")
PREPROCESSING = ("imagenet", "tf", "caffe")
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


def check_padding(padding):
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}; allowed: {', '.join(map(repr, PADDINGS))}")


def pad_strided(x, kernel, strides, padding, name):
    """(x, padding for the layer `name`): explicit k // 2 zero padding before a strided k > 1 window under
    'symmetric', else 'same'."""
    if padding == "symmetric" and strides > 1 and kernel > 1:
        return keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x), "valid"
    return x, "same"


def input_preprocessing(inputs, channels, mode="imagenet"):
    """Raw [0, 255] pixels -> the network's input under `mode` (layers `preprocess_rescale`/`_normalize`)."""
    if mode == "imagenet":
        return imagenet_preprocessing(inputs, channels)
    if mode == "tf":
        scale, offset, mean = 1.0 / 127.5, -1.0, (0.0,) * channels
    elif mode == "caffe":
        if channels != 3:
            raise ValueError(f"preprocessing='caffe' needs 3 input channels, got {channels}")
        scale, offset, mean = 1.0, 0.0, _CAFFE_MEAN_RGB
    else:
        raise ValueError(f"preprocessing={mode!r}; allowed: {', '.join(map(repr, PREPROCESSING))}")
    x = keras.layers.Rescaling(scale, offset=offset, name="preprocess_rescale")(inputs)
    return keras.layers.Normalization(mean=list(mean), variance=[1.0] * channels, name="preprocess_normalize")(x)


def _strided_windows(model):
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            kernel = layer.kernel_size
        elif isinstance(layer, keras.layers.MaxPooling2D):
            kernel = layer.pool_size
        else:
            continue
        if max(layer.strides) > 1 and max(kernel) > 1:
            yield layer


def _preprocessing_values(model):
    rescale = model.get_layer("preprocess_rescale").get_config()
    normalize = model.get_layer("preprocess_normalize").get_config()
    return [np.ravel(np.asarray(v, dtype="float64")) for v in
            (rescale["scale"], rescale["offset"], normalize["mean"], normalize["variance"])]


def input_scaling(model):
    """(scale, offset, mean, variance) arrays of a model's input normalisation layers (`preprocess_rescale`,
    `preprocess_normalize`, as every mk_keras builder makes them); None for a model without them."""
    try:
        return _preprocessing_values(model)
    except ValueError:  # no such layer
        return None


def read_conventions(model):
    """{"padding", "bn_epsilon", "preprocessing"} as a built (or reloaded) model implements them; None where
    its layers disagree or match no option."""
    paddings = {layer.padding for layer in _strided_windows(model)}
    padding = {frozenset({"same"}): "same", frozenset({"valid"}): "symmetric"}.get(frozenset(paddings))
    epsilons = {layer.epsilon for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    channels = model.input_shape[-1]
    got = _preprocessing_values(model)
    mode = None
    for candidate in PREPROCESSING:
        if candidate == "caffe" and channels != 3:
            continue
        inputs = keras.Input((1, 1, channels))
        reference = _preprocessing_values(keras.Model(inputs, input_preprocessing(inputs, channels, candidate)))
        if all(a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(got, reference)):
            mode = candidate
    return {"padding": padding, "bn_epsilon": epsilons.pop() if len(epsilons) == 1 else None, "preprocessing": mode}
