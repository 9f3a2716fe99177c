"""`train(spec)`: run one training job described by a `RunSpec` (binaries, sweeps and tuning all call it).

One call: resolve the spec -> create the distribution -> load data -> (inside the strategy scope) build the
target model, record its initial weights, load the source, transfer/freeze filters, run `init_hook`, build
the optimizer and compile -> resume from the run directory's checkpoint if there is one -> fit -> evaluate ->
write `model.keras` and `metrics.json` (run directory layout: `mk_keras.training.rundir`).

Pairing: the target model is built right after seeding with `init_seed`, before any source model is loaded
(loading runs Keras initialisers, which draw from the seeded stream), and the random state is seeded again
after the transfer. So at one seed every run of one model starts from bit-identical weights in each layer its
treatment does not copy, and draws the same training randomness; `metrics["initial_weights"]` holds a sha256
per layer to audit it.

Training data are one endless, seeded stream of batches (`make_pipeline(repeat=True)`: pass p over the data
shuffled with a seed made from (data_seed, p)); step `g` of a run always sees batch `g` of the stream, whichever
iterator produces it. Resuming at step `g` (the optimizer's iteration count in the checkpoint) starts the
stream at batch `g`, so a resumed run (CPU, `deterministic=True`) ends with the same weights and metrics as an
uninterrupted one, wherever it was interrupted.
"""

import dataclasses
import hashlib
import logging
import math
import os
import shutil
import sys
import time

import keras
import numpy as np

from mk_keras.filters import iter_layers
from mk_keras.master_keys import assign_master_keys
from mk_keras.models import create_model, model_revision
from mk_keras.training import checkpoint, recipe, rundir
from mk_keras.training import reuse as reuse_cache
from mk_keras.training.callbacks import EpochScalars, KeepRawWeights, RunMonitor, StepTimer
from mk_keras.training.distribute import make_distribution
from mk_keras.training.hparams import log_hparams
from mk_keras.sources import file_sha256
from mk_keras.training.spec import DELTA, EVAL_SUBSET_SEED, MASTER_KEYS, RunSpec
from mk_keras.transfer import freeze_filters, transfer_filters

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """The run stopped (NaN loss); metrics.json holds status 'failed' and the message."""


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


def _param_counts(model, frozen_layers):
    def size(weights):
        return int(sum(math.prod(w.shape) for w in weights))

    frozen = set(frozen_layers)
    by_name = {layer.name: layer for layer in iter_layers(model)}
    return {
        "total": size(model.weights),
        "trainable": size(model.trainable_weights),
        "non_trainable": size(model.non_trainable_weights),
        # all weights of a frozen layer; only the frozen variables (a master-key kernel) of a trainable one
        "frozen": size([w for name in frozen if name in by_name for w in by_name[name].non_trainable_weights]),
    }


def _transfer_summary(report, source_info, spec):
    """metrics["transfer"]: what was copied or given master keys, and frozen; None without a report."""
    if report is None:
        return None
    out = {"source": source_info, "kind": spec.kind, "n": spec.n, "order": spec.order, "freeze": spec.freeze}
    if source_info is not None and source_info.get("type") == MASTER_KEYS:
        return {**out, "layers": report.frozen_layers, "master_key_method": report.method, "master_keys": [
            {"layer": e.layer, "key_counts": e.key_counts, "mean_cosine": e.mean_cosine} for e in report.entries]}
    out["layers"] = [e.target_layer for e in report.entries]
    if report.kernel_transform:
        out.update(kernel_transform=report.kernel_transform, transform_seed=report.transform_seed)
    return out


def _versions():
    import tensorflow as tf

    import mk_keras

    out = {"mk_keras": mk_keras.__version__, "keras": keras.__version__, "tensorflow": tf.__version__}
    if keras.backend.backend() == "jax":
        import jax

        out["jax"] = jax.__version__
    return out


