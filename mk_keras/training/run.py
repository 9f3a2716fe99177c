"""`train(...)`: the single entry point that binaries and sweeps use to run one training job.

One call: validate -> create the distribution -> load data -> (inside the strategy scope) build the model,
transfer/freeze filters, run `init_hook`, build the optimizer and compile -> resume from the run
directory's checkpoint if there is one -> fit -> evaluate -> write `model.keras` and `metrics.json`.

Run directory (see docs/training.md): flags.txt, config.json, metrics.json, transfer_report.json,
model.keras, tensorboard/, checkpoint/state.npz (deleted when the run finishes).

Training data are one endless, seeded stream of batches (the training pipeline repeated); step `g` of a run
always sees batch `g` of the stream. Resuming at step `g` skips `g` batches, so a resumed run (CPU,
`deterministic=True`) ends with the same weights and metrics as an uninterrupted one.
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time

import keras
import numpy as np

from mk_keras.analysis.master_keys import assign_master_keys
from mk_keras.filters import FILTER_KINDS
from mk_keras.models import create_model, list_models, model_family
from mk_keras.training import checkpoint, recipe
from mk_keras.training.distribute import make_distribution
from mk_keras.transfer import ORDERS, freeze_filters, transfer_filters

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
# `train(source=MASTER_KEYS)`: frozen master-key filters instead of filters copied from a trained source.
MASTER_KEYS = "master_keys"
_ARTIFACTS = ("metrics.json", "config.json", "flags.txt", "transfer_report.json", "model.keras",
              "tensorboard", CHECKPOINT_DIR)
# Settings a resumed run may change: run management, where data live, how steps are executed and distributed.
_NOT_COMPARED = ("overwrite", "verbose", "flags_text", "checkpoint_every", "eval_every", "data_dir", "manual_dir",
                 "distribution", "steps_per_execution", "jit_compile")


class TrainingFailed(RuntimeError):
    """The run stopped (NaN loss); metrics.json holds status 'failed' and the message."""


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _describe_source(source):
    if source is None or isinstance(source, str):
        return source
    if isinstance(source, os.PathLike):
        return os.fspath(source)
    return f"<keras.Model {source.name}>"


def _is_master_keys(source):
    return isinstance(source, str) and source == MASTER_KEYS


def _load_source(source):
    """A keras.Model from a model object, a `.keras` file or a run directory (its model.keras)."""
    if isinstance(source, keras.Model):
        return source, {"model": source.name}
    path = os.fspath(source)
    if os.path.isdir(path):
        run_dir, path = path, os.path.join(path, "model.keras")
        if not os.path.exists(path):
            raise FileNotFoundError(f"source run directory {run_dir!r} has no model.keras (unfinished run?)")
    elif not os.path.exists(path):
        raise FileNotFoundError(f"source {path!r} does not exist; pass a .keras file or a run directory")
    elif not path.endswith(".keras"):
        raise ValueError(f"source {path!r} is not a .keras file or a run directory")
    model = keras.saving.load_model(path, compile=False)
    info = {"path": path, "model": model.name}
    metrics_path = os.path.join(os.path.dirname(path), "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            prev = json.load(f)
        info.update(dataset=prev.get("config", {}).get("dataset"), classes=prev.get("config", {}).get("classes"),
                    top1=prev.get("top1"))
    return model, info


def _validate(cfg):
    """Checks that need no data or model build, so bad values fail before anything is loaded or written."""
    if cfg["model"] not in list_models():
        model_family(cfg["model"])  # raises with close matches
    for key, allowed in (("kind", FILTER_KINDS), ("order", ORDERS), ("lr_scaling", recipe.LR_SCALINGS)):
        if cfg[key] not in allowed:
            raise ValueError(f"{key}={cfg[key]!r}; allowed: {', '.join(allowed)}")
    positive = ("epochs", "batch_size", "steps_per_execution", "checkpoint_every")
    for key in positive:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, np.integer)) or cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]!r} must be a positive integer")
    for key in ("steps_per_epoch", "max_per_class", "eval_max_per_class"):
        if cfg[key] is not None and (not isinstance(cfg[key], (int, np.integer)) or cfg[key] < 1):
            raise ValueError(f"{key}={cfg[key]!r} must be None or a positive integer")
    if not isinstance(cfg["n"], (int, np.integer)) or isinstance(cfg["n"], bool) or cfg["n"] < 0:
        raise ValueError(f"n={cfg['n']!r} is out of range; allowed: 0..number of {cfg['kind']} layers")
    for key in ("lr", "weight_decay", "warmup_epochs", "mixup", "cutmix", "drop_path_rate"):
        if not cfg[key] >= 0:
            raise ValueError(f"{key}={cfg[key]!r} must be >= 0")
    if not 0 <= cfg["label_smoothing"] < 1:
        raise ValueError(f"label_smoothing={cfg['label_smoothing']!r} must be in [0, 1)")
    if not 0 <= cfg["min_lr_ratio"] <= 1:
        raise ValueError(f"min_lr_ratio={cfg['min_lr_ratio']!r} must be in [0, 1]")
    if not 0 <= cfg["holdout"] <= 0.5:
        raise ValueError(f"holdout={cfg['holdout']!r} must be in [0, 0.5] (0: evaluate on eval_split)")
    if not isinstance(cfg["eval_every"], int) or cfg["eval_every"] < 0:
        raise ValueError(f"eval_every={cfg['eval_every']!r} must be 0 (evaluate at the end only) or a positive "
                         "number of epochs")
    if cfg["drop_path_rate"] and not model_family(cfg["model"]).startswith("convnext"):
        raise ValueError(f"drop_path_rate={cfg['drop_path_rate']!r} is supported by convnext* models only, "
                         f"not {cfg['model']!r}")
    if cfg["n"] and cfg["source"] is None and not cfg["freeze"]:
        raise ValueError("n>0 without a source only freezes layers in place (random-frozen control); it needs "
                         "freeze=True")
    if _is_master_keys(cfg["source"]):
        _validate_master_keys(cfg)
    elif cfg["master_key_reference"] is not None:
        raise ValueError(f"master_key_reference is set but source={_describe_source(cfg['source'])!r}; it needs "
                         f"source={MASTER_KEYS!r}")
    for key in ("source", "master_key_reference"):
        if cfg[key] is not None and not isinstance(cfg[key], keras.Model) and not _is_master_keys(cfg[key]):
            path = os.fspath(cfg[key])
            if not os.path.exists(path):
                raise FileNotFoundError(f"{key} {path!r} does not exist; pass a .keras file or a run directory")
    recipe.policy_name(cfg["mixed_precision"])
    if cfg["image_size"] is not None and (len(cfg["image_size"]) != 2 or min(cfg["image_size"]) < 8):
        raise ValueError(f"image_size={cfg['image_size']!r} must be (height, width), each >= 8")


def _validate_master_keys(cfg):
    if cfg["kind"] != "depthwise":
        raise ValueError(f"kind={cfg['kind']!r} with source={MASTER_KEYS!r}; allowed: depthwise")
    if not cfg["n"]:
        raise ValueError(f"n=0 with source={MASTER_KEYS!r}; allowed: 1..number of depthwise layers")
    if not cfg["freeze"]:
        raise ValueError(f"freeze=False with source={MASTER_KEYS!r}: the keys are always frozen (their per-channel "
                         "shifts train); allowed: freeze=True")
    for key in ("kernel_map", "channel_map", "freeze_following_norm"):
        if cfg[key]:
            raise ValueError(f"{key}={cfg[key]!r} does not apply to source={MASTER_KEYS!r}; leave it unset")


def _inspect_run_dir(run_dir, overwrite, cfg):
    """Read-only check of `run_dir`: returns the checkpoint meta to resume from, or None to start fresh.

    Raises when it holds a finished run (without `overwrite`) or an unfinished run with other settings.
    """
    path = os.path.join(run_dir, "metrics.json")
    if overwrite or not os.path.exists(path):
        return None
    with open(path) as f:
        prev = json.load(f)
    if prev.get("status") == "finished":
        raise FileExistsError(f"run directory {run_dir!r} holds a finished run; pass overwrite (--overwrite) to "
                              "replace it, or choose another run directory")
    old = {k: v for k, v in prev.get("config", {}).items() if k not in _NOT_COMPARED}
    new = json.loads(json.dumps({k: v for k, v in cfg.items() if k not in _NOT_COMPARED}, default=_json_default))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        raise ValueError(f"run directory {run_dir!r} holds an unfinished run with other settings ({diff}); pass "
                         "overwrite (--overwrite) to start over, or choose another run directory")
    return checkpoint.read_meta(os.path.join(run_dir, CHECKPOINT_DIR))


def _split_holdout(loaded, fraction):
    """(train, held-out) LoadedDatasets: every round(1/fraction)-th example is held out."""
    import tensorflow as tf

    every = max(2, round(1 / fraction))
    total = loaded.info.num_examples
    held = len(range(0, total, every))

    def part(keep_held, split, count):
        ds = loaded.dataset.enumerate().filter(lambda i, xy: tf.equal(i % every == 0, keep_held))
        info = dataclasses.replace(loaded.info, split=split, num_examples=count)
        return dataclasses.replace(loaded, dataset=ds.map(lambda i, xy: xy), info=info)

    return (part(False, f"{loaded.info.split}[rest of 1/{every}]", total - held),
            part(True, f"{loaded.info.split}[every {every}th]", held))


def _truncate(loaded, count):
    """The first `count` examples: JAX data-parallel evaluation needs every batch to split evenly over the
    devices, so up to (devices - 1) evaluation examples are left out (the metrics record `num_examples`)."""
    log.warning("evaluating on %d of %d %s examples (a multiple of the devices)", count, loaded.info.num_examples,
                loaded.info.split)
    info = dataclasses.replace(loaded.info, split=f"{loaded.info.split}[:{count}]", num_examples=count)
    return dataclasses.replace(loaded, dataset=loaded.dataset.take(count), info=info)


def _info_dict(info):
    return json.loads(json.dumps(dataclasses.asdict(info), default=_json_default))


def _param_counts(model, frozen_layers):
    def size(weights):
        return int(sum(math.prod(w.shape) for w in weights))

    frozen = set(frozen_layers)
    by_name = {layer.name: layer for layer in _all_layers(model)}
    return {
        "total": size(model.weights),
        "trainable": size(model.trainable_weights),
        "non_trainable": size(model.non_trainable_weights),
        # all weights of a frozen layer; only the frozen variables (a master-key kernel) of a trainable one
        "frozen": size([w for name in frozen if name in by_name for w in by_name[name].non_trainable_weights]),
    }


def _transfer_summary(report, source_info, kind, n, order, freeze):
    """metrics["transfer"]: what was copied or given master keys, and frozen; None without a report."""
    if report is None:
        return None
    out = {"source": source_info, "kind": kind, "n": n, "order": order, "freeze": freeze}
    if source_info is not None and source_info.get("type") == MASTER_KEYS:
        return {**out, "layers": report.frozen_layers, "master_keys": [
            {"layer": e.layer, "key_counts": e.key_counts, "mean_cosine": e.mean_cosine} for e in report.entries]}
    return {**out, "layers": [e.target_layer for e in report.entries]}


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _scalar(value):
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


class _RunMonitor(keras.callbacks.Callback):
    """Per-epoch records, metrics.json updates, step/epoch checkpoints, NaN detection, metric-state restore."""

    def __init__(self, state, steps_per_epoch, write_metrics, checkpoint_dir, checkpoint_every):
        super().__init__()
        self.state = state  # history, wall_time_s, epoch_elapsed_s, resumed_at_steps, metric values to restore
        self.steps_per_epoch = steps_per_epoch
        self.write_metrics = write_metrics
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.step = state["step"]
        self.saved_step = state["step"]
        self.nan_step = None
        self.session_start = time.time()
        self.session_wall = state["wall_time_s"]

    def _wall(self):
        return self.session_wall + time.time() - self.session_start

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_start = time.time()
        self.offset = self.step - epoch * self.steps_per_epoch  # > 0 only in a resumed, partial epoch
        self.prior_epoch_s = self.state["epoch_elapsed_s"] if self.offset else 0.0

    def _add_saved_metric_state(self):
        """Add the checkpoint's partial-epoch metric sums (all metrics here are sums: totals and counts).

        Done after the first resumed step, when Keras has built the metrics; `v.assign(read + saved)` is
        exact under tf.distribute too (on-read variables sum on read and split on assign)."""
        saved = self.state.pop("metric_values")
        variables = self.model.metrics_variables
        if [tuple(v.shape) for v in variables] != [a.shape for a in saved]:
            raise ValueError(f"checkpoint metric state ({len(saved)} variables) does not match the model's "
                             f"({len(variables)}); pass overwrite to start over")
        for v, value in zip(variables, saved):
            v.assign(checkpoint.to_numpy(v) + value)

    def on_train_batch_end(self, batch, logs=None):
        if self.offset and self.state.get("metric_values") is not None:
            self._add_saved_metric_state()
        self.step = self.epoch * self.steps_per_epoch + self.offset + batch + 1
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(_scalar(loss)):
            self.nan_step = self.nan_step or self.step
            return
        last_of_epoch = self.step % self.steps_per_epoch == 0
        if self.checkpoint_dir and not last_of_epoch and self.step - self.saved_step >= self.checkpoint_every:
            self._save(self.prior_epoch_s + time.time() - self.epoch_start)

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: _scalar(v) for k, v in (logs or {}).items()}
        if self.nan_step or not np.isfinite(logs.get("loss", 0.0)):
            self.nan_step = self.nan_step or self.step
            return
        record = {"epoch": epoch + 1, "step": self.step, **logs,
                  "lr": _scalar(self.model.optimizer.learning_rate),
                  "wall_time_s": round(self.prior_epoch_s + time.time() - self.epoch_start, 3)}
        self.state["history"].append(record)
        self.write_metrics("running", wall_time_s=self._wall())
        if self.checkpoint_dir:
            self._save(0.0)

    def _save(self, epoch_elapsed_s):
        meta = {"step": self.step, "history": self.state["history"], "wall_time_s": self._wall(),
                "epoch_elapsed_s": epoch_elapsed_s, "resumed_at_steps": self.state["resumed_at_steps"]}
        checkpoint.save_state(self.checkpoint_dir, self.model, meta)
        self.saved_step = self.step


class EpochScalars(keras.callbacks.Callback):
    """TensorBoard scalars per epoch (loss, top1, top5, lr) in `log_dir/train` and `log_dir/validation`.

    Written with TensorFlow's core summary op, so the `tensorboard` package is not needed to write them.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.writers = {}

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        meta = summary_pb2.SummaryMetadata()
        meta.plugin_data.plugin_name = "scalars"
        logs = {**(logs or {}), "lr": self.model.optimizer.learning_rate}
        for key, value in logs.items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            if split not in self.writers:
                self.writers[split] = tf.summary.create_file_writer(os.path.join(self.log_dir, split))
            with self.writers[split].as_default():
                tf.summary.write(f"epoch_{tag}", tf.constant(_scalar(value), tf.float32), step=epoch,
                                 metadata=meta.SerializeToString())
        for writer in self.writers.values():
            writer.flush()


