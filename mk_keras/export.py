"""SavedModel export with provenance metadata, and verification that the frozen filters survived.

An export directory (default `saved_models/<run name>/`) holds:

- a TF SavedModel (`saved_model.pb`, `variables/`) with two signatures, both taking raw images of the
  model's input size (H, W, C) with pixel values in [0, 255] and returning `{"probabilities": float32
  [batch, classes]}` (softmax of the logits; normalisation is inside the model):
  `serving_default` takes `uint8` images, `serve_float32` takes `float32` images;
- `model.keras`, the Keras archive the SavedModel was made from;
- `mk_keras_metadata.json`: source, datasets and splits, n/kind/order, frozen layers, the sha256 of every
  frozen kernel's bytes, the transfer proofs (per transferred frozen kernel: the sha256 recorded by
  `transfer_filters` for the kernel it assigned and for the source kernel it copied), class names,
  mk_keras/Keras/TensorFlow versions.

`verify_saved_model` proves the frozen kernels against the source, not only against the export: the
exported kernels must carry the hashes of the transfer report (the run directory's transfer_report.json,
or the copy in the metadata when the run directory is gone), and the source model (the report's
`source.path`, a `.keras` file or run directory), when reachable, must still hold kernels with the
recorded pre-mapping hashes.

Export needs the TensorFlow backend. Models trained on JAX export through their `.keras` file (a run
directory's `model.keras`), loaded under TensorFlow; `mk-export` switches to TensorFlow by itself.
"""

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np

from mk_keras.filters import filter_layers, iter_layers
from mk_keras.sources import file_sha256, load_source
from mk_keras.transfer import array_sha256

METADATA_FILE = "mk_keras_metadata.json"
KERAS_FILE = "model.keras"
TRANSFER_REPORT = "transfer_report.json"
EXPORT_ROOT = "saved_models"
SIGNATURES = {"serving_default": "uint8", "serve_float32": "float32"}
FORMAT = "mk_keras.export/1"
# The frozen kernels, in metadata order, as a variable collection of the SavedModel.
_COLLECTION = "mk_frozen_kernels"


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _load_keras(path):
    """The model of a `.keras` file, through the package's one model loader (one-line errors)."""
    return load_source(path, kinds=("keras_file",)).model


def frozen_kernels(model, frozen_variables=()):
    """`(layer name, variable)` for every kernel of every frozen (`trainable=False`) layer, every kernel
    frozen at the variable level in a trainable layer (a `MasterKeyDepthwiseConv2D`'s master keys, a
    `SeparableConv2D` half), and every kernel whose path is in `frozen_variables` (variable-level freezes
    recorded in a transfer report: `.keras` files do not keep them), in forward order."""
    named = set(frozen_variables)
    return [
        (layer.name, w)
        for layer in iter_layers(model)
        for w in layer.weights
        if w.name.endswith("kernel") and (not layer.trainable or not w.trainable or w.path in named)
    ]


def _frozen_layer_names(model, kernels):
    """Frozen layers and layers with a frozen kernel, in forward order."""
    frozen = {name for name, _ in kernels}
    return [layer.name for layer in iter_layers(model)
            if layer.weights and (not layer.trainable or layer.name in frozen)]


def _kernel_records(kernels):
    return [
        {
            "layer": layer,
            "variable": v.path,
            "shape": list(v.shape),
            "dtype": keras.backend.standardize_dtype(v.dtype),
            "sha256": array_sha256(keras.ops.convert_to_numpy(v)),
        }
        for layer, v in kernels
    ]


