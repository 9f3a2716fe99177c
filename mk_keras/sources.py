"""Model specs -> models: the one loader behind training, mk-transfer, mk-filters, mk-convert, export and sweeps.

    src = load_source("runs/base_garments")   # or "model.keras", "keras:MobileNetV2:imagenet", "convnext_micro_cifar"
    src.model, src.label, src.path, src.sha256, src.info   # info: dataset, classes, top1 of a run directory
    json.dumps(src.to_dict()); print(src.describe())

Specs, tried in this order (`KINDS`; grammar and conventions: docs/pretrained.md):
  - a `keras.Model` object (used as is);
  - `keras:<Name>`: `keras.applications.<Name>(weights=None)`, randomly initialised (e.g. `keras:MobileNetV2`);
  - `keras:<Name>:imagenet`: with Keras' ImageNet weights (downloaded into ~/.keras/models on first use, where
    the network allows), or `keras:<Name>:PATH.weights.h5`: with a local weights file (`Model.save_weights`);
  - `<registry model>:<PATH>.pth|.pt|.bin|.safetensors`: a PyTorch checkpoint converted into that mk_keras model
    (`mk_keras.convert.convert_checkpoint`), e.g. `convnext_tiny:/ckpt/convnext_tiny_1k_224_ema.pth`;
  - a run directory: its `model.keras`, with dataset, classes and top1 from its `metrics.json`;
  - a `.keras` file (a file named `model.keras` also gets its run directory's `metrics.json` info);
  - an mk_keras registry name (`mk_keras.list_models()`), randomly initialised.

Pretrained specs (`PRETRAINED_KINDS`) count as trained sources (`TRAINED_KINDS`). Loading a `.keras` file or a
pretrained spec runs the layers' initialisers before the weights overwrite them, which draws from Keras's seeded
random stream: build the models that must depend on the seed alone (a training target) before loading a source.
"""

import contextlib
import dataclasses
import difflib
import hashlib
import json
import os
from typing import Optional

import keras
import numpy as np

from mk_keras.convert.core import CHECKPOINT_SUFFIXES
from mk_keras.models import create_model, list_models

KERAS_PREFIX = "keras:"
IMAGENET = "imagenet"
KERAS_WEIGHTS_SUFFIX = ".weights.h5"
RUN_MODEL_FILE = "model.keras"
RUN_METRICS_FILE = "metrics.json"
# kind -> what it is, in messages
KINDS = {"object": "keras.Model object", "keras_application": "keras:<Application> model (random init)",
         "keras_weights": "keras:<Application>:imagenet|PATH.weights.h5 model (pretrained)",
         "checkpoint": "<model>:<checkpoint> PyTorch checkpoint (converted)",
         "run_dir": "run directory", "keras_file": ".keras file", "registry": "registry model (random init)"}