def _source_spec(value, what):
    """(spec string for RunSpec, in-memory keras.Model or None) of a `source` / `master_key_reference` argument."""
    if isinstance(value, keras.Model):
        return f"<keras.Model {value.name}>", value
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, os.PathLike):
        return os.fspath(value), None
    raise ValueError(f"{what}={value!r}; allowed: a keras.Model, a .keras file, a run directory"
                     + (f", {MASTER_KEYS!r} or {DELTA!r}" if what == "source" else ""))


def _source_file(value, what):
    """The file a source spec's weights come from (a run directory's model.keras, a `.keras` file, a PyTorch
    checkpoint, a `.weights.h5` file), checked to exist; None for `keras:<Name>:imagenet` (known after the
    download). Nothing is loaded yet: the target model must be built first."""
    from mk_keras.sources import KINDS, TRAINED_KINDS, spec_file, spec_kind

    try:
        kind = spec_kind(value)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"{what}: {e}") from None
    if kind not in TRAINED_KINDS:
        raise ValueError(f"{what}={value!r} is a {KINDS[kind]}; allowed: a run directory, a .keras file, "
                         "<model>:<checkpoint>.pth|.pt|.bin|.safetensors or keras:<Application>:imagenet|PATH")
    if kind == "keras_weights":
        from mk_keras.convert import application_models
        from mk_keras.sources import keras_spec

        if keras_spec(value)[0] not in application_models():
            raise ValueError(f"{what}={value!r}: keras.applications {keras_spec(value)[0]} has no mk_keras "
                             f"counterpart to convert into; converted: {', '.join(sorted(application_models()))}")
    path = spec_file(value)
    if kind == "run_dir" and not os.path.isfile(path):
        raise FileNotFoundError(f"{what} run directory {value!r} has no model.keras (unfinished run?)")
    return path


def _load(value, model, sha256=None, cache=None):
    """`(keras.Model, info dict)` of a source spec, or of the in-memory `model` given for it. Pretrained specs
    (checkpoints, `keras:<Name>:imagenet|PATH`) give the converted mk_keras model, whose layers and input
    conventions are the ones the conversion proved exact. With a `reuse.SourceCache`, a file of hash `sha256`
    already loaded in this process is not loaded again."""
    from mk_keras.sources import PRETRAINED_KINDS, TRAINED_KINDS, load_converted, load_source, spec_kind

    def load():
        if model is None and spec_kind(value) in PRETRAINED_KINDS:
            loaded = load_converted(value)
        else:
            loaded = load_source(model if model is not None else value, kinds=TRAINED_KINDS)
        return loaded.model, loaded.to_dict()

    if model is not None or cache is None:
        return load()
    return cache.load(value, sha256, load)


