"""Training: the recipe (AdamW, warm-up + cosine, label smoothing, EMA, precision, XLA), the distribution
factory, the run specification (`RunSpec`) and `train(spec)`, the one entry point for binaries, sweeps, tuning."""

from mk_keras.training.distribute import DISTRIBUTIONS, Distribution, make_distribution
from mk_keras.training.optimizer import AdamW
from mk_keras.training.recipe import (
    LR_SCALINGS,
    compile_model,
    lr_schedule,
    make_optimizer,
    no_decay_variables,
    peak_learning_rate,
    precision_policy,
    resolve_jit_compile,
)
from mk_keras.training.run import TrainingFailed, initial_weight_hashes, train
from mk_keras.training.spec import EVAL_SUBSET_SEED, MASTER_KEYS, RunSpec

__all__ = [
    "AdamW",
    "DISTRIBUTIONS",
    "EVAL_SUBSET_SEED",
    "LR_SCALINGS",
    "MASTER_KEYS",
    "RunSpec",
    "Distribution",
    "TrainingFailed",
    "compile_model",
    "initial_weight_hashes",
    "lr_schedule",
    "make_distribution",
    "make_optimizer",
    "no_decay_variables",
    "peak_learning_rate",
    "precision_policy",
    "resolve_jit_compile",
    "train",
]