PRETRAINED_KINDS = ("keras_weights", "checkpoint")
TRAINED_KINDS = ("object", "run_dir", "keras_file", *PRETRAINED_KINDS)
_MAX_REASON = 300


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A loaded model and where it came from.

    kind: a `KINDS` key; spec: the spec as given (None for a model object); path: the file read (`.keras`,
    checkpoint, `.weights.h5`, or the ImageNet weights Keras downloaded; None for models built in memory);
    sha256: hex digest of that file's bytes (`keras:<Name>:imagenet` when the downloaded file cannot be found:
    `weights_sha256` of the model; None without weights); info: for a run directory's model, its metrics.json
    `dataset`, `classes`, `top1` and `status`.
    """

    model: keras.Model
    label: str
    kind: str
    spec: Optional[str] = None
    path: Optional[str] = None
    sha256: Optional[str] = None
    info: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        """JSON-ready description (no model): type, spec, label, model name, path, sha256 and the info keys."""
        return {"type": self.kind, "spec": self.spec, "label": self.label, "model": self.model.name,
                "path": self.path, "sha256": self.sha256, **self.info}

    def describe(self):
        """One line, e.g. `run directory runs/base: convnext_micro_cifar, sha256 3f2a9c1b..., digits, top1 0.812`."""
        parts = [self.model.name]
        if self.sha256:
            parts.append(f"sha256 {self.sha256[:12]}...")
        if self.info.get("dataset"):
            classes = self.info.get("classes")
            parts.append(self.info["dataset"] + (f" classes={classes}" if classes is not None else ""))
        if self.info.get("top1") is not None:
            parts.append(f"top1 {self.info['top1']:.3f}")
        return f"{KINDS[self.kind]} {self.spec or self.label}: " + ", ".join(parts)


def load_source(spec, num_classes=None, kinds=KINDS):
    """Build or load the model `spec` names (see the module docstring); returns a `ModelSource`.

    num_classes: head size of the models built here (registry names: default 10; `keras:` names: default
    1000, `:imagenet` needs 1000); loaded models (run directories, `.keras` files, checkpoints) keep their head.
    kinds: the spec kinds accepted (`KINDS` keys); e.g. `TRAINED_KINDS` refuses randomly initialised models.
    Raises FileNotFoundError for a missing path or a run directory without model.keras (unfinished run), and
    ValueError for anything else that cannot be used (a corrupt `.keras` file, an unknown model name, a failed
    download, a checkpoint that does not match its model) in one line.
    """
    kind = spec_kind(spec)
    if kind not in kinds:
        raise ValueError(f"model spec {spec!r} is a {KINDS[kind]}; allowed here: "
                         f"{', '.join(KINDS[k] for k in kinds)}")
    if kind == "object":
        return ModelSource(model=spec, label=spec.name, kind=kind)
    spec = os.fspath(spec)
    if kind in ("keras_application", "keras_weights"):
        return _application(spec, num_classes)
    if kind == "checkpoint":
        return load_converted(spec)
    if kind == "run_dir":
        return _run_dir(spec)
    if kind == "keras_file":
        return _keras_file(spec, os.path.splitext(os.path.basename(spec))[0], kind)
    model = create_model(spec, num_classes=10 if num_classes is None else num_classes)
    return ModelSource(model=model, label=spec, kind=kind, spec=spec)


def spec_kind(spec):
    """The `KINDS` entry of a spec, checking that the files it names exist and have the right type (nothing is
    loaded). Raises FileNotFoundError / ValueError in one line."""
    if isinstance(spec, keras.Model):
        return "object"
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"model spec {spec!r} must be a keras.Model, a path, keras:<Application>[:imagenet|:PATH] "
                         "or a registry name")
    spec = os.fspath(spec)
    if spec.startswith(KERAS_PREFIX):
        return "keras_weights" if keras_spec(spec)[1] is not None else "keras_application"
    if _is_checkpoint_spec(spec):
        checkpoint_spec(spec)
        return "checkpoint"
    if os.path.isdir(spec):
        return "run_dir"
    if spec.endswith(CHECKPOINT_SUFFIXES):
        raise ValueError(f"model spec {spec!r} is a PyTorch checkpoint without its model; write "
                         f"<registry model>:{spec} (e.g. convnext_tiny:{spec})")
    if os.path.isfile(spec):
        if not spec.endswith(".keras"):
            raise ValueError(f"model spec {spec!r} is not a .keras file or a run directory")
        return "keras_file"
    if spec in list_models():
        return "registry"
    if spec.endswith(".keras") or os.sep in spec or "/" in spec:
        raise FileNotFoundError(f"model spec {spec!r} does not exist; pass a .keras file or a run directory")
    close = difflib.get_close_matches(spec, list_models(), n=3, cutoff=0.6)
    hint = f"close registry names: {', '.join(close)}" if close else "see mk_keras.list_models()"
    raise ValueError(f"unknown model spec {spec!r}: not a run directory, .keras file, keras:<Application> or "
                     f"registry name ({hint})")


def keras_spec(spec):
    """(application name, weights) of `keras:<Name>[:imagenet|:PATH.weights.h5]`; weights None, "imagenet" or
    the path (checked to exist). Raises ValueError / FileNotFoundError in one line."""
    name, _, weights = os.fspath(spec)[len(KERAS_PREFIX):].partition(":")
    builder = getattr(keras.applications, name, None)
    if not callable(builder) or not name[:1].isupper():
        raise ValueError(f"unknown keras.applications model {name!r} in {spec!r}; e.g. keras:MobileNetV2, "
                         "keras:ConvNeXtTiny:imagenet")
    if not weights:
        return name, None
    if weights != IMAGENET:
        if not weights.endswith(KERAS_WEIGHTS_SUFFIX):
            raise ValueError(f"weights {weights!r} in {spec!r}: allowed {IMAGENET!r} or a {KERAS_WEIGHTS_SUFFIX} file "
                             "(Model.save_weights)")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file {weights!r} in {spec!r} does not exist")
    return name, weights


def _is_checkpoint_spec(spec):
    head, sep, tail = spec.partition(":")
    return bool(sep and head and tail) and "/" not in head and os.sep not in head and tail.endswith(
        CHECKPOINT_SUFFIXES)


def checkpoint_spec(spec):
    """(registry model, checkpoint path) of `<model>:<PATH>.pth|.pt|.bin|.safetensors`, both checked.
    Raises ValueError (unknown model, with close names) / FileNotFoundError in one line."""
    model, _, path = os.fspath(spec).partition(":")
    if model not in list_models():
        close = difflib.get_close_matches(model, list_models(), n=3, cutoff=0.6)
        hint = f"close registry names: {', '.join(close)}" if close else "see mk_keras.list_models()"
        raise ValueError(f"unknown model {model!r} in checkpoint spec {spec!r} ({hint})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} in {spec!r} does not exist")
    return model, path


def spec_file(spec):
    """The file a spec's weights come from, without loading anything: a run directory's model.keras, a
    `.keras` file, a checkpoint, a `.weights.h5` file; None for models built in memory or at random and for
    `keras:<Name>:imagenet` (its file is known after the download, `ModelSource.path`)."""
    kind = spec_kind(spec)
    if kind == "run_dir":
        return os.path.join(os.fspath(spec), RUN_MODEL_FILE)
    if kind == "keras_file":
        return os.fspath(spec)
    if kind == "checkpoint":
        return checkpoint_spec(spec)[1]
    if kind == "keras_weights":
        weights = keras_spec(spec)[1]
        return None if weights == IMAGENET else weights
    return None


def _application(spec, num_classes):
    from mk_keras.convert import application

    name, weights = keras_spec(spec)
    classes = 1000 if num_classes is None else num_classes
    with _downloads() as fetched:
        model = application(name, weights, classes)
    path, sha256 = _weights_file(weights, fetched, model)
    return ModelSource(model=model, label=spec, kind="keras_weights" if weights else "keras_application", spec=spec,
                       path=path, sha256=sha256)


def _weights_file(weights, fetched, model):
    """(path, sha256) of the weights a keras.applications model was built with."""
    if weights is None:
        return None, None
    if weights != IMAGENET:
        return weights, file_sha256(weights)
    path = next((p for p in fetched if os.path.isfile(p)), None)
    return path, file_sha256(path) if path else weights_sha256(model.weights)


def load_converted(spec, model_name=None, num_classes=None):
    """The registered mk_keras model a trained or pretrained spec gives, as a `ModelSource` (path and sha256 of
    the file its weights came from).

    Checkpoints: `convert_checkpoint` into the spec's model (`model_name`, when given, must be it); head size
    `num_classes` (default: the checkpoint's). `keras:<Name>:imagenet|PATH`: `convert_application` into
    `model_name` (default: the family converters' `KERAS_APPLICATIONS` entry); `num_classes` is the
    application's head (default 1000). Run directories and `.keras` files: loaded; their model must be the
    registered `model_name` when given. Raises ValueError / FileNotFoundError in one line.
    """
    kind = spec_kind(spec)
    allowed = ("run_dir", "keras_file", *PRETRAINED_KINDS)
    if kind not in allowed:
        raise ValueError(f"model spec {spec!r} is a {KINDS[kind]}; allowed here: "
                         f"{', '.join(KINDS[k] for k in allowed)}")
    spec = os.fspath(spec)
    if kind == "checkpoint":
        from mk_keras.convert import convert_checkpoint

        name, path = checkpoint_spec(spec)
        if model_name is not None and model_name != name:
            raise ValueError(f"checkpoint spec {spec!r} names model {name!r}, not {model_name!r}")
        model = convert_checkpoint(path, name, num_classes)
        return ModelSource(model=model, label=f"{name}:{os.path.basename(path)}", kind=kind, spec=spec, path=path,
                           sha256=file_sha256(path))
    if kind == "keras_weights":
        from mk_keras.convert import convert_application

        name, weights = keras_spec(spec)
        with _downloads() as fetched:
            model = convert_application(name, weights, model_name, 1000 if num_classes is None else num_classes)
        path, sha256 = _weights_file(weights, fetched, model)
        return ModelSource(model=model, label=spec, kind=kind, spec=spec, path=path, sha256=sha256)
    loaded = load_source(spec, kinds=(kind,))
    if model_name is not None and loaded.model.name != model_name:
        raise ValueError(f"model spec {spec!r} holds a model named {loaded.model.name!r}, not {model_name!r}")
    return loaded


@contextlib.contextmanager
def _downloads():
    """Paths Keras' `get_file` returns while active (the weights keras.applications downloads or finds cached).
    keras.applications call the private `keras.src.utils.file_utils.get_file` (Keras 3.15)."""
    from keras.src.utils import file_utils

    fetched, original = [], file_utils.get_file

    def recording(*args, **kwargs):
        path = original(*args, **kwargs)
        fetched.append(path)
        return path

    file_utils.get_file = recording
    try:
        yield fetched
    finally:
        file_utils.get_file = original


def weights_sha256(weights):
    """sha256 of the bytes of `weights` (Keras variables or arrays), in order."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return digest.hexdigest()


def _run_dir(spec):
    path = os.path.join(spec, RUN_MODEL_FILE)
    metrics = _read_metrics(os.path.join(spec, RUN_METRICS_FILE))
    if not os.path.isfile(path):
        if metrics is None:
            raise ValueError(f"directory {spec!r} is not a run directory (no {RUN_MODEL_FILE} or "
                             f"{RUN_METRICS_FILE}); pass a run directory or a .keras file")
        raise FileNotFoundError(f"run directory {spec!r} has no {RUN_MODEL_FILE} (unfinished run: its "
                                f"{RUN_METRICS_FILE} says status {metrics.get('status')!r})")
    if metrics is not None and metrics.get("status") != "finished":
        raise ValueError(f"run directory {spec!r} holds an unfinished run (its {RUN_METRICS_FILE} says status "
                         f"{metrics.get('status')!r}), so its {RUN_MODEL_FILE} may not be the trained model")
    return _keras_file(path, os.path.basename(os.path.normpath(spec)), "run_dir", spec, metrics)


def _read_metrics(path):
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path!r} ({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{path!r} holds {type(metrics).__name__}, not a metrics object")
    return metrics


def _run_info(metrics):
    settings = metrics.get("spec") or metrics.get("config") or {}
    return {"dataset": settings.get("dataset"), "classes": settings.get("classes"), "top1": metrics.get("top1"),
            "status": metrics.get("status")}


def file_sha256(path):
    """sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _keras_file(path, label, kind, spec=None, metrics=None):
    if metrics is None and os.path.basename(path) == RUN_MODEL_FILE:
        metrics = _read_metrics(os.path.join(os.path.dirname(path), RUN_METRICS_FILE))
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # a corrupt archive raises zipfile, h5py (OSError), JSON or Keras errors alike
        raise ValueError(f"cannot load model file {path!r} ({type(e).__name__}: {_one_line(e)})") from e
    if not isinstance(model, keras.Model):
        raise ValueError(f"model file {path!r} holds a {type(model).__name__}, not a keras.Model")
    return ModelSource(model=model, label=label, kind=kind, spec=spec or path, path=path, sha256=file_sha256(path),
                       info=_run_info(metrics) if metrics is not None else {})


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
