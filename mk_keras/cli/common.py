"""Shared helpers for the absl binaries: backend selection, flag parsing with one-line errors, the training
flags shared by mk-train / mk-transfer / mk-tune, and the flagfile a run directory stores.

Each binary module defines `define_flags(fv)`, a testable `run(**kwargs)` and `main(argv) -> exit status`
(in-process: parses `argv` into a fresh `flags.FlagValues`, so tests can call it repeatedly), plus
`main_entry()` for the console script. Exit status: 0 ok, 1 the run failed (NaN loss), 2 bad usage
(bad flag or value, missing source, finished run without --overwrite): one line on stderr, no traceback
(set MK_KERAS_TRACEBACK=1 to get the traceback instead).
"""

import logging
import os
import sys

from absl import flags

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BACKENDS = ("tensorflow", "jax")
_REEXEC_ENV = "MK_KERAS_BACKEND_REEXEC"
# Flags that manage the run rather than define it: left out of the stored flagfile.
_NOT_STORED = ("overwrite",)


def requested_backend(argv):
    """The value of the last --backend flag in `argv` (flagfiles expanded), or None."""
    try:
        args = flags.FlagValues().read_flags_from_files(list(argv[1:]), force_gnu=False)
    except flags.Error:
        return None  # e.g. a missing flagfile: flag parsing reports it
    value = None
    for i, arg in enumerate(args):
        if arg.startswith("--backend="):
            value = arg.split("=", 1)[1]
        elif arg == "--backend" and i + 1 < len(args):
            value = args[i + 1]
    return value


def select_backend(argv, module):
    """Make the Keras backend the one `--backend` asks for.

    Keras fixes its backend at import (KERAS_BACKEND), and importing mk_keras imports Keras; when the
    requested backend differs, re-execute `python -m module argv[1:]` with KERAS_BACKEND set.
    """
    backend = requested_backend(argv)
    if backend is None or backend not in BACKENDS:
        return  # absent: keep the environment's backend; invalid: flag parsing reports it
    import keras

    if keras.backend.backend() == backend:
        return
    if os.environ.get(_REEXEC_ENV):
        raise SystemExit(f"{module}: error: could not switch Keras to backend {backend!r}")
    env = {**os.environ, "KERAS_BACKEND": backend, _REEXEC_ENV: "1"}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv[1:]], env)


def fail(prog, message, status=EXIT_USAGE):
    """Print `prog: error: message` (first line only) to stderr and return `status`."""
    line = str(message).strip().splitlines()[0] if str(message).strip() else type(message).__name__
    print(f"{prog}: error: {line}", file=sys.stderr)
    return status


