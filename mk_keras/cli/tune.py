"""mk-tune: search learning rate, weight decay and label smoothing (keras-tuner) for a model and dataset,
then write the best values as a flagfile for mk-train / mk-transfer.

    mk-tune --flagfile=flags/tune_small.flags
    mk-train --flagfile=flags/train_small.flags --flagfile=runs/small/tune/best.flags --run_dir=runs/small/tuned

Trials train on the training split minus --holdout and are scored on the held-out part (top-1).
"""

import sys

from absl import flags

from mk_keras.cli import common

PROG = "mk-tune"
_SEARCHED = ("lr", "weight_decay", "label_smoothing")
TUNE_FLAGS = ("max_trials", "tuner", *(f"{n}_range" for n in _SEARCHED), "output")


def define_flags(fv):
    """Define mk-tune's flags on `fv`; returns their names."""
    from mk_keras.training.tuning import DEFAULT_RANGES, TUNERS

    names = common.define_training_flags(fv, exclude=_SEARCHED)
    fv.set_default("holdout", 0.1)
    fv.set_default("eval_every", 0)
    fv["run_dir"].help = "Tuning directory: keras-tuner state, trials/<id> run directories, best.flags."
    flags.DEFINE_integer("max_trials", 10, "Trial budget.", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("tuner", "random", TUNERS, "Search algorithm.", flag_values=fv)
    for name in _SEARCHED:
        low, high = DEFAULT_RANGES[name]
        flags.DEFINE_list(f"{name}_range", [repr(low), repr(high)],
                          f"low,high of the {name} search (log-uniform when low > 0).", flag_values=fv)
    flags.DEFINE_string("output", None, "Best-values flagfile (default: <run_dir>/best.flags).", flag_values=fv)
    return [*names, *TUNE_FLAGS]


def run(**kwargs):
    """Tune with `mk_keras.training.tuning.tune(**kwargs)`; returns its summary."""
    from mk_keras.training.tuning import tune

    return tune(**kwargs)


def _floats(name, values):
    try:
        return [float(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name}={','.join(values)} must be two numbers low,high") from None


def main(argv):
    """Parse `argv` (argv[0] is the program name), tune; returns the exit status."""
    names = []

    def define(fv):
        names.extend(define_flags(fv))

    def call(fv):
        kwargs = common.training_kwargs(fv, [n for n in names if n not in TUNE_FLAGS])
        summary = run(**kwargs, max_trials=fv.max_trials, tuner=fv.tuner, output=fv.output,
                      ranges={n: _floats(f"{n}_range", fv[f"{n}_range"].value) for n in _SEARCHED})
        with open(f"{fv.run_dir}/flags.txt", "w") as f:
            f.write(common.flagfile_text(fv, names, PROG))
        best = " ".join(f"{k}={v:.3g}" for k, v in summary["best"].items())
        print(f"{PROG}: best of {len(summary['trials'])} trials: {best} (held-out top1="
              f"{summary['best_val_top1']:.4f}); flagfile {summary['flagfile']}")

    return common.execute(PROG, define, call, argv)


def main_entry():
    common.select_backend(sys.argv, "mk_keras.cli.tune")
    common.setup_logging()
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    main_entry()
