"""mk-train: train a base model on a dataset (or class split) and write a run directory.

    mk-train --flagfile=flags/train_small.flags
    mk-train --model=convnext_micro_cifar --dataset=fashion_mnist --classes=fashion_garments \
        --epochs=5 --run_dir=runs/base_garments

Writes flags.txt (a flagfile that reproduces the run), spec.json, metrics.json, model.keras and
tensorboard/ into --run_dir; rerunning an interrupted command resumes from its last checkpoint.
"""

import sys

from mk_keras.cli import common

PROG = "mk-train"


def define_flags(fv):
    """Define mk-train's flags on `fv`; returns their names."""
    return common.define_training_flags(fv)


def run(**kwargs):
    """Train with `mk_keras.training.train(**kwargs)`; returns its metrics."""
    from mk_keras.training import train

    return train(**kwargs)


def main(argv):
    """Parse `argv` (argv[0] is the program name), train; returns the exit status."""
    names = []

    def define(fv):
        names.extend(define_flags(fv))

    def call(fv):
        common.report(PROG, run(**common.training_kwargs(fv, names), flags_text=common.flagfile_text(fv, names, PROG)))

    return common.execute(PROG, define, call, argv)


def main_entry():
    common.select_backend(sys.argv, "mk_keras.cli.train")
    common.setup_logging()
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    main_entry()