def _run_source(run_dir):
    """Check a run directory and return `(model.keras path, run info dict)`."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run directory {run_dir!r} does not exist")
    metrics_path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(metrics_path):
        raise FileNotFoundError(f"{run_dir!r} is not a run directory: it has no metrics.json")
    metrics = _read_json(metrics_path)
    status = metrics.get("status")
    if status != "finished":
        raise ValueError(f"run directory {run_dir!r} holds an unfinished run (status {status!r}); export a "
                         "finished run")
    keras_path = os.path.join(run_dir, KERAS_FILE)
    if not os.path.isfile(keras_path):
        raise FileNotFoundError(f"run directory {run_dir!r} has no {KERAS_FILE}")
    report_path = os.path.join(run_dir, TRANSFER_REPORT)
    report = _read_json(report_path) if os.path.isfile(report_path) else None
    return keras_path, {"metrics": metrics, "report": report}


def _transfer_fields(report, metrics):
    """n, kind, order, freeze and the filter source, from transfer_report.json or metrics["transfer"]."""
    transfer = report or metrics.get("transfer") or {}
    config = metrics.get("spec") or metrics.get("config") or {}
    fields = {key: transfer.get(key, config.get(key)) for key in ("n", "kind", "order", "freeze")}
    fields["filter_source"] = transfer.get("source", config.get("source"))
    return fields


def transfer_proofs(report):
    """The proofs in a transfer report dict (`TransferReport.to_dict()`, transfer_report.json): one record per
    frozen transferred kernel with its variable path, the sha256 assigned (`sha256`) and, for a copy, the
    source layer, its filter index and the sha256 of the source kernel before mapping. [] for reports without
    hashes (master keys, older runs)."""
    return [
        {"layer": e["target_layer"], "variable": e["variable"], "sha256": e["kernel_sha256"],
         "source_layer": e.get("source_layer"), "source_index": e.get("source_index"),
         "source_sha256": e.get("source_sha256")}
        for e in (report or {}).get("entries", [])
        if e.get("frozen") and e.get("kernel_sha256") and e.get("variable")
    ]


def _dataset_fields(info):
    if not info:
        return None
    keys = ("spec", "split", "classes_spec", "num_classes", "num_examples", "max_per_class", "image_shape",
            "class_mapping")
    return {key: info.get(key) for key in keys}


def _versions():
    import tensorflow as tf

    import mk_keras

    return {"mk_keras": mk_keras.__version__, "keras": keras.__version__, "tensorflow": tf.__version__,
            "python": sys.version.split()[0]}


def _write_saved_model(model, path, kernels):
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    shape = [None, *model.input_shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
    def serve_float32(images):
        logits = model(images, training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name="images")])
    def serve_uint8(images):
        return serve_float32(tf.cast(images, tf.float32))

    archive.add_endpoint("serving_default", serve_uint8)
    archive.add_endpoint("serve_float32", serve_float32)
    archive.add_variable_collection(_COLLECTION, [v for _, v in kernels])
    archive.write_out(path, verbose=False)


def default_export_path(model_or_run_dir):
    """`saved_models/<run directory name | .keras file stem | model name>`."""
    if isinstance(model_or_run_dir, keras.Model):
        name = model_or_run_dir.name
    else:
        path = os.path.normpath(os.fspath(model_or_run_dir))
        name = os.path.splitext(os.path.basename(path))[0] if path.endswith(".keras") else os.path.basename(path)
    return os.path.join(EXPORT_ROOT, name)


def export_saved_model(model_or_run_dir, path=None, overwrite=False, class_names=None, transfer=None):
    """Export a model as a SavedModel + `model.keras` + `mk_keras_metadata.json` in directory `path`.

    Args:
      model_or_run_dir: a finished run directory (its `model.keras`, metrics.json, transfer_report.json),
        a `.keras` file, or a built `keras.Model` (TensorFlow backend).
      path: the export directory; default `default_export_path(model_or_run_dir)`. An existing one is
        refused unless `overwrite`; it is replaced only once the new export is complete.
      class_names, transfer: for a model or `.keras` file, the class names and the `TransferReport` (or its
        dict) to record; a run directory supplies both itself.
    Frozen layers are the model's `trainable=False` layers and those with a frozen kernel variable (master
    keys); a model without any still exports, with `"frozen_layers": []` in the metadata. Returns the export
    directory.
    Raises FileNotFoundError / FileExistsError / ValueError (bad source, existing path, corrupt `.keras`,
    unfinished run, non-TensorFlow backend) before anything is written.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"SavedModel export needs the TensorFlow backend, not {keras.backend.backend()!r}: save the "
                         "model as .keras and export that file with KERAS_BACKEND=tensorflow (mk-export does so)")
    path = os.fspath(path) if path is not None else default_export_path(model_or_run_dir)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"export path {path!r} exists; pass overwrite (--overwrite) to replace it")

    metrics, report, keras_path = {}, None, None
    if isinstance(model_or_run_dir, keras.Model):
        model, source = model_or_run_dir, {"type": "model", "path": None}
    else:
        src = os.fspath(model_or_run_dir)
        if src.endswith(".keras") and not os.path.isdir(src):
            if not os.path.isfile(src):
                raise FileNotFoundError(f"model file {src!r} does not exist")
            keras_path, source = src, {"type": "keras_file", "path": os.path.abspath(src)}
        else:
            keras_path, info = _run_source(src)
            metrics, report = info["metrics"], info["report"]
            source = {"type": "run_dir", "path": os.path.abspath(src), "trained_backend": metrics.get("backend"),
                      "top1": metrics.get("top1")}
        model = _load_keras(keras_path)
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"expected a built keras.Model, got {type(model).__name__}")
    if hasattr(transfer, "to_dict"):
        transfer = transfer.to_dict()
    train_info = metrics.get("dataset") or {}
    transfer_report = report or transfer
    kernels = frozen_kernels(model, (transfer_report or {}).get("frozen_variables", ()))
    metadata = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {**source, "model": metrics.get("model") or model.name},
        "datasets": {"train": _dataset_fields(train_info), "eval": _dataset_fields(metrics.get("eval_dataset"))},
        **_transfer_fields(report or transfer, metrics),
        "frozen_layers": _frozen_layer_names(model, kernels),
        "frozen_kernels": _kernel_records(kernels),
        "transfer_proofs": transfer_proofs(transfer_report),
        "class_names": list(class_names) if class_names is not None else train_info.get("class_names"),
        "input": {"shape": list(model.input_shape[1:]), "range": [0, 255], "signatures": SIGNATURES},
        "output": {"key": "probabilities", "classes": int(model.output_shape[-1]),
                   "meaning": "softmax over the model's logits"},
        "versions": _versions(),
    }
    if not metadata["frozen_layers"]:
        metadata["note"] = "the model has no frozen layers"

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        _write_saved_model(model, tmp, kernels)
        if keras_path is not None:
            shutil.copyfile(keras_path, os.path.join(tmp, KERAS_FILE))
        else:
            model.save(os.path.join(tmp, KERAS_FILE))
        metadata["keras_file_sha256"] = file_sha256(os.path.join(tmp, KERAS_FILE))
        with open(os.path.join(tmp, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=1, default=str)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old.", dir=parent)
            os.rename(path, os.path.join(old, "export"))
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(os.path.join(old, "export"), path)
                os.rmdir(old)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# Runs in a fresh interpreter with TensorFlow only: load the SavedModel, answer the batch through every
# signature, hash the frozen-kernel collection.
_PROBE = r"""
import hashlib, json, sys
import numpy as np
import tensorflow as tf

path, inputs, out = sys.argv[1:4]
loaded = tf.saved_model.load(path)
images = np.load(inputs)
result = {"outputs": {}, "kernels": []}
for name, dtype in json.loads(sys.argv[4]).items():
    fn = loaded.signatures[name]
    result["outputs"][name] = fn(images=tf.constant(images.astype(dtype)))["probabilities"].numpy().tolist()
for v in getattr(loaded, "mk_frozen_kernels", []):
    value = np.ascontiguousarray(v.numpy())
    result["kernels"].append({"variable": v.name.rsplit(":", 1)[0],
                              "sha256": hashlib.sha256(value.tobytes()).hexdigest()})
with open(out, "w") as f:
    json.dump(result, f)
"""


@dataclasses.dataclass
class VerifyResult:
    """Outcome of `verify_saved_model`; `str()` is the printable verdict."""

    path: str
    max_abs_diff: dict  # signature name -> max |SavedModel - Keras| over the batch
    atol: float
    kernels_checked: int
    kernels_differing: list  # variable paths whose bytes differ anywhere (SavedModel, Keras model, proofs)
    problems: list
    proofs_checked: int = 0  # transferred frozen kernels checked against the transfer report's hashes
    source_checked: str | None = None  # the source .keras file whose kernels were checked, if any
    notes: list = dataclasses.field(default_factory=list)  # what could not be checked, and why

    @property
    def ok(self):
        return not self.problems

    def __str__(self):
        diffs = ", ".join(f"{name} {d:.2e}" for name, d in self.max_abs_diff.items()) or "not compared"
        same = self.kernels_checked - len(self.kernels_differing)
        lines = [f"verify {self.path}: {'OK' if self.ok else 'FAILED'}",
                 f"  outputs vs Keras model: max |diff| {diffs} (tolerance {self.atol:g})",
                 f"  frozen kernels: {same}/{self.kernels_checked} bit-identical",
                 f"  transfer proofs: {self.proofs_checked} kernels checked against {TRANSFER_REPORT}"
                 + (f", source kernels against {self.source_checked}" if self.source_checked else "")]
        return "\n".join(lines + [f"  - {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes])


def _probe(path, images, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        inputs, out = os.path.join(tmp, "images.npy"), os.path.join(tmp, "result.json")
        np.save(inputs, images)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        try:
            proc = subprocess.run([sys.executable, "-c", _PROBE, path, inputs, out, json.dumps(SIGNATURES)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return None, f"tf.saved_model.load in a fresh process did not finish within {timeout} s"
        if proc.returncode:
            tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
            return None, f"tf.saved_model.load in a fresh process failed: {tail}"
        return _read_json(out), None


def verify_saved_model(path, model=None, batch_size=8, atol=1e-5, seed=0, timeout=600):
    """Check an export directory made by `export_saved_model`.

    Reloads the SavedModel with `tf.saved_model.load` in a fresh process, runs a seeded batch of random
    uint8 images through every signature and compares the probabilities with the Keras model's (`model`,
    default the export's `model.keras`; pass `atol` for the float32 tolerance). Checks that every frozen
    kernel in the SavedModel's variables, and in the Keras model, has the sha256 recorded in the metadata,
    and that `model.keras` is the archive exported. Then proves the frozen kernels against the transfer:
    each transferred frozen kernel must have the sha256 `transfer_filters` recorded when it assigned it (from
    the run directory's transfer_report.json, else the copy in the metadata), and the source model, when its
    recorded path is reachable, must hold source kernels with the recorded pre-mapping sha256. Returns a
    `VerifyResult` (`.ok`, printable verdict; `notes` says what could not be checked).
    """
    path = os.fspath(path)
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{path!r} is not an mk_keras export: it has no {METADATA_FILE}")
    metadata = _read_json(meta_path)
    problems = []
    keras_path = os.path.join(path, KERAS_FILE)
    if model is None:
        if not os.path.isfile(keras_path):
            raise FileNotFoundError(f"export {path!r} has no {KERAS_FILE}; pass the Keras model to compare with")
        if file_sha256(keras_path) != metadata.get("keras_file_sha256"):
            problems.append(f"{KERAS_FILE} differs from the exported archive (sha256 mismatch)")
        model = _load_keras(keras_path)

    shape = metadata["input"]["shape"]
    if None in shape:
        raise ValueError(f"export {path!r} takes images of unknown size {shape}; verification needs a fixed input "
                         "size")
    images = np.random.default_rng(seed).integers(0, 256, size=(batch_size, *shape), dtype=np.uint8)
    logits = model(images.astype("float32"), training=False)
    reference = keras.ops.convert_to_numpy(keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1))

    recorded = metadata["frozen_kernels"]
    differing = []
    weights = {w.path: w for w in model.weights}
    for r in recorded:
        w = weights.get(r["variable"])
        if w is None or array_sha256(keras.ops.convert_to_numpy(w)) != r["sha256"]:
            differing.append(r["variable"])
            problems.append(f"kernel {r['variable']} of the Keras model "
                            f"{'is missing' if w is None else 'differs from the metadata'}")

    proofs, notes = _proofs_to_check(metadata, problems)
    by_variable = {r["variable"]: r for r in recorded}
    for proof in proofs:
        r = by_variable.get(proof["variable"])
        if r is None:
            differing.append(proof["variable"])
            problems.append(f"layer {proof['layer']}: transferred frozen kernel {proof['variable']} is not among the "
                            "export's frozen kernels")
        elif r["sha256"] != proof["sha256"]:
            differing.append(proof["variable"])
            problems.append(f"layer {proof['layer']}: frozen kernel {proof['variable']} changed after the transfer "
                            f"(sha256 {r['sha256'][:12]} in the export vs {proof['sha256'][:12]} assigned by the "
                            "transfer)")
    source_checked = _check_source(metadata, proofs, problems, notes)

    result, error = _probe(path, images, timeout)
    max_abs_diff = {}
    if error:
        problems.append(error)
    else:
        for name, out in result["outputs"].items():
            diff = float(np.max(np.abs(np.asarray(out, dtype=np.float32) - reference)))
            max_abs_diff[name] = diff
            if not diff <= atol:
                problems.append(f"signature {name}: max |diff| {diff:.3g} > {atol:g}")
        saved = result["kernels"]
        if [s["variable"] for s in saved] != [r["variable"] for r in recorded]:
            differing.extend(r["variable"] for r in recorded)
            problems.append(f"the SavedModel's frozen kernels {[s['variable'] for s in saved]} are not the "
                            f"recorded {[r['variable'] for r in recorded]}")
        else:
            for r, s in zip(recorded, saved):
                if s["sha256"] != r["sha256"]:
                    differing.append(r["variable"])
                    problems.append(f"kernel {r['variable']} in the SavedModel differs from the source model "
                                    f"(sha256 {s['sha256'][:12]} vs {r['sha256'][:12]})")
    return VerifyResult(path, max_abs_diff, atol, len(recorded), sorted(set(differing)), problems, len(proofs),
                        source_checked, notes)


def _proofs_to_check(metadata, problems):
    """The transfer proofs: from the run directory's transfer_report.json when reachable, else the metadata's."""
    proofs, notes = metadata.get("transfer_proofs") or [], []
    source = metadata.get("source") or {}
    report_path = os.path.join(source["path"], TRANSFER_REPORT) if source.get("type") == "run_dir" else None
    if report_path is not None and os.path.isfile(report_path):
        current = transfer_proofs(_read_json(report_path))
        if current != proofs:
            problems.append(f"{report_path} does not hold the transfer proofs recorded at export")
        proofs = current
    elif report_path is not None and proofs:
        notes.append(f"{report_path} is not reachable: proofs taken from the copy in {METADATA_FILE}")
    if not proofs and metadata.get("frozen_kernels"):
        notes.append("no transfer proofs recorded (not a filter transfer, or a report without kernel hashes): "
                     "frozen kernels checked against the export's own hashes only")
    return proofs, notes


def _check_source(metadata, proofs, problems, notes):
    """Compare the source model's kernels with the proofs' pre-mapping hashes; returns the file checked."""
    proofs = [p for p in proofs if p.get("source_sha256")]
    if not proofs:
        return None
    source = metadata.get("filter_source")
    path = source.get("path") if isinstance(source, dict) else source
    if not isinstance(path, str):
        notes.append("no source path recorded: source kernels not checked")
        return None
    keras_path = os.path.join(path, KERAS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(keras_path):
        notes.append(f"source model {path} is not reachable: source kernels not checked")
        return None
    try:
        layers = filter_layers(_load_keras(keras_path), metadata["kind"])
    except ValueError as e:
        problems.append(f"source model: {e}")
        return None
    for proof in proofs:
        index, name = proof["source_index"], proof["source_layer"]
        if not isinstance(index, int) or not 0 <= index < len(layers) or layers[index].name != name:
            problems.append(f"source model {keras_path} has no {metadata['kind']} layer {name!r} at index {index}")
            continue
        value = array_sha256(keras.ops.convert_to_numpy(layers[index].kernel))
        if value != proof["source_sha256"]:
            problems.append(f"source layer {name}: its kernel in {keras_path} is not the one transferred into "
                            f"{proof['layer']} (sha256 {value[:12]} vs {proof['source_sha256'][:12]} recorded)")
    return keras_path
