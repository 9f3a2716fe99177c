"""The training recipe: AdamW without decay on norms/biases/frozen weights, warm-up + cosine schedule,
label-smoothed cross-entropy on logits, top-1/top-5, optional EMA, mixed precision and XLA choices.

Learning-rate scaling rule (used by `train`): `peak_lr = lr * global_batch / 256` with `lr_scaling="linear"`
(the ConvNeXt recipe: 8e-4 x batch/256), `peak_lr = lr` with `lr_scaling="none"`.
"""

import contextlib

import keras

from mk_keras.training.optimizer import AdamW

LR_SCALINGS = ("linear", "none")
MIXED_PRECISION = {False: None, "none": None, True: "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16",
                   "mixed_float16": "mixed_float16"}


def peak_learning_rate(lr, global_batch, scaling="linear"):
    """`lr * global_batch / 256` (linear) or `lr` (none)."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr_scaling={scaling!r}; allowed: {', '.join(LR_SCALINGS)}")
    return lr * global_batch / 256.0 if scaling == "linear" else lr


def lr_schedule(peak_lr, total_steps, warmup_steps=0, min_lr_ratio=0.0):
    """Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then cosine decay to `min_lr_ratio * peak_lr`
    at `total_steps`."""
    warmup_steps = min(int(warmup_steps), max(int(total_steps) - 1, 0))
    decay_steps = max(int(total_steps) - warmup_steps, 1)
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps, alpha=min_lr_ratio, warmup_target=peak_lr, warmup_steps=warmup_steps
        )
    return keras.optimizers.schedules.CosineDecay(peak_lr, decay_steps, alpha=min_lr_ratio)


def no_decay_variables(model):
    """Variables AdamW must not decay: every 0-/1-D weight (biases, norm scales and offsets, layer scale,
    GRN) and every non-trainable weight (frozen kernels, normalisation statistics)."""
    trainable = {id(v) for v in model.trainable_weights}
    return [v for v in model.weights if len(v.shape) <= 1 or id(v) not in trainable]


def make_optimizer(model, schedule, weight_decay=0.05, ema=False, ema_momentum=0.999, clipnorm=None):
    """AdamW on `schedule` with weight decay excluded from `no_decay_variables(model)`.

    Call after transfer/freezing (so frozen weights are known) and before `compile`. With `ema=True` the
    optimizer keeps an exponential moving average of the weights; `fit` copies it into the model at the end.
    """
    optimizer = AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        use_ema=bool(ema),
        ema_momentum=ema_momentum,
        clipnorm=clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer


@keras.saving.register_keras_serializable(package="mk_keras")
class TopKAccuracy(keras.metrics.TopKCategoricalAccuracy):
    """Top-k accuracy on one-hot labels that also takes float16/bfloat16 logits (mixed precision; TensorFlow's
    in_top_k accepts float32 only)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, keras.ops.cast(y_pred, "float32"), sample_weight)


def classification_metrics(num_classes):
    """Top-1 and top-k (k = min(5, num_classes)) accuracy on one-hot labels, named `top1` and `top5`."""
    return [keras.metrics.CategoricalAccuracy(name="top1"), TopKAccuracy(k=min(5, num_classes), name="top5")]


def resolve_jit_compile(jit_compile=None):
    """`None` -> on for GPU/TPU or the JAX backend, off on the TensorFlow backend on CPU (XLA made a
    2-core CPU train step ~6x slower). Booleans pass through."""
    if jit_compile is not None:
        return bool(jit_compile)
    if keras.backend.backend() == "jax":
        return True  # jit_compile=False on JAX runs op by op
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def compile_model(model, optimizer, num_classes, label_smoothing=0.0, jit_compile=None, steps_per_execution=1):
    """Compile `model` (logits out) with label-smoothed categorical cross-entropy and top-1/top-5."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing!r} must be in [0, 1)")
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing),
        metrics=classification_metrics(num_classes),
        jit_compile=resolve_jit_compile(jit_compile),
        steps_per_execution=steps_per_execution,
    )
    return model


def divisor_at_most(n, k):
    """The largest divisor of `n` that is <= `k` (steps per execution that tile an epoch exactly)."""
    k = max(1, min(int(k), int(n)))
    return next(d for d in range(k, 0, -1) if n % d == 0)


def policy_name(mixed_precision):
    """The Keras dtype policy for a `mixed_precision` value (None = float32); raises on unknown values."""
    if isinstance(mixed_precision, (bool, str)) and mixed_precision in MIXED_PRECISION:
        return MIXED_PRECISION[mixed_precision]
    allowed = ", ".join(repr(k) for k in MIXED_PRECISION)
    raise ValueError(f"mixed_precision={mixed_precision!r}; allowed: {allowed}")


@contextlib.contextmanager
def precision_policy(mixed_precision=False):
    """Set the global Keras dtype policy for building a model, restoring the previous one on exit.

    `mixed_precision`: False/'none' (float32), True/'mixed_bfloat16', 'mixed_float16' (Keras
    wraps the optimizer in a LossScaleOptimizer). Losses and metrics are computed in float32.
    """
    policy = policy_name(mixed_precision)
    previous = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        yield policy or "float32"
    finally:
        keras.config.set_dtype_policy(previous)

