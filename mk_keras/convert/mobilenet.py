"""torchvision mobilenet_v2 and keras.applications MobileNetV2 weights -> `mk_keras.models.mobilenet`.

Sources: torchvision state dicts (`features.0` stem, `features.{1-17}.conv.*` inverted residuals,
`features.18` last 1x1 conv, `classifier.1`) and keras.applications `MobileNetV2` (`Conv1`, `expanded_conv_*`,
`block_{i}_{expand,depthwise,project}[_BN]`, `Conv_1`, `predictions`), both into `mobilenetv2` (alpha 1.0).
The target must be built with `build_overrides(source)`; the converters check that and name the options
otherwise.

What differs and how the conversion handles it (the converted model computes the same function):
- Padding: torchvision pads the strided 3x3 stem and depthwise convs by 1 on all sides; Keras 'same' pads an
  even-sized input at the bottom/right only: torch weights need `padding="symmetric"` (explicit
  `ZeroPadding2D`, then 'valid'). keras.applications uses 'same' for its stem and `correct_pad` before the
  strided depthwise convs, which is (0, 1) on even and (1, 1) on odd sizes, i.e. exactly 'same': the default.
- BatchNorm eps: 1e-5 in torchvision (`bn_epsilon=1e-5`), 1e-3 in keras.applications and mk_keras. Momentum
  (training only) is not converted.
- Activations and widths agree: ReLU6 after the stem, expand and depthwise convs, none after the projection;
  the last conv has 1280 channels at alpha <= 1 (`_make_divisible(1280 * alpha)` above) in all three.
  torchvision's classifier dropout is inactive in inference.
- Input: mk_keras models take raw RGB pixels in [0, 255]. torchvision expects (x/255 - mean)/std with the
  ImageNet mean/std, the default `preprocessing="imagenet"`; keras.applications MobileNetV2 expects
  `preprocess_input` (x / 127.5 - 1): `preprocessing="tf"`.
- Layout: PyTorch OIHW convs -> HWIO, depthwise (C, 1, 3, 3) -> (3, 3, C, 1), Linear (out, in) -> (in, out);
  keras.applications kernels as stored.
"""

import re

from mk_keras.convert import core
from mk_keras.models.conventions import read_conventions

KERAS_APPLICATIONS = {"MobileNetV2": "mobilenetv2"}

_OVERRIDES = {
    "torch": {"padding": "symmetric", "bn_epsilon": 1e-5, "preprocessing": "imagenet"},
    "keras": {"padding": "same", "bn_epsilon": 1e-3, "preprocessing": "tf"},
}
_BLOCK = re.compile(r"^stage(\d+)_block(\d+)_(expand|dwconv|project)(_bn)?$")
_TORCH_VARIABLES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                    "moving_mean": "running_mean", "moving_variance": "running_var"}
# block part -> torchvision index inside `features.N.conv` (with / without the expand conv) and keras.applications
_TORCH_PARTS = {True: {"expand": "0.0", "expand_bn": "0.1", "dwconv": "1.0", "dwconv_bn": "1.1", "project": "2",
                       "project_bn": "3"},
                False: {"dwconv": "0.0", "dwconv_bn": "0.1", "project": "1", "project_bn": "2"}}
_KERAS_PARTS = {"expand": "expand", "expand_bn": "expand_BN", "dwconv": "depthwise", "dwconv_bn": "depthwise_BN",
                "project": "project", "project_bn": "project_BN"}


def build_overrides(source):
    """Builder arguments for an exact match of `source` ("torch": torchvision, "keras": keras.applications)."""
    if source not in _OVERRIDES:
        raise ValueError(f"source={source!r}; allowed: {', '.join(map(repr, _OVERRIDES))}")
    return dict(_OVERRIDES[source])


def _check_conventions(model, source):
    got, want = read_conventions(model), build_overrides(source)
    wrong = [f"{k}={got[k]!r}" for k in want if got[k] != want[k]]
    if wrong:
        raise ValueError(f"model {model.name!r} has {', '.join(wrong)}; {source} MobileNetV2 weights need "
                         f"{', '.join(f'{k}={v!r}' for k, v in want.items())} (build_overrides({source!r}))")


def _layers(model):
    """(layer, torchvision module name, keras.applications layer name) for each layer holding weights."""
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for m in map(_BLOCK.match, (l.name for l in model.layers))
                     if m})
    index = {block: i for i, block in enumerate(blocks)}
    fixed = {"stem_conv": ("features.0.0", "Conv1"), "stem_conv_bn": ("features.0.1", "bn_Conv1"),
             "head_conv": (f"features.{len(blocks) + 1}.0", "Conv_1"),
             "head_conv_bn": (f"features.{len(blocks) + 1}.1", "Conv_1_bn"),
             "head_dense": ("classifier.1", "predictions")}
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in fixed:
            yield (layer, *fixed[layer.name])
            continue
        m = _BLOCK.match(layer.name)
        if m is None:
            raise ValueError(f"layer {layer.name!r} of {model.name!r} is not a MobileNetV2 layer "
                             "(is the model a mobilenetv2?)")
        s, b, part = int(m.group(1)), int(m.group(2)), m.group(3) + (m.group(4) or "")
        i = index[(s, b)]
        expands = f"stage{s}_block{b}_expand" in names
        prefix = "expanded_conv_" if i == 0 else f"block_{i}_"
        yield layer, f"features.{i + 1}.conv.{_TORCH_PARTS[expands][part]}", prefix + _KERAS_PARTS[part]


def torch_assigns(model, state):
    """The `core.Assign` list copying a torchvision mobilenet_v2 state dict into `model` (built with
    `build_overrides("torch")`, else ValueError)."""
    del state  # the keys follow from the model; `core.apply_mapping` checks them against the state dict
    _check_conventions(model, "torch")
    assigns = []
    for layer, module, _ in _layers(model):
        for variable in layer.weights:
            layout = "same"
            if variable.name == "kernel":
                layout = {"head_dense": "dense"}.get(layer.name, "depthwise" if layer.name.endswith("dwconv")
                                                     else "conv")
            assigns.append(core.Assign(variable, f"{module}.{_TORCH_VARIABLES[variable.name]}", layout))
    return assigns


def checkpoint_num_classes(state):
    """Number of classes of a torchvision mobilenet_v2 state dict (rows of `classifier.1.weight`)."""
    if "classifier.1.weight" not in state:
        raise ValueError("MobileNetV2 state dict has no classifier 'classifier.1.weight' "
                         "(not a torchvision mobilenet_v2, or headless)")
    return int(state["classifier.1.weight"].shape[0])


def keras_assigns(model, app_model):
    """The `core.Assign` list copying keras.applications MobileNetV2 (`core.keras_state(app_model)`) into
    `model` (built with `build_overrides("keras")`, else ValueError)."""
    del app_model  # the keys follow from the model; `core.apply_mapping` checks them against the state
    _check_conventions(model, "keras")
    return [core.Assign(variable, f"{name}/{variable.name}") for layer, _, name in _layers(model)
            for variable in layer.weights]
