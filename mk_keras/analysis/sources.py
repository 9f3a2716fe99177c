"""Model specs for analysis: run directories, `.keras` files, `keras:<Application>` names and registry names."""

import os

import keras

from mk_keras.analysis import layers  # noqa: F401  (registers MasterKeyDepthwiseConv2D for loading)
from mk_keras.models import create_model, list_models

KERAS_PREFIX = "keras:"
RUN_MODEL_FILE = "model.keras"


def load_model(spec):
    """Build or load the model a spec names; returns `(label, keras.Model)`.

    Specs, tried in this order:
      - a run directory holding `model.keras` (label: the directory name);
      - a `.keras` file (label: the file name without extension);
      - `keras:<Name>`: `keras.applications.<Name>(weights=None)`, randomly initialised (e.g. `keras:MobileNetV2`);
      - an mk_keras registry name (`list_models()`), randomly initialised with 10 classes.
    Raises FileNotFoundError for a missing path and ValueError for anything else that cannot be used.
    """
    spec = str(spec)
    if os.path.isdir(spec):
        path = os.path.join(spec, RUN_MODEL_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"run directory {spec!r} has no {RUN_MODEL_FILE}")
        return os.path.basename(os.path.normpath(spec)), _load_file(path)
    if spec.endswith(".keras"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"model file {spec!r} does not exist")
        return os.path.splitext(os.path.basename(spec))[0], _load_file(spec)
    if spec.startswith(KERAS_PREFIX):
        name = spec[len(KERAS_PREFIX):]
        builder = getattr(keras.applications, name, None)
        if not callable(builder) or not name[:1].isupper():
            raise ValueError(f"unknown keras.applications model {name!r} in {spec!r}; e.g. keras:MobileNetV2")
        return spec, builder(weights=None)
    if spec in list_models():
        return spec, create_model(spec, num_classes=10)
    raise ValueError(
        f"cannot use model {spec!r}: not a run directory, .keras file, keras:<Application> or registry name "
        "(see mk_keras.list_models())"
    )


def _load_file(path):
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # a corrupt or foreign file raises anything from zipfile, h5py or Keras
        raise ValueError(f"cannot read model file {path!r}: {type(err).__name__}: {err}") from err