class _KeepRawWeights(keras.callbacks.Callback):
    """Keeps the raw (non-EMA) trainable weights at the end of a partial-epoch fit, which ends by copying the
    EMA into the model; `restore()` puts the raw weights back so training continues exactly."""

    def on_epoch_end(self, epoch, logs=None):
        self.values = [checkpoint.to_numpy(v) for v in self.model.trainable_variables]

    def restore(self):
        for v, value in zip(self.model.trainable_variables, self.values):
            v.assign(value)


def train(
    *,
    model="convnext_micro_cifar",
    dataset="fashion_mnist",
    classes=None,
    run_dir=None,
    epochs=10,
    batch_size=128,
    lr=8e-4,
    lr_scaling="linear",
    weight_decay=0.05,
    warmup_epochs=1.0,
    min_lr_ratio=0.0,
    label_smoothing=0.1,
    drop_path_rate=0.0,
    ema=False,
    ema_momentum=0.999,
    augment=None,
    mixup=0.0,
    cutmix=0.0,
    image_size=None,
    max_per_class=None,
    eval_split="test",
    eval_max_per_class=None,
    holdout=0.0,
    eval_every=1,
    steps_per_epoch=None,
    steps_per_execution=8,
    checkpoint_every=100,
    seed=0,
    deterministic=False,
    distribution="auto",
    mixed_precision=False,
    jit_compile=None,
    source=None,
    n=0,
    kind="depthwise",
    order="first",
    freeze=True,
    master_key_reference=None,
    kernel_map=None,
    channel_map=None,
    freeze_following_norm=False,
    init_hook=None,
    callbacks=None,
    data_dir=None,
    manual_dir=None,
    flags_text=None,
    overwrite=False,
    verbose=None,
):
    """Train `model` on `dataset` (optionally with filters transferred from `source`) and return its metrics.

    Data: `dataset`/`classes`/`max_per_class`/`data_dir`/`manual_dir` go to `mk_keras.data.load` for the
    "train" split; evaluation uses `eval_split` (capped by `eval_max_per_class`), every `eval_every` epochs
    (0: only at the end). Pipelines: `mk_keras.data.make_pipeline` with `augment`, `mixup`, `cutmix`,
    `image_size` (default: the model's native size). `steps_per_epoch` defaults to one pass over the
    training data (full batches); a smaller value makes short epochs over the same endless stream.
    `holdout` > 0 (for tuning) evaluates on every round(1/holdout)-th training example instead, and trains
    on the others.

    Recipe: AdamW, `peak_lr = lr * batch_size / 256` (`lr_scaling="linear"`; "none": `peak_lr = lr`),
    linear warm-up for `warmup_epochs`, cosine decay to `min_lr_ratio * peak_lr`; `weight_decay` except on
    norms, biases and frozen weights; `label_smoothing`; `drop_path_rate` (ConvNeXt); `ema` (AdamW
    `use_ema`, evaluation and the saved model use the average); `mixed_precision` (False, True =
    "mixed_bfloat16", "mixed_float16"); `jit_compile` (None: off on CPU with TensorFlow, else on);
    `steps_per_execution` (lowered to a divisor of the steps per epoch).

    Distribution: `distribution` (see `mk_keras.training.distribute`); `batch_size` is the global batch.
    Reproducibility: `seed` seeds Python, NumPy and the backend; `deterministic=True` also enables
    TensorFlow op determinism (process-wide).

    Transfer: with `source` (keras.Model, `.keras` path or run directory) the first/last (`order`) `n`
    `kind` layers are copied by `mk_keras.transfer_filters` (`kernel_map`, `channel_map`,
    `freeze_following_norm`) and frozen when `freeze`; without `source`, `n > 0` freezes the model's own
    (random) layers. `source="master_keys"` (`MASTER_KEYS`; a run directory of that name: pass
    "./master_keys") instead gives the first/last `n` depthwise layers frozen master-key kernels with a
    trainable per-channel shift (`mk_keras.analysis.assign_master_keys(shift="kernel")`; needs kind
    "depthwise", freeze True): each channel's key fitted to `master_key_reference` (keras.Model, `.keras`
    path or run directory) when given, else round-robin; the `MasterKeyReport` goes to transfer_report.json,
    its key counts to metrics["transfer"]["master_keys"]. `init_hook(model) -> dict` runs next, inside the
    strategy scope before compiling; its dict is stored under "init_hook" in the metrics. `callbacks`: extra
    Keras callbacks for `fit`.

    Run directory (`run_dir`, None: nothing written, no resume): a finished run is refused unless
    `overwrite`; an unfinished one with the same settings resumes from its last checkpoint
    (`checkpoint_every` steps and every epoch end). `flags_text` is stored as flags.txt. `verbose`: Keras
    verbosity (None: progress bar on a terminal, one line per epoch otherwise).

    Returns the metrics dict written to `run_dir/metrics.json`: "status", final test "top1"/"top5"/"loss",
    per-epoch "epochs", "params" (total/trainable/non_trainable/frozen: the weights of frozen layers and the
    frozen master-key kernels), "frozen_layers", "transfer", "init_hook", "recipe", "dataset", "config",
    "wall_time_s". Raises `TrainingFailed` on a NaN loss (status "failed"), `ValueError`/`FileNotFoundError`/
    `FileExistsError` on bad arguments before anything is written.
    """
    cfg = {k: v for k, v in locals().items() if k not in ("init_hook", "callbacks")}
    cfg["source"] = source
    cfg["init_hook"] = getattr(init_hook, "__qualname__", None if init_hook is None else repr(init_hook))
    if isinstance(image_size, (int, np.integer)):
        image_size = (image_size, image_size)
    cfg["image_size"] = None if image_size is None else tuple(int(x) for x in image_size)
    _validate(cfg)
    cfg["source"] = _describe_source(source)
    cfg["master_key_reference"] = _describe_source(master_key_reference)

    from mk_keras import data  # TensorFlow-only (tf.data)

    import tensorflow as tf  # tf.data and tf.distribute, on every backend

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        tf.config.experimental.enable_op_determinism()
    dist = make_distribution(distribution)
    if run_dir is not None:
        run_dir = os.fspath(run_dir)
        if not dist.is_chief:
            run_dir = os.path.join(run_dir, f"worker{dist.task_id}")
        resume_meta = _inspect_run_dir(run_dir, overwrite, cfg)
    else:
        resume_meta = None

    common = {"classes": classes, "seed": seed, "data_dir": data_dir, "manual_dir": manual_dir}
    train_data = data.load(dataset, split="train", max_per_class=max_per_class, **common)
    if holdout:
        train_data, eval_data = _split_holdout(train_data, holdout)
    else:
        eval_data = data.load(dataset, split=eval_split, max_per_class=eval_max_per_class, **common)
    if dist.name == "data_parallel" and eval_data.info.num_examples % dist.num_replicas:
        eval_data = _truncate(eval_data, eval_data.info.num_examples // dist.num_replicas * dist.num_replicas)
    num_classes = train_data.info.num_classes
    num_examples = train_data.info.num_examples
    if batch_size % dist.num_replicas:
        raise ValueError(f"batch_size={batch_size} must be divisible by the {dist.num_replicas} replicas")
    if num_examples < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} training examples of {dataset!r}")
    steps = steps_per_epoch or num_examples // batch_size
    # Keras 3 runs several steps per call in a tf.while_loop that fails under Mirrored/MultiWorker strategies
    # ("You must feed a value for placeholder tensor", keras-team/keras#19246): one step per call there.
    spe = 1 if dist.name in ("mirrored", "multi_worker") else recipe.divisor_at_most(steps, steps_per_execution)
    total_steps = epochs * steps
    warmup_steps = int(round(warmup_epochs * steps))
    peak_lr = recipe.peak_learning_rate(lr, batch_size, lr_scaling)
    if _is_master_keys(source):
        reference, reference_info = (_load_source(master_key_reference) if master_key_reference is not None
                                     else (None, None))
        source_model, source_info = None, {"type": MASTER_KEYS, "reference": reference_info}
    else:
        source_model, source_info = _load_source(source) if source is not None else (None, None)

    with dist.scope():
        with recipe.precision_policy(mixed_precision) as precision:  # layers take the policy when built
            overrides = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
            shape = None if image_size is None else (*cfg["image_size"], 3)
            net = create_model(model, num_classes, input_shape=shape, **overrides)
            height, width, channels = net.input_shape[1:]
            if _is_master_keys(source):
                net, report = assign_master_keys(net, n, reference=reference, order=order, shift="kernel")
            elif source_model is not None:
                report = transfer_filters(source_model, net, n, kind, order, freeze, True, kernel_map, channel_map,
                                          freeze_following_norm)
            elif n:
                report = freeze_filters(net, n, kind, order, freeze_following_norm)
            else:
                report = None
            hook_result = init_hook(net) if init_hook is not None else None
            schedule = recipe.lr_schedule(peak_lr, total_steps, warmup_steps, min_lr_ratio)
            optimizer = recipe.make_optimizer(net, schedule, weight_decay, ema, ema_momentum)
            recipe.compile_model(net, optimizer, num_classes, label_smoothing, jit_compile, spe)
            _build_training_state(net, num_classes)
            if dist.name == "multi_worker":
                _build_for_multi_worker(net)

        pipeline = {"batch_size": batch_size, "image_size": (height, width), "channels": channels,
                    "deterministic": deterministic}
        train_pipe = data.make_pipeline(train_data, training=True, augment=augment, mixup=mixup, cutmix=cutmix,
                                        shuffle_seed=seed, drop_remainder=True, **pipeline)
        eval_pipe = data.make_pipeline(eval_data, training=False, **pipeline).apply(
            tf.data.experimental.assert_cardinality(math.ceil(eval_data.info.num_examples / batch_size)))

        frozen_layers = report.frozen_layers if report is not None else []
        metrics = {
            "status": "running",
            "model": model,
            "backend": keras.backend.backend(),
            "dataset": _info_dict(train_data.info),
            "eval_dataset": _info_dict(eval_data.info),
            "recipe": {"global_batch_size": batch_size, "peak_lr": peak_lr, "warmup_steps": warmup_steps,
                       "steps_per_epoch": steps, "total_steps": total_steps, "steps_per_execution": spe,
                       "jit_compile": net.jit_compile, "precision": precision,
                       "distribution": dist.describe()},
            "params": _param_counts(net, frozen_layers),
            "frozen_layers": frozen_layers,
            "transfer": _transfer_summary(report, source_info, kind, n, order, freeze),
            "init_hook": hook_result,
            "config": cfg,
        }
        if run_dir is not None:
            _prepare_run_dir(run_dir, overwrite, cfg, flags_text, report, source_info)
        state = {"step": 0, "history": [], "wall_time_s": 0.0, "epoch_elapsed_s": 0.0, "resumed_at_steps": [],
                 "metric_values": None}
        ckpt_dir = None if run_dir is None else os.path.join(run_dir, CHECKPOINT_DIR)
        if resume_meta is not None:
            meta, metric_values = checkpoint.restore_state(ckpt_dir, net)
            state.update(meta, metric_values=metric_values)
            state["resumed_at_steps"] = [*meta["resumed_at_steps"], meta["step"]]
            log.info("resuming %s at step %d of %d", run_dir, meta["step"], total_steps)

        def write_metrics(status, **extra):
            metrics.update(status=status, epochs=state["history"], epochs_completed=len(state["history"]),
                           resumed_at_steps=state["resumed_at_steps"], **extra)
            if run_dir is not None:
                _write_json(os.path.join(run_dir, "metrics.json"), metrics)

        write_metrics("running", wall_time_s=state["wall_time_s"])
        monitor = _RunMonitor(state, steps, write_metrics, ckpt_dir, checkpoint_every)
        fit_callbacks = [keras.callbacks.TerminateOnNaN(), monitor, *(callbacks or [])]
        if run_dir is not None:
            fit_callbacks.append(EpochScalars(os.path.join(run_dir, "tensorboard")))
        if ema and eval_every:
            fit_callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
        verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
        try:
            _fit(net, train_pipe.repeat(), eval_pipe, state["step"], steps, epochs, eval_every, fit_callbacks,
                 verbose, ema)
            if monitor.nan_step:
                raise TrainingFailed(
                    f"loss became NaN or infinite at step {monitor.nan_step} (epoch "
                    f"{(monitor.nan_step - 1) // steps + 1}); lower the learning rate (lr={lr}) or check the data"
                )
        except Exception as e:
            write_metrics("failed", error=str(e).splitlines()[0] if str(e) else type(e).__name__,
                          wall_time_s=monitor._wall())
            raise
        last = state["history"][-1] if state["history"] else {}
        if "val_top1" in last and last["epoch"] == epochs:
            final = {k: last[f"val_{k}"] for k in ("loss", "top1", "top5")}
        else:
            final = {k: float(v) for k, v in net.evaluate(eval_pipe, return_dict=True, verbose=0).items()}
        if run_dir is not None:
            net.save(os.path.join(run_dir, "model.keras"))
        write_metrics("finished", **final, train={k: last.get(k) for k in ("loss", "top1", "top5")},
                      wall_time_s=monitor._wall())
        if ckpt_dir is not None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return metrics


