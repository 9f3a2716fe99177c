"""Model specs -> models: the one loader behind training, mk-transfer, mk-filters and export.

    src = load_source("runs/base_garments")   # or "model.keras", "keras:MobileNetV2", "convnext_micro_cifar"
    src.model, src.label, src.path, src.sha256, src.info   # info: dataset, classes, top1 of a run directory
    json.dumps(src.to_dict()); print(src.describe())

Specs, tried in this order:
  - a `keras.Model` object (used as is);
  - `keras:<Name>`: `keras.applications.<Name>(weights=None)`, randomly initialised (e.g. `keras:MobileNetV2`);
  - a run directory: its `model.keras`, with dataset, classes and top1 from its `metrics.json`;
  - a `.keras` file (a file named `model.keras` also gets its run directory's `metrics.json` info);
  - an mk_keras registry name (`mk_keras.list_models()`), randomly initialised.

Loading a `.keras` file runs the layers' initialisers before the saved weights overwrite them, which draws
from Keras's seeded random stream: build the models that must depend on the seed alone (a training target)
before loading a source.
"""

import dataclasses
import difflib
import hashlib
import json
import os
from typing import Optional

import keras

from mk_keras.models import create_model, list_models

KERAS_PREFIX = "keras:"
RUN_MODEL_FILE = "model.keras"
RUN_METRICS_FILE = "metrics.json"
# kind -> what it is, in messages
KINDS = {"object": "keras.Model object", "keras_application": "keras:<Application> model (random init)",
         "run_dir": "run directory", "keras_file": ".keras file", "registry": "registry model (random init)"}
TRAINED_KINDS = ("object", "run_dir", "keras_file")
_MAX_REASON = 300


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A loaded model and where it came from.

    kind: a `KINDS` key; spec: the spec as given (None for a model object); path: the `.keras` file read
    (None for models built in memory); sha256: hex digest of that file's bytes (None without a file);
    info: for a run directory's model, its metrics.json `dataset`, `classes`, `top1` and `status`.
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
    1000); loaded models keep their saved head.
    kinds: the spec kinds accepted (`KINDS` keys); e.g. `TRAINED_KINDS` refuses randomly initialised models.
    Raises FileNotFoundError for a missing path or a run directory without model.keras (unfinished run), and
    ValueError for anything else that cannot be used (a corrupt `.keras` file included), in one line.
    """
    kind = _kind(spec)
    if kind not in kinds:
        raise ValueError(f"model spec {spec!r} is a {KINDS[kind]}; allowed here: "
                         f"{', '.join(KINDS[k] for k in kinds)}")
    if kind == "object":
        return ModelSource(model=spec, label=spec.name, kind=kind)
    spec = os.fspath(spec)
    if kind == "keras_application":
        return _application(spec, num_classes)
    if kind == "run_dir":
        return _run_dir(spec)
    if kind == "keras_file":
        return _keras_file(spec, os.path.splitext(os.path.basename(spec))[0], kind)
    model = create_model(spec, num_classes=10 if num_classes is None else num_classes)
    return ModelSource(model=model, label=spec, kind=kind, spec=spec)


def _kind(spec):
    """The `KINDS` entry of a spec, checking that its path exists and has the right type."""
    if isinstance(spec, keras.Model):
        return "object"
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"model spec {spec!r} must be a keras.Model, a path, keras:<Application> or a registry "
                         "name")
    spec = os.fspath(spec)
    if spec.startswith(KERAS_PREFIX):
        return "keras_application"
    if os.path.isdir(spec):
        return "run_dir"
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


def _application(spec, num_classes):
    name = spec[len(KERAS_PREFIX):]
    builder = getattr(keras.applications, name, None)
    if not callable(builder) or not name[:1].isupper():
        raise ValueError(f"unknown keras.applications model {name!r} in {spec!r}; e.g. keras:MobileNetV2")
    model = builder(weights=None, classes=1000 if num_classes is None else num_classes)
    return ModelSource(model=model, label=spec, kind="keras_application", spec=spec)


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
