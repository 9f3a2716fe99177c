"""Training: the recipe (AdamW, warm-up + cosine, label smoothing, EMA, precision, XLA), the distribution
factory and `train(...)`, the one entry point for binaries and sweeps."""

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
from mk_keras.training.run import MASTER_KEYS, TrainingFailed, train

__all__ = [
    "AdamW",
    "DISTRIBUTIONS",
    "LR_SCALINGS",
    "MASTER_KEYS",
    "Distribution",
    "TrainingFailed",
    "compile_model",
    "lr_schedule",
    "make_distribution",
    "make_optimizer",
    "no_decay_variables",
    "peak_learning_rate",
    "precision_policy",
    "resolve_jit_compile",
    "train",
]