def parse_flags(prog, define_flags, argv, positional=False, usage=None):
    """Parse `argv` into a fresh `flags.FlagValues` defined by `define_flags(fv)`.

    Returns `(fv, args)`, `args` the positional arguments (an error unless `positional`), or an exit status:
    0 after printing --help (`usage`, if given, then the flags), 2 after a one-line flag error on stderr.
    """
    fv = flags.FlagValues()
    define_flags(fv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(f"{usage}\n{fv.get_help()}" if usage else fv.get_help())
        return EXIT_OK
    try:
        args = fv(list(argv))[1:]
        if args and not positional:
            raise flags.Error(f"unexpected positional arguments {args}")
    except flags.Error as e:
        return fail(prog, e)
    return fv, args


def execute(prog, define_flags, main, argv):
    """Parse `argv` with `parse_flags` and call `main(fv)`; returns the exit status.

    Flag errors and ValueError/FileNotFoundError/FileExistsError become one line on stderr and status 2;
    `TrainingFailed` becomes status 1. A --run_dir flag, if defined, has its {flag} fields filled in first.
    """
    from mk_keras.training import TrainingFailed

    parsed = parse_flags(prog, define_flags, argv)
    if isinstance(parsed, int):
        return parsed
    fv, _ = parsed
    if "run_dir" in fv and fv.run_dir and "{" in fv.run_dir:
        try:
            fv.run_dir = fv.run_dir.format(**{name: fv[name].value for name in fv})
        except (KeyError, IndexError, ValueError) as e:
            return fail(prog, f"--run_dir={fv.run_dir!r}: cannot fill {e} (use {{flag_name}} fields)")
    if fv["backend"].present:
        import keras

        if fv.backend != keras.backend.backend():
            return fail(prog, f"--backend={fv.backend} but Keras runs {keras.backend.backend()!r}; "
                              f"set KERAS_BACKEND={fv.backend} or use the {prog} console script")
    try:
        main(fv)
    except TrainingFailed as e:
        return fail(prog, e, EXIT_FAILED)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        if os.environ.get("MK_KERAS_TRACEBACK"):
            raise
        return fail(prog, e)
    return EXIT_OK


def setup_logging():
    """INFO-level, message-only logs on stderr for mk_keras (Keras prints its own progress)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mk_keras").setLevel(logging.INFO)


def flagfile_text(fv, names, prog):
    """A flagfile (one `--flag=value` per line) of `names` that reproduces a run of `prog`."""
    lines = [f"# {prog} flags; rerun with: {prog} --flagfile=<this file>"]
    for name in names:
        if name in _NOT_STORED or fv[name].value is None:
            continue
        lines.append(fv[name].serialize())
    return "\n".join(lines) + "\n"


def optional_int(value):
    """Flag convention: 0 means 'not set'."""
    return value or None


def report(prog, metrics):
    """One summary line of a finished run on stdout."""
    run_dir = metrics["run_dir"]
    frozen = metrics["frozen_layers"]
    transfer = metrics.get("transfer")
    source_type = ((transfer or {}).get("source") or {}).get("type")
    keys = {"master_keys": ", master keys", "delta": ", identity filters"}.get(source_type, "")
    keys += ", shuffled" if (transfer or {}).get("kernel_transform") == "shuffle" else ""
    what = f"; {len(frozen)} frozen layers ({transfer['kind']} n={transfer['n']}{keys})" if transfer else ""
    print(f"{prog}: {metrics['status']} {run_dir}: top1={metrics['top1']:.4f} top5={metrics['top5']:.4f} "
          f"loss={metrics['loss']:.4f} ({metrics['epochs_completed']} epochs, {metrics['wall_time_s']:.1f} s)"
          f"{what}")


def define_training_flags(fv, model_default="convnext_micro_cifar", exclude=()):
    """Define the flags that map 1:1 onto `mk_keras.training.train` arguments (and --backend), except
    `exclude`; returns the names defined."""
    from mk_keras.training import DISTRIBUTIONS, LR_SCALINGS

    d = flags
    d.DEFINE_string("model", model_default, "Registered model name (mk_keras.list_models()).",
                    flag_values=fv)
    d.DEFINE_string("dataset", "fashion_mnist",
                    "Dataset spec: fashion_mnist, animal_mnist, digits, tfds:NAME[/CONFIG], folder:PATH.",
                    flag_values=fv)
    d.DEFINE_list("classes", None, "Class selection: a named split (fashion_garments, random_half:A:0, ...) "
                  "or a comma-separated list of class indices or names.", flag_values=fv)
    d.DEFINE_string("run_dir", None, "Run directory (created; rerunning resumes an unfinished run); "
                    "{flag} fields are filled in, e.g. runs/x_n{n}_seed{seed}.", flag_values=fv)
    d.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1, flag_values=fv)
    d.DEFINE_integer("batch_size", 128, "Global batch size (split over replicas).", lower_bound=1,
                     flag_values=fv)
    d.DEFINE_float("lr", 8e-4, "Base learning rate for a global batch of 256 (see --lr_scaling).",
                   lower_bound=0.0, flag_values=fv)
    d.DEFINE_enum("lr_scaling", "linear", LR_SCALINGS,
                  "linear: peak lr = lr * batch_size / 256; none: peak lr = lr.", flag_values=fv)
    d.DEFINE_float("weight_decay", 0.05, "AdamW weight decay (not on norms, biases, frozen weights).",
                   lower_bound=0.0, flag_values=fv)
    d.DEFINE_float("warmup_epochs", 1.0, "Linear warm-up length in epochs.", lower_bound=0.0, flag_values=fv)
    d.DEFINE_float("min_lr_ratio", 0.0, "Final learning rate of the cosine, as a fraction of the peak.",
                   lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    d.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy.", lower_bound=0.0,
                   upper_bound=0.99, flag_values=fv)
    d.DEFINE_float("drop_path_rate", 0.0, "Stochastic depth rate (ConvNeXt models).", lower_bound=0.0,
                   upper_bound=0.99, flag_values=fv)
    d.DEFINE_boolean("ema", False, "Keep an EMA of the weights (AdamW use_ema); evaluate and save the EMA.",
                     flag_values=fv)
    d.DEFINE_float("ema_momentum", 0.999, "EMA momentum.", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    d.DEFINE_enum("augment", "none", ["none", "basic", "randaugment"], "Training augmentation.",
                  flag_values=fv)
    d.DEFINE_enum("input_pipeline", "memory", ["memory", "imagenet"], "memory: resize all images to the model "
                  "size and cache them (small datasets); imagenet: streamed, per-image random-resized crop, flip, "
                  "RandAugment (--augment=randaugment), random erasing; evaluation resizes to size/--crop_pct "
                  "and centre-crops (docs/datasets.md).", flag_values=fv)
    d.DEFINE_float("erase_prob", 0.0, "Random erasing probability (--input_pipeline=imagenet; ConvNeXt: 0.25).",
                   lower_bound=0.0, upper_bound=0.99, flag_values=fv)
    d.DEFINE_float("crop_pct", 0.875, "Evaluation centre crop: resize the shorter side to size/crop_pct "
                   "(--input_pipeline=imagenet).", lower_bound=0.01, upper_bound=1.0, flag_values=fv)
    d.DEFINE_enum("cache", "auto", ["auto", "on", "off"], "Cache decoded images in memory (--input_pipeline="
                  "imagenet; auto: when the estimated size fits --memory_budget_gb).", flag_values=fv)
    d.DEFINE_float("memory_budget_gb", 0.0, "Memory for the cache decision (0: a quarter of RAM).",
                   lower_bound=0.0, flag_values=fv)
    d.DEFINE_float("mixup", 0.0, "MixUp alpha (0: off).", lower_bound=0.0, flag_values=fv)
    d.DEFINE_float("cutmix", 0.0, "CutMix factor (0: off).", lower_bound=0.0, flag_values=fv)
    d.DEFINE_integer("image_size", 0, "Input side in pixels (0: the model's native size).", lower_bound=0,
                     flag_values=fv)
    d.DEFINE_integer("max_per_class", 0, "Training examples per class (0: all).", lower_bound=0,
                     flag_values=fv)
    d.DEFINE_string("eval_split", "test", "Split evaluated each --eval_every epochs and at the end.",
                    flag_values=fv)
    d.DEFINE_integer("eval_max_per_class", 0, "Evaluation examples per class (0: all).", lower_bound=0,
                     flag_values=fv)
    d.DEFINE_float("holdout", 0.0, "Evaluate on this fraction of the training split (every k-th example) "
                   "instead of --eval_split; for tuning.", lower_bound=0.0, upper_bound=0.5, flag_values=fv)
    d.DEFINE_integer("eval_every", 1, "Evaluate every N epochs (0: only at the end).", lower_bound=0,
                     flag_values=fv)
    d.DEFINE_integer("steps_per_epoch", 0, "Training steps per epoch (0: one pass over the data).",
                     lower_bound=0, flag_values=fv)
    d.DEFINE_integer("steps_per_execution", 8, "Train steps per compiled call (lowered to divide an epoch).",
                     lower_bound=1, flag_values=fv)
    d.DEFINE_integer("checkpoint_every", 100, "Checkpoint every N steps (and at every epoch end).",
                     lower_bound=1, flag_values=fv)
    d.DEFINE_float("checkpoint_every_s", 300.0, "Also checkpoint every N seconds of wall time (0: off); "
                   "checkpoints are written in the background.", lower_bound=0.0, flag_values=fv)
    d.DEFINE_integer("seed", 0, "Default of --init_seed and --data_seed.", flag_values=fv)
    d.DEFINE_integer("init_seed", None, "Seed of the initial weights and training randomness (default: --seed); "
                     "runs of one model at one init seed start from identical weights.", flag_values=fv)
    d.DEFINE_integer("data_seed", None, "Seed of the --max_per_class training subset and the data order "
                     "(default: --seed). The evaluation set never depends on a seed.", flag_values=fv)
    d.DEFINE_boolean("drop_empty_classes", False, "Drop classes without decodable images (folder datasets) "
                     "with a warning instead of failing.", flag_values=fv)
    d.DEFINE_boolean("deterministic", False, "TensorFlow op determinism (reproducible, slower on GPU).",
                     flag_values=fv)
    d.DEFINE_enum("distribution", "auto", DISTRIBUTIONS, "Distribution strategy (docs/training.md).",
                  flag_values=fv)
    d.DEFINE_enum("backend", "tensorflow", BACKENDS, "Keras backend (switched before Keras loads).",
                  flag_values=fv)
    d.DEFINE_enum("mixed_precision", "none", ["none", "mixed_bfloat16", "mixed_float16"],
                  "Mixed-precision policy (GPUs/TPUs).", flag_values=fv)
    d.DEFINE_enum("jit_compile", "auto", ["auto", "on", "off"],
                  "XLA: auto = off with TensorFlow on CPU (slower there), on elsewhere.", flag_values=fv)
    d.DEFINE_string("data_dir", None, "TFDS data dir / extra folder for dataset files.", flag_values=fv)
    d.DEFINE_string("manual_dir", None, "TFDS manual download dir (imagenet2012).", flag_values=fv)
    d.DEFINE_boolean("overwrite", False, "Replace a finished run in --run_dir.", flag_values=fv)
    d.DEFINE_integer("verbose", -1, "Keras verbosity (-1: progress bar on a terminal, else one line per "
                     "epoch).", lower_bound=-1, upper_bound=2, flag_values=fv)
    flags.mark_flag_as_required("run_dir", flag_values=fv)
    for name in exclude:
        delattr(fv, name)
    names = ["model", "dataset", "classes", "run_dir", "epochs", "batch_size", "lr", "lr_scaling",
            "weight_decay", "warmup_epochs", "min_lr_ratio", "label_smoothing", "drop_path_rate", "ema",
            "ema_momentum", "augment", "input_pipeline", "erase_prob", "crop_pct", "cache", "memory_budget_gb",
            "mixup", "cutmix", "image_size", "max_per_class", "eval_split",
            "eval_max_per_class", "holdout", "eval_every", "steps_per_epoch", "steps_per_execution", "checkpoint_every",
            "checkpoint_every_s", "seed", "init_seed", "data_seed", "drop_empty_classes", "deterministic",
            "distribution", "backend", "mixed_precision", "jit_compile", "data_dir",
            "manual_dir", "overwrite", "verbose"]
    return [n for n in names if n not in exclude]


def parse_classes(values):
    """--classes: None, one named split ('fashion_garments', 'random_half:A:0') or a list of indices/names."""
    if not values:
        return None
    if len(values) == 1 and not values[0].isdigit():
        return values[0]
    return [int(v) if v.isdigit() else v for v in values]


_CONVERT = {
    "classes": parse_classes,
    "augment": lambda v: None if v == "none" else v,
    "cache": {"auto": None, "on": True, "off": False}.get,
    "memory_budget_gb": lambda v: v or None,
    "mixed_precision": lambda v: False if v == "none" else v,
    "jit_compile": {"auto": None, "on": True, "off": False}.get,
    "verbose": lambda v: None if v < 0 else v,
    **{name: optional_int for name in ("image_size", "max_per_class", "eval_max_per_class", "steps_per_epoch")},
}


def training_kwargs(fv, names):
    """`train(...)` keyword arguments from the flags `names` of `define_training_flags` (not --backend)."""
    return {name: _CONVERT.get(name, lambda v: v)(fv[name].value) for name in names if name != "backend"}
