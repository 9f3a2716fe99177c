"""Keras callbacks of `train`: run monitoring (epoch records, metrics.json, checkpoints, NaN detection),
step timing, TensorBoard epoch scalars, and keeping raw weights across an EMA swap."""

import logging
import os
import time

import keras
import numpy as np

from mk_keras.training import checkpoint

log = logging.getLogger(__name__)


def _scalar(value):
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


class RunMonitor(keras.callbacks.Callback):
    """Per-epoch records, metrics.json updates, checkpoints, NaN detection, metric-state restore.

    Checkpoints go to `checkpoint_dir` (None: none) at every epoch end, and at the end of a compiled call once
    `checkpoint_every` steps or `checkpoint_every_s` seconds (of `clock`; 0: never) have passed since the last
    one. They are written in the background (`checkpoint.BackgroundWriter`): a mid-epoch checkpoint that falls
    due while the previous write is still running is deferred to the next call's end, an epoch-end one waits for
    it. `close()` joins the last write and must run before the checkpoint directory is removed.
    """

    def __init__(self, state, steps_per_epoch, write_metrics, checkpoint_dir, checkpoint_every,
                 checkpoint_every_s=0.0, clock=time.monotonic):
        super().__init__()
        self.state = state  # history, wall_time_s, epoch_elapsed_s, resumed_at_steps, metric values to restore
        self.steps_per_epoch = steps_per_epoch
        self.write_metrics = write_metrics
        self.writer = checkpoint.BackgroundWriter(checkpoint_dir) if checkpoint_dir else None
        self.checkpoint_every = checkpoint_every
        self.checkpoint_every_s = checkpoint_every_s
        self.clock = clock
        self.step = state["step"]
        self.saved_step = state["step"]
        self.saved_at = clock()
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
        if self.offset and self.state.get("metric_values") is not None:
            self._restore_metric_state()

    def _restore_metric_state(self):
        """Put back the checkpoint's partial-epoch metric sums (totals and counts), after `fit` reset the metrics
        and before the first resumed step, so the sums accumulate in the same order as without the restart.
        Under tf.distribute, on-read variables split an assigned total over the replicas and sum on read."""
        saved = self.state.pop("metric_values")
        variables = self.model.metrics_variables
        if [tuple(v.shape) for v in variables] != [a.shape for a in saved]:
            raise ValueError(f"checkpoint metric state ({len(saved)} variables) does not match the model's "
                             f"({len(variables)}); pass overwrite to start over")
        for v, value in zip(variables, saved):
            v.assign(value)

    def on_train_batch_end(self, batch, logs=None):
        # The optimizer counts the steps it applied; Keras' `batch` numbering under steps_per_execution > 1
        # differs between versions.
        self.step = int(checkpoint.to_numpy(self.model.optimizer.iterations))
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(_scalar(loss)):
            self.nan_step = self.nan_step or self.step
            return
        # busy() also raises a failed write's error, at the first call end after it failed.
        if self.writer is None or self.writer.busy() or self.step % self.steps_per_epoch == 0:
            return  # no checkpoints, one still being written (the due one is deferred), or an epoch end
        if self.step - self.saved_step >= self.checkpoint_every or (
                self.checkpoint_every_s and self.clock() - self.saved_at >= self.checkpoint_every_s):
            self._save(self.prior_epoch_s + time.time() - self.epoch_start)

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: _scalar(v) for k, v in (logs or {}).items()}
        self.step = int(checkpoint.to_numpy(self.model.optimizer.iterations))
        if self.nan_step or not np.isfinite(logs.get("loss", 0.0)):
            self.nan_step = self.nan_step or self.step
            return
        record = {"epoch": epoch + 1, "step": self.step, **logs,
                  "lr": _scalar(self.model.optimizer.learning_rate),
                  "wall_time_s": round(self.prior_epoch_s + time.time() - self.epoch_start, 3)}
        self.state["history"].append(record)
        self.write_metrics("running", wall_time_s=self._wall())
        if self.writer is not None:
            self._save(0.0)

    def _save(self, epoch_elapsed_s):
        meta = {"step": self.step, "history": self.state["history"], "wall_time_s": self._wall(),
                "epoch_elapsed_s": epoch_elapsed_s, "resumed_at_steps": self.state["resumed_at_steps"]}
        self.writer.save(self.model, meta)
        self.saved_step = self.step
        self.saved_at = self.clock()

    def close(self, failing=False):
        """Join the last checkpoint write: raises if it failed, or (`failing`: the run already failed with
        another error) logs it."""
        if self.writer is None:
            return
        try:
            self.writer.close()
        except RuntimeError as e:
            if not failing:
                raise
            log.error("%s", e)


class StepTimer(keras.callbacks.Callback):
    """Wall time of every compiled training call (`steps_per_execution` steps each), for `train`'s timing
    record: the steady step time is the median call after the first of each `fit`, divided by its steps."""

    def __init__(self, steps_per_execution, clock=time.perf_counter):
        super().__init__()
        self.spe = steps_per_execution
        self.clock = clock
        self.first, self.steady = [], []

    def on_train_begin(self, logs=None):
        self.calls_this_fit = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.started = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        (self.steady if self.calls_this_fit else self.first).append(self.clock() - self.started)
        self.calls_this_fit += 1

    def steady_step_s(self):
        """Median seconds per step over the calls after each `fit`'s first (which traces or builds the input
        stream); the first calls when there is no other; None before any call."""
        calls = self.steady or self.first
        return float(np.median(calls)) / self.spe if calls else None


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


class KeepRawWeights(keras.callbacks.Callback):
    """Keeps the raw (non-EMA) trainable weights at the end of a partial-epoch fit, which ends by copying the
    EMA into the model; `restore()` puts the raw weights back so training continues exactly."""

    def on_epoch_end(self, epoch, logs=None):
        self.values = [checkpoint.to_numpy(v) for v in self.model.trainable_variables]

    def restore(self):
        for v, value in zip(self.model.trainable_variables, self.values):
            v.assign(value)