def _weights_sha256(weights):
    """sha256 of the bytes of `weights`, in order."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(checkpoint.to_numpy(w)).tobytes())
    return digest.hexdigest()


def initial_weight_hashes(model):
    """{layer name: sha256 of the bytes of all its weights, in order} for every layer with weights."""
    return {layer.name: _weights_sha256(layer.weights) for layer in iter_layers(model) if layer.weights}


def train(spec=None, *, run_dir=None, init_hook=None, callbacks=None, overwrite=False, verbose=None,
          flags_text=None, reuse=False, **fields):
    """Train the run `spec` describes (a `RunSpec`, or its fields as keywords) and return its metrics.

    Spec fields (see `RunSpec`):
      data: `dataset`/`classes`/`max_per_class`/`data_dir`/`manual_dir`/`drop_empty_classes` go to
        `mk_keras.data.load` for the "train" split; evaluation uses `eval_split` (with `eval_max_per_class`: one
        fixed subset, the same for every seed), every `eval_every` epochs (0: only at the end); `holdout` > 0
        (tuning) evaluates on every round(1/holdout)-th training example instead, and trains on the others.
        Pipelines: `mk_keras.data.make_pipeline` with `augment`, `mixup`, `cutmix`, `image_size` (default: the
        model's native size). `steps_per_epoch` defaults to one pass over the training data (full batches).
      seeds: `init_seed` (weights and training randomness) and `data_seed` (training subset and order) both
        default to `seed`; `deterministic=True` also enables TensorFlow op determinism (process-wide).
      recipe: AdamW, `peak_lr = lr * batch_size / 256` (`lr_scaling="linear"`; "none": `peak_lr = lr`), linear
        warm-up for `warmup_epochs`, cosine decay to `min_lr_ratio * peak_lr`; `weight_decay` except on norms,
        biases and frozen weights; `label_smoothing`; `drop_path_rate` (ConvNeXt); `ema` (evaluation and the
        saved model use the average); `mixed_precision` (False, True = "mixed_bfloat16", "mixed_float16");
        `jit_compile` (None: off on CPU with TensorFlow, else on); `steps_per_execution` (lowered to a divisor
        of the steps per epoch).
      distribution: see `mk_keras.training.distribute`; `batch_size` is the global batch.
      transfer: with `source` (a keras.Model, `.keras` path or run directory) the first/last (`order`) `n`
        `kind` layers are copied by `mk_keras.transfer_filters` (`kernel_map`, `channel_map`,
        `freeze_following_norm`) and frozen when `freeze`; without `source`, `n > 0` freezes the model's own
        (random) layers. `kernel_transform="shuffle"` permutes the spatial positions of each copied filter
        (the `shuffled` control; seeded by `init_seed`, recorded in the transfer report).
        `source="master_keys"` gives the first/last `n` depthwise layers frozen master-key kernels
        (`master_key_method` "B" or "A") with a trainable per-channel shift, fitted to `master_key_reference`
        when given; `source="delta"` freezes them at the identity filter (the `delta` control).

    Run management (not part of the spec): `run_dir` (None: nothing written, no resume; a finished run is
    refused unless `overwrite`; an unfinished one of the same spec resumes from its last checkpoint, taken every
    `checkpoint_every` steps or `checkpoint_every_s` seconds and at every epoch end, written in the background);
    `init_hook(model) -> dict` runs after build and transfer, inside the strategy scope, before compiling (its
    dict goes to metrics["init_hook"]); extra Keras `callbacks`; `flags_text` is stored as flags.txt; `verbose`
    (None: a progress bar on a terminal); `reuse=True` trains on a compiled model kept from an earlier run of
    this process with the same architecture, frozen set and recipe when there is one, skipping compiling and
    tracing, with bit-identical results (`mk_keras.training.reuse`; TensorFlow without a distribution strategy
    or mixed_float16 or `init_hook` only; elsewhere ignored). Sweeps turn it on.

    Returns the metrics dict written to `run_dir/metrics.json`: "status", final test "top1"/"top5"/"loss",
    per-epoch "epochs", "params" (total/trainable/non_trainable/frozen), "frozen_layers", "transfer",
    "initial_weights" (sha256 per layer before any transfer), "init_hook", "recipe", "dataset", "eval_dataset",
    "spec" (the resolved spec), "spec_hash", "model_revision" (`mk_keras.models.model_revision`), "wall_time_s"
    (fit, final evaluation and saving, summed over resumptions) and "timing" (this call: `_timing`). Raises
    `TrainingFailed` on a NaN loss (status "failed"), `ValueError`/`FileNotFoundError`/`FileExistsError` on bad
    arguments before anything is written.
    """
    started = time.perf_counter()
    if spec is not None and fields:
        raise ValueError(f"pass a RunSpec or its fields, not both (got spec and {sorted(fields)})")
    source_model = reference_model = None
    if spec is None:
        fields["source"], source_model = _source_spec(fields.get("source"), "source")
        fields["master_key_reference"], reference_model = _source_spec(fields.get("master_key_reference"),
                                                                       "master_key_reference")
        try:
            spec = RunSpec(**fields)
        except TypeError as e:  # an unknown keyword
            raise ValueError(f"{e}; allowed: the fields of mk_keras.training.RunSpec") from None
    elif not isinstance(spec, RunSpec):
        raise ValueError(f"spec={spec!r}; expected a mk_keras.training.RunSpec")
    hashes = {}
    for key, model in (("source", source_model), ("master_key_reference", reference_model)):
        value = getattr(spec, key)
        if model is not None:  # in memory: the hash of its weights
            hashes[f"{key}_sha256"] = _weights_sha256(model.weights)
        elif value is not None and not (key == "source" and not spec.copies_filters):
            path = _source_file(value, key)
            hashes[f"{key}_sha256"] = file_sha256(path) if path else None
    spec = spec.replace(**hashes, backend=keras.backend.backend(), versions=_versions())
    sources = {"source": source_model, "reference": reference_model}

    from mk_keras import data  # TensorFlow-only (tf.data)

    import tensorflow as tf  # tf.data and tf.distribute, on every backend

    reuse_cache.clear_session(keep_traced=reuse)
    if spec.deterministic and keras.backend.backend() == "tensorflow":
        tf.config.experimental.enable_op_determinism()
    dist = make_distribution(spec.distribution)
    resume_meta = None
    if run_dir is not None:
        run_dir = os.fspath(run_dir)
        if not dist.is_chief:
            run_dir = os.path.join(run_dir, f"worker{dist.task_id}")
        resume_meta = rundir.inspect(run_dir, overwrite, spec)

    common = {"classes": spec.classes, "data_dir": spec.data_dir, "manual_dir": spec.manual_dir,
              "drop_empty_classes": spec.drop_empty_classes}
    train_data = data.load(spec.dataset, split="train", max_per_class=spec.max_per_class, seed=spec.data_seed,
                           **common)
    if spec.holdout:
        train_data, eval_data = _split_holdout(train_data, spec.holdout)
    else:
        eval_data = data.load(spec.dataset, split=spec.eval_split, max_per_class=spec.eval_max_per_class,
                              seed=EVAL_SUBSET_SEED, **common)
    if eval_data.info.class_names != train_data.info.class_names:
        raise ValueError(f"{spec.dataset!r}: the evaluation split {spec.eval_split!r} has classes "
                         f"{eval_data.info.class_names} but the training split {train_data.info.class_names}")
    if dist.name == "data_parallel" and eval_data.info.num_examples % dist.num_replicas:
        eval_data = _truncate(eval_data, eval_data.info.num_examples // dist.num_replicas * dist.num_replicas)
    num_classes = train_data.info.num_classes
    num_examples = train_data.info.num_examples
    batch_size = spec.batch_size
    if batch_size % dist.num_replicas:
        raise ValueError(f"batch_size={batch_size} must be divisible by the {dist.num_replicas} replicas")
    if num_examples < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} training examples of "
                         f"{spec.dataset!r}")
    steps = spec.steps_per_epoch or num_examples // batch_size
    # Keras 3 runs several steps per call in a tf.while_loop that fails under Mirrored/MultiWorker strategies
    # ("You must feed a value for placeholder tensor", keras-team/keras#19246): one step per call there.
    spe = 1 if dist.name in ("mirrored", "multi_worker") else recipe.divisor_at_most(steps, spec.steps_per_execution)
    total_steps = spec.epochs * steps
    warmup_steps = int(round(spec.warmup_epochs * steps))
    peak_lr = recipe.peak_learning_rate(spec.lr, batch_size, spec.lr_scaling)

    with dist.scope():
        with recipe.precision_policy(spec.mixed_precision) as precision:  # layers take the policy when built
            keras.utils.set_random_seed(spec.init_seed)
            overrides = {"drop_path_rate": spec.drop_path_rate} if spec.drop_path_rate else {}
            shape = None if spec.image_size is None else (*spec.image_size, 3)
            net = create_model(spec.model, num_classes, input_shape=shape, **overrides)
            initial_weights = initial_weight_hashes(net)
            height, width, channels = net.input_shape[1:]
            caching = reuse and reuse_cache.supported(dist.name, precision, init_hook)
            net, report, source_info = _transfer(net, spec, sources, reuse_cache.SOURCES if caching else None)
            # Loading a source draws from the seeded stream: seed again so every run of this spec's seed
            # continues from the same random state whatever its treatment.
            keras.utils.set_random_seed(spec.init_seed)
            hook_result = init_hook(net) if init_hook is not None else None
            schedule = recipe.lr_schedule(peak_lr, total_steps, warmup_steps, spec.min_lr_ratio)
            optimizer = recipe.make_optimizer(net, schedule, spec.weight_decay, spec.ema, spec.ema_momentum)
            compile_args = {"num_classes": num_classes, "label_smoothing": spec.label_smoothing,
                            "jit_compile": recipe.resolve_jit_compile(spec.jit_compile), "steps_per_execution": spe}
            cache = reuse_cache.CACHE if caching else None
            key = cached = None
            model_cache = "off" if cache is None else "miss"
            if cache is not None:
                key = reuse_cache.trace_key(net, optimizer, compile_args, precision)
                cached = cache.adopt(key, net)
            if cached is not None:
                net = cached  # compiled and traced by an earlier run; now holding this run's initial values
                model_cache = "hit"
            else:
                recipe.compile_model(net, optimizer, **compile_args)
                _build_training_state(net, num_classes)
                if dist.name == "multi_worker":
                    _build_for_multi_worker(net)
                if cache is not None:
                    cache.put(key, net)

        pipeline = {"batch_size": batch_size, "image_size": (height, width), "channels": channels,
                    "deterministic": spec.deterministic}
        if spec.input_pipeline == "imagenet":
            pipeline.update(transforms="imagenet", crop_pct=spec.crop_pct, cache=spec.cache,
                            memory_budget=None if spec.memory_budget_gb is None else int(spec.memory_budget_gb * 1e9))

        def stream_at(batch):
            """The endless training stream from batch `batch` on (a pure function of the batch number)."""
            erase = {"erase_prob": spec.erase_prob} if spec.input_pipeline == "imagenet" else {}
            return data.make_pipeline(train_data, training=True, augment=spec.augment, mixup=spec.mixup,
                                      cutmix=spec.cutmix, shuffle_seed=spec.data_seed, repeat=True,
                                      skip_batches=batch, **pipeline, **erase)

        eval_pipe = data.make_pipeline(eval_data, training=False, **pipeline).apply(
            tf.data.experimental.assert_cardinality(math.ceil(eval_data.info.num_examples / batch_size)))

        frozen_layers = report.frozen_layers if report is not None else []
        metrics = {
            "status": "running",
            "run_dir": run_dir,
            "model": spec.model,
            "backend": keras.backend.backend(),
            "dataset": _info_dict(train_data.info),
            "eval_dataset": _info_dict(eval_data.info),
            "recipe": {"global_batch_size": batch_size, "peak_lr": peak_lr, "warmup_steps": warmup_steps,
                       "steps_per_epoch": steps, "total_steps": total_steps, "steps_per_execution": spe,
                       "jit_compile": net.jit_compile, "precision": precision,
                       "distribution": dist.describe()},
            "params": _param_counts(net, frozen_layers),
            "frozen_layers": frozen_layers,
            "transfer": _transfer_summary(report, source_info, spec),
            "initial_weights": initial_weights,
            "init_hook": hook_result,
            "init_hook_name": getattr(init_hook, "__qualname__", None if init_hook is None else repr(init_hook)),
            "spec": spec.to_dict(),
            "spec_hash": spec.spec_hash(),
            "model_revision": model_revision(spec.model),
        }
        if run_dir is not None:
            rundir.prepare(run_dir, overwrite, spec, flags_text,
                           None if report is None else {"source": source_info, **report.to_dict()})
        state = {"step": 0, "history": [], "wall_time_s": 0.0, "epoch_elapsed_s": 0.0, "resumed_at_steps": [],
                 "metric_values": None}
        ckpt_dir = None if run_dir is None else os.path.join(run_dir, rundir.CHECKPOINT_DIR)
        if resume_meta is not None:
            if precision == "mixed_float16":  # its loss-scale optimizer does not count the steps it skips
                raise ValueError(f"run directory {run_dir!r} holds an unfinished mixed_float16 run, which cannot be "
                                 "resumed exactly (skipped overflow steps are not counted); pass overwrite to start "
                                 "over, or train with mixed_bfloat16")
            meta, metric_values = checkpoint.restore_state(ckpt_dir, net)
            state.update(meta, metric_values=metric_values)
            state["step"] = int(checkpoint.to_numpy(net.optimizer.iterations))
            state["resumed_at_steps"] = [*meta["resumed_at_steps"], state["step"]]
            log.info("resuming %s at step %d of %d", run_dir, state["step"], total_steps)

        def write_metrics(status, **extra):
            metrics.update(status=status, epochs=state["history"], epochs_completed=len(state["history"]),
                           resumed_at_steps=state["resumed_at_steps"], **extra)
            if run_dir is not None:
                rundir.write_json(os.path.join(run_dir, "metrics.json"), metrics)

        write_metrics("running", wall_time_s=state["wall_time_s"])
        monitor = RunMonitor(state, steps, write_metrics, ckpt_dir, spec.checkpoint_every, spec.checkpoint_every_s)
        timer = StepTimer(spe)
        fit_callbacks = [keras.callbacks.TerminateOnNaN(), monitor, timer, *(callbacks or [])]
        if run_dir is not None:
            fit_callbacks.append(EpochScalars(os.path.join(run_dir, "tensorboard")))
        if spec.ema and spec.eval_every:
            fit_callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
        verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
        start_step, fit_started = state["step"], time.perf_counter()
        try:
            _fit(net, stream_at, eval_pipe, state["step"], steps, spec.epochs, spec.eval_every,
                 fit_callbacks, verbose, spec.ema)
            monitor.close()  # the last checkpoint write: joined (and its error raised) before anything else
            if monitor.nan_step:
                raise TrainingFailed(
                    f"loss became NaN or infinite at step {monitor.nan_step} (epoch "
                    f"{(monitor.nan_step - 1) // steps + 1}); lower the learning rate (lr={spec.lr}) or check the "
                    "data"
                )
        except Exception as e:
            monitor.close(failing=True)
            write_metrics("failed", error=str(e).splitlines()[0] if str(e) else type(e).__name__,
                          wall_time_s=monitor._wall())
            raise
        fit_s = time.perf_counter() - fit_started
        last = state["history"][-1] if state["history"] else {}
        if "val_top1" in last and last["epoch"] == spec.epochs:
            final = {k: last[f"val_{k}"] for k in ("loss", "top1", "top5")}
        else:
            final = {k: float(v) for k, v in net.evaluate(eval_pipe, return_dict=True, verbose=0).items()}
        if run_dir is not None:
            net.save(os.path.join(run_dir, "model.keras"))
        timing = _timing(started, fit_started, fit_s, monitor.step - start_step, timer.steady_step_s(),
                         model_cache)
        write_metrics("finished", **final, train={k: last.get(k) for k in ("loss", "top1", "top5")},
                      wall_time_s=monitor._wall(), timing=timing)
        if run_dir is not None:
            log_hparams(os.path.join(run_dir, "tensorboard"), metrics["spec"], metrics)
        if ckpt_dir is not None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return metrics


def _timing(started, fit_started, fit_s, steps, steady_step_s, model_cache):
    """Where this `train` call's time went (seconds): "total_s" = "setup_s" (data, model, transfer, compile,
    resume) + "fit_s" + "after_fit_s" (final evaluation unless `fit` validated last, saving); "steps" trained in
    this call at a median "steady_step_s"; "fixed_s" = total_s - steps * steady_step_s, the part that does not
    grow with the steps (setup, tracing, the input stream's first pass, evaluation, saving); "model_cache":
    "hit" / "miss" of the reuse cache or "off"."""
    total = time.perf_counter() - started
    setup = fit_started - started
    fixed = None if steady_step_s is None else total - steps * steady_step_s
    return {"total_s": round(total, 3), "setup_s": round(setup, 3), "fit_s": round(fit_s, 3),
            "after_fit_s": round(total - setup - fit_s, 3), "steps": steps,
            "steady_step_s": None if steady_step_s is None else round(steady_step_s, 6),
            "fixed_s": None if fixed is None else round(fixed, 3), "model_cache": model_cache}


def _transfer(net, spec, models, cache=None):
    """Load the source (after the target was built) and copy/freeze, or assign master keys; returns
    (model, report or None, source info dict or None). `models`: in-memory source/reference models; `cache`: a
    `reuse.SourceCache` or None."""
    if spec.uses_master_keys:
        ref_model, ref_info = (_load(spec.master_key_reference, models["reference"],
                                     spec.master_key_reference_sha256, cache)
                               if spec.master_key_reference is not None else (None, None))
        net, report = assign_master_keys(net, spec.n, reference=ref_model, order=spec.order, shift="kernel",
                                         method=spec.master_key_method)
        if ref_info is not None:
            ref_info = {**ref_info, "sha256": spec.master_key_reference_sha256}
        return net, report, {"type": MASTER_KEYS, "reference": ref_info}
    if spec.source == DELTA:
        report = freeze_filters(net, spec.n, spec.kind, spec.order, spec.freeze_following_norm, kernel_transform="delta")
        return net, report, {"type": DELTA}
    if spec.source is not None:
        source, info = _load(spec.source, models["source"], spec.source_sha256, cache)
        info = {**info, "sha256": spec.source_sha256 or info.get("sha256")}  # keras:<Name>:imagenet: downloaded file
        report = transfer_filters(source, net, spec.n, spec.kind, spec.order, spec.freeze, True, spec.kernel_map,
                                  spec.channel_map, spec.freeze_following_norm, spec.kernel_transform,
                                  spec.init_seed if spec.kernel_transform else None)
        return net, report, info
    if spec.n:
        return net, freeze_filters(net, spec.n, spec.kind, spec.order, spec.freeze_following_norm), None
    return net, None, None


def _info_dict(info):
    import json

    return json.loads(json.dumps(dataclasses.asdict(info), default=str))


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


def _fit(net, stream_at, eval_pipe, start, steps, epochs, eval_every, callbacks, verbose, ema):
    """Fit from global step `start` to `epochs * steps`, a resumed partial epoch first; `stream_at(g)` is the
    training stream from batch g on."""
    validation = {"validation_data": eval_pipe, "validation_freq": eval_every} if eval_every else {}
    epoch, offset = divmod(start, steps)
    if offset:
        keep = KeepRawWeights()
        net.fit(stream_at(start), initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps - offset,
                callbacks=[*callbacks, keep] if ema else callbacks, verbose=verbose, shuffle=False, **validation)
        if ema:
            keep.restore()
        if net.stop_training:
            return
        epoch += 1
    if epoch < epochs:
        net.fit(stream_at(epoch * steps), initial_epoch=epoch, epochs=epochs, steps_per_epoch=steps,
                callbacks=callbacks, verbose=verbose, shuffle=False, **validation)
    elif ema:  # every epoch was done before the restart: apply the average as fit would have
        net.optimizer.finalize_variable_values(net.trainable_variables)
