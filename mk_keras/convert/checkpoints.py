"""Pretrained weights into mk_keras models: PyTorch checkpoints and keras.applications models.

    model = convert_checkpoint("convnext_tiny_1k_224_ema.pth", "convnext_tiny")
    model = convert_application("ConvNeXtTiny", weights="imagenet")          # -> convnext_tiny (downloads)
    model = convert_application("MobileNetV2", weights="mnv2.weights.h5", model_name="mobilenetv2")

Each model family has a converter module (`FAMILY_MODULES`: registry family -> module) exposing
`torch_assigns(model, state) -> [Assign]` and `checkpoint_num_classes(state) -> int`; families that
keras.applications ships also expose `KERAS_APPLICATIONS = {"ConvNeXtTiny": "convnext_tiny", ...}` and
`keras_assigns(model, app_model) -> [Assign]` (keys: variable paths, `core.keras_state`), and may list
`IGNORED_KEYS` (state-dict key suffixes the mk_keras model has no use for). Modules are imported when first
needed; a family can be added (or replaced in a test) by setting its entry in `FAMILY_MODULES`.
"""

import importlib
import importlib.util
import os

import keras
import numpy as np

from mk_keras.convert import core
from mk_keras.models import create_model, model_family

# registry family (`mk_keras.models.model_family`) -> converter module
FAMILY_MODULES = {
    "convnext": "mk_keras.convert.convnext",
    "convnextv2": "mk_keras.convert.convnext",
    "resnet": "mk_keras.convert.resnet",
    "mobilenetv2": "mk_keras.convert.mobilenet",
    "hornet": "mk_keras.convert.hornet",
}


def _available(module_name):
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


def supported_families():
    """The families whose converter module is installed."""
    return [family for family, module in FAMILY_MODULES.items() if _available(module)]


def family_converter(model_name):
    """The converter module of `model_name`'s family; ValueError (one line) when there is none."""
    family = model_family(model_name)  # raises for unknown names, with close matches
    module_name = FAMILY_MODULES.get(family)
    if module_name is None or not _available(module_name):
        raise ValueError(f"no checkpoint converter for model {model_name!r} (family {family!r}); supported "
                         f"families: {', '.join(supported_families()) or 'none installed'}")
    return importlib.import_module(module_name)


def application_models():
    """{keras.applications name: mk_keras registry name} over the installed family converters."""
    out = {}
    for module_name in dict.fromkeys(FAMILY_MODULES[f] for f in supported_families()):
        out.update(getattr(importlib.import_module(module_name), "KERAS_APPLICATIONS", {}))
    return out


def _as_state(path_or_state):
    """(state dict of numpy arrays, label of where it came from)."""
    if isinstance(path_or_state, dict):
        return {k: np.asarray(v) for k, v in path_or_state.items()}, "<state dict>"
    if isinstance(path_or_state, (str, os.PathLike)):
        path = os.fspath(path_or_state)
        return core.read_checkpoint(path), repr(path)
    raise ValueError(f"checkpoint {path_or_state!r} must be a file path or a state dict {{name: array}}")


def convert_checkpoint(path_or_state, model_name, num_classes=None, **overrides):
    """The registered model `model_name` with the weights of a PyTorch checkpoint (a file or a state dict).

    num_classes: head size; default the checkpoint's (`checkpoint_num_classes` of the family converter).
    overrides: `create_model` arguments (e.g. `input_shape=(64, 64, 3)`; not the architecture's sizes, which
    must match the checkpoint's). Raises ValueError in one line for an unknown model, a family without a
    converter, or a checkpoint that does not match (missing/unexpected keys, shapes; nothing is assigned).
    """
    converter = family_converter(model_name)
    state, where = _as_state(path_or_state)
    if num_classes is None:
        num_classes = int(converter.checkpoint_num_classes(state))
    model = create_model(model_name, num_classes=num_classes, **{**_build_overrides(converter, "torch"), **overrides})
    core.apply_mapping(converter.torch_assigns(model, state), state, f"{where} -> {model_name}",
                       ignore=getattr(converter, "IGNORED_KEYS", ()))
    return model


def _build_overrides(converter, source):
    """Builder options a family needs to match `source` ("torch" or "keras") exactly (padding, BatchNorm
    epsilon, input normalisation: `mk_keras.models.conventions`); {} for families built the same way."""
    return converter.build_overrides(source) if hasattr(converter, "build_overrides") else {}


def application(name, weights=None, classes=1000):
    """`keras.applications.<name>(weights=weights, classes=classes)`.

    weights: None (random), "imagenet" (downloaded by Keras into ~/.keras/models on first use; needs the
    network then) or a local `.weights.h5` file. Raises ValueError/FileNotFoundError in one line (an unknown
    name, a missing file, a failed download or a weights file of another architecture).
    """
    builder = getattr(keras.applications, str(name), None)
    if not callable(builder) or not str(name)[:1].isupper():
        raise ValueError(f"unknown keras.applications model {name!r}; e.g. ConvNeXtTiny, MobileNetV2, ResNet50")
    if weights not in (None, "imagenet"):
        weights = os.fspath(weights)
        if not weights.endswith(".weights.h5"):
            raise ValueError(f"weights {weights!r} of keras.applications.{name}: allowed 'imagenet' or a "
                             ".weights.h5 file (Model.save_weights)")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file {weights!r} of keras.applications.{name} does not exist")
    try:
        return builder(weights=weights, classes=classes)
    except Exception as e:  # download (URL/HTTP/OS) errors, h5py errors and Keras' shape errors alike
        what = "download the ImageNet weights" if weights == "imagenet" else f"load {weights!r}"
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"keras.applications.{name}: cannot {what} ({type(e).__name__}: {reason})") from e


def convert_application(name, weights="imagenet", model_name=None, classes=1000):
    """keras.applications.<name> with `weights` ("imagenet": downloaded; or a `.weights.h5` file), converted
    into the registered model `model_name` (default: the family converters' `KERAS_APPLICATIONS` entry).

    The mk_keras model gets the application's head size. Raises ValueError in one line when no converter
    knows `name`, or when the application's variables do not match the model.
    """
    if model_name is None:
        known = application_models()
        if name not in known:
            raise ValueError(f"no mk_keras model is known for keras.applications.{name}; pass model_name (known: "
                             f"{', '.join(sorted(known)) or 'none'})")
        model_name = known[name]
    converter = family_converter(model_name)
    if not hasattr(converter, "keras_assigns"):
        raise ValueError(f"the {model_family(model_name)!r} converter reads no keras.applications models; "
                         f"convert a PyTorch checkpoint into {model_name!r} instead")
    app = application(name, weights, classes)
    model = create_model(model_name, num_classes=app.output_shape[-1], **_build_overrides(converter, "keras"))
    state = core.keras_state(app)
    label = f"keras.applications.{name}({'imagenet' if weights == 'imagenet' else repr(os.fspath(weights))})"
    core.apply_mapping(converter.keras_assigns(model, app), state, f"{label} -> {model_name}")
    return model
