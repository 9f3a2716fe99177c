"""torchvision ResNet-18/34/50/101/152 and keras.applications ResNet50 weights -> `mk_keras.models.resnet`.

Sources: torchvision state dicts (`conv1`, `bn1`, `layer{1-4}.{b}.conv{i}` / `.bn{i}` / `.downsample.{0,1}`,
`fc`) into `resnet18` ... `resnet152`; keras.applications `ResNet50` (`conv1_conv`, `conv{2-5}_block{b}_{0-3}_conv`
/ `_bn`, `predictions`) into `resnet50`. The target must be built with `build_overrides(source)`; the
converters check that and name the options otherwise.

What differs and how the conversion handles it (the converted model computes the same function):
- Padding: PyTorch pads every conv by k // 2 on all sides (and the stem max-pool by 1); Keras 'same' puts the
  padding of a strided window on an even-sized input at the bottom/right only, so the builder's default samples
  other pixels. Both sources need `padding="symmetric"` (explicit `ZeroPadding2D` before the strided 7x7 stem,
  3x3 convs and the stem pool; keras.applications ResNet50 pads its stem and pool the same way).
- Stride: torchvision ResNet-50+ is "v1.5" (stride in the 3x3 conv, as the mk_keras default);
  keras.applications ResNet50 is v1 (stride in the block's first 1x1 conv): `stride_in_1x1=True`.
- BatchNorm eps: 1e-5 in torchvision and mk_keras; 1.001e-5 in keras.applications ResNet50: `bn_epsilon`.
  (Momentum only matters in training and is not converted.)
- Conv biases: keras.applications ResNet50 convs have biases, each followed by BatchNorm; a bias b is folded
  into that BatchNorm's moving mean (mean - b), exact in inference. The folded mean is listed under both source
  keys (the bias and the mean), so `core.apply_mapping` counts both as used.
- Input: mk_keras models take raw RGB pixels in [0, 255]. torchvision expects (x/255 - mean)/std with the
  ImageNet mean/std, the default `preprocessing="imagenet"`. keras.applications ResNet50 expects
  `preprocess_input` ("caffe": RGB -> BGR, minus the BGR ImageNet mean, no scaling): `preprocessing="caffe"`
  subtracts the mean in RGB order and the stem kernel's input channels are reversed, so the converted model
  takes RGB.
- Layout: PyTorch OIHW convs -> HWIO, Linear (out, in) -> Dense (in, out); keras.applications kernels as stored.
"""

import re

import keras

from mk_keras.convert import core
from mk_keras.models.conventions import read_conventions

KERAS_APPLICATIONS = {"ResNet50": "resnet50"}

_OVERRIDES = {
    "torch": {"padding": "symmetric", "bn_epsilon": 1e-5, "preprocessing": "imagenet", "stride_in_1x1": False},
    "keras": {"padding": "symmetric", "bn_epsilon": 1.001e-5, "preprocessing": "caffe", "stride_in_1x1": True},
}
_LAYER = re.compile(r"^(?:(stem)_(conv|bn)|stage(\d+)_block(\d+)_(?:(conv|bn)(\d)|shortcut_(conv|bn))|(head_dense))$")
_TORCH_VARIABLES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                    "moving_mean": "running_mean", "moving_variance": "running_var"}


def build_overrides(source):
    """Builder arguments for an exact match of `source` ("torch": torchvision, "keras": keras.applications)."""
    if source not in _OVERRIDES:
        raise ValueError(f"source={source!r}; allowed: {', '.join(map(repr, _OVERRIDES))}")
    return dict(_OVERRIDES[source])


def _check_conventions(model, source):
    got = read_conventions(model)
    names = {layer.name for layer in model.layers}
    got["stride_in_1x1"] = any(  # a bottleneck block (with a conv3) whose first 1x1 conv is strided
        re.fullmatch(r"stage\d+_block\d+_conv1", layer.name) and max(layer.strides) > 1
        and f"{layer.name[:-1]}3" in names for layer in model.layers)
    want = build_overrides(source)
    wrong = [f"{k}={got[k]!r}" for k in want if got[k] != want[k]]
    if wrong:
        raise ValueError(f"model {model.name!r} has {', '.join(wrong)}; {source} ResNet weights need "
                         f"{', '.join(f'{k}={v!r}' for k, v in want.items())} (build_overrides({source!r}))")


def _layers(model):
    """(layer, torchvision module name, keras.applications layer name) for each layer holding weights."""
    for layer in model.layers:
        if not layer.weights:
            continue
        m = _LAYER.match(layer.name)
        if m is None:
            raise ValueError(f"layer {layer.name!r} of {model.name!r} is not a ResNet layer (is the model a resnet?)")
        stem, stem_kind, s, b, kind, i, shortcut_kind, head = m.groups()
        if stem:
            yield layer, "conv1" if stem_kind == "conv" else "bn1", f"conv1_{stem_kind}"
        elif head:
            yield layer, "fc", "predictions"
        elif shortcut_kind:
            index = 0 if shortcut_kind == "conv" else 1
            yield layer, f"layer{s}.{int(b) - 1}.downsample.{index}", f"conv{int(s) + 1}_block{b}_0_{shortcut_kind}"
        else:
            yield layer, f"layer{s}.{int(b) - 1}.{kind}{i}", f"conv{int(s) + 1}_block{b}_{i}_{kind}"


def torch_assigns(model, state):
    """The `core.Assign` list copying a torchvision ResNet state dict into `model` (built with
    `build_overrides("torch")`, else ValueError)."""
    del state  # the keys follow from the model; `core.apply_mapping` checks them against the state dict
    _check_conventions(model, "torch")
    assigns = []
    for layer, module, _ in _layers(model):
        for variable in layer.weights:
            if variable.name == "kernel":
                layout = "dense" if layer.name == "head_dense" else "conv"
            else:
                layout = "same"
            assigns.append(core.Assign(variable, f"{module}.{_TORCH_VARIABLES[variable.name]}", layout))
    return assigns


def checkpoint_num_classes(state):
    """Number of classes of a torchvision ResNet state dict (rows of `fc.weight`)."""
    if "fc.weight" not in state:
        raise ValueError("ResNet state dict has no classifier 'fc.weight' (not a torchvision ResNet, or headless)")
    return int(state["fc.weight"].shape[0])


def _reverse_input_channels(kernel):
    """Stem kernel that reads BGR (keras.applications caffe input) -> the same filters reading RGB."""
    return kernel[:, :, ::-1, :]


def keras_assigns(model, app_model):
    """The `core.Assign` list copying keras.applications ResNet50 (`core.keras_state(app_model)`) into `model`
    (built with `build_overrides("keras")`, else ValueError); conv biases are folded into the BatchNorm means."""
    _check_conventions(model, "keras")
    app = {v.path: v for v in app_model.weights}
    assigns = []
    for layer, _, name in _layers(model):
        for variable in layer.weights:
            key = f"{name}/{variable.name}"
            layout = _reverse_input_channels if layer.name == "stem_conv" and variable.name == "kernel" else "same"
            bias_key = f"{name[:-len('bn')]}conv/bias"
            if variable.name == "moving_mean" and key in app and bias_key in app:
                mean, bias = (keras.ops.convert_to_numpy(app[k]) for k in (key, bias_key))
                assigns.append(core.Assign(variable, key, lambda m, b=bias: m - b))
                assigns.append(core.Assign(variable, bias_key, lambda b, m=mean: m - b))
                continue
            assigns.append(core.Assign(variable, key, layout))
    return assigns