def _build_training_state(net, num_classes):
    """Create the optimizer, loss and metric variables now, from shapes: a train function whose first trace
    creates variables is traced twice by TensorFlow (once more without variable creation)."""
    shape = (1, *net.input_shape[1:])
    net._symbolic_build(data_batch=(np.zeros(shape, "float32"), np.zeros((1, num_classes), "float32")))


def _build_for_multi_worker(net):
    """Work around Keras 3 bugs under MultiWorkerMirroredStrategy (keras-team/keras#20585, open):

    - `fit`/`evaluate` first reduce a real input batch across workers to build the model symbolically, which
      fails: skip that step (`_build_training_state` already built everything from shapes);
    - each step's scalar metric results are reduced with `strategy.reduce("MEAN", v, axis=0)`, which fails
      on scalars: return them with shape [1] (the reduction then averages them over all replicas).
    Epoch logs are unaffected: Keras reads them from the metric variables, summed over replicas.
    """
    net._maybe_symbolic_build = lambda *args, **kwargs: None
    for name in ("train_step", "test_step"):
        step = getattr(net, name)
        setattr(net, name, lambda data, step=step: {k: keras.ops.reshape(v, (1,)) for k, v in step(data).items()})


def _fit(net, stream, eval_pipe, start, steps, epochs, eval_every, callbacks, verbose, ema):
    """Fit from global step `start` to `epochs * steps`, a resumed partial epoch first."""
    validation = {"validation_data": eval_pipe, "validation_freq": eval_every} if eval_every else {}
    epoch, offset = divmod(start, steps)
    if offset:
        keep = _KeepRawWeights()
        net.fit(stream.skip(start), initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps - offset,
                callbacks=[*callbacks, keep] if ema else callbacks, verbose=verbose, shuffle=False, **validation)
        if ema:
            keep.restore()
        if net.stop_training:
            return
        epoch += 1
    if epoch < epochs:
        net.fit(stream.skip(epoch * steps), initial_epoch=epoch, epochs=epochs, steps_per_epoch=steps,
                callbacks=callbacks, verbose=verbose, shuffle=False, **validation)
    elif ema:  # every epoch was done before the restart: apply the average as fit would have
        net.optimizer.finalize_variable_values(net.trainable_variables)


def _prepare_run_dir(run_dir, overwrite, cfg, flags_text, report, source_info):
    """Create `run_dir` (clearing this module's artifacts when `overwrite`) and write the static files."""
    if overwrite:
        for name in _ARTIFACTS:
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(run_dir, exist_ok=True)
    _write_json(os.path.join(run_dir, "config.json"), cfg)
    if flags_text is not None:
        with open(os.path.join(run_dir, "flags.txt"), "w") as f:
            f.write(flags_text)
    if report is not None:
        _write_json(os.path.join(run_dir, "transfer_report.json"), {"source": source_info, **report.to_dict()})
