"""Model registry: `create_model(name, ...)` and `list_models(pattern)` (timm style)."""

import difflib
import fnmatch

_MODELS = {}


def register_model(name, family, description="", revision=1):
    """Decorator registering a builder `fn(num_classes, input_shape, **overrides) -> keras.Model`. `revision`:
    raise it whenever a change to the builder changes what a run of this model computes (architecture,
    initialisation), so runs made before the change get another run identity (`RunSpec.spec_hash`) and a run
    store never serves them for the new model."""

    def wrap(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
            raise ValueError(f"revision={revision!r} for model {name!r}; allowed: an integer >= 1")
        _MODELS[name] = {"fn": fn, "family": family, "description": description, "revision": revision}
        return fn

    return wrap


def list_models(pattern=None):
    """Sorted registered model names, optionally filtered by a shell-style `pattern` (e.g. 'convnext*')."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_family(name):
    """The family of a registered model ('convnext', 'convnextv2', 'resnet', 'mobilenetv2', 'alexnet')."""
    _check_name(name)
    return _MODELS[name]["family"]


def model_revision(name):
    """The builder revision of a registered model (1 unless its definition changed since it was registered)."""
    _check_name(name)
    return _MODELS[name]["revision"]


def _check_name(name):
    if name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else f"available: {', '.join(sorted(_MODELS))}"
        raise ValueError(f"unknown model {name!r}; {hint}")


def create_model(name, num_classes=1000, input_shape=None, **overrides):
    """Build the registered model `name` (randomly initialised; no pretrained weights are fetched).

    Args:
      name: a name from `list_models()`.
      num_classes: size of the classification head.
      input_shape: (H, W, C); defaults to the variant's native size (224 px, or 32 px for `*_cifar`).
      **overrides: builder arguments, e.g. `drop_path_rate=0.1`, `depths=[1, 1, 3, 1]`, `widths=[...]`.
    Models take raw pixel values in [0, 255]; normalisation is the model's first layers.
    """
    _check_name(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
    return _MODELS[name]["fn"](num_classes=num_classes, input_shape=input_shape, name=name, **overrides)
