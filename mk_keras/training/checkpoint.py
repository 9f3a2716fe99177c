"""Exact, step-level training state: model variables (weights, normalisation statistics, RNG seeds), optimizer
variables (moments, iteration count, EMA) and metric accumulators, plus a JSON `meta` dict, in one `.npz`
written atomically (a kill -9 leaves the previous checkpoint intact). `BackgroundWriter` takes the snapshot
synchronously and writes it in a background thread.
"""

import concurrent.futures
import json
import os
import weakref

import keras
import numpy as np

STATE_FILE = "state.npz"


_GROUPS = ("model", "optimizer", "metrics")


def _groups(model):
    return {
        "model": model.variables,
        "optimizer": model.optimizer.variables,
        "metrics": model.metrics_variables,
    }


def to_numpy(variable):
    """The value of a Keras variable as NumPy, also for tf.distribute variables (mirrored: the primary copy;
    on-read metric variables: the sum over replicas)."""
    value = variable.value
    if hasattr(value, "read_value"):  # TensorFlow variable, possibly distributed
        value = value.read_value()
    return np.asarray(keras.ops.convert_to_numpy(value))


def reader(variables):
    """A function returning the values of `variables` as NumPy arrays. TensorFlow backend, variables not
    distributed: one compiled read of all of them (reading them one by one costs ~0.3-0.6 ms of eager dispatch
    each, ~0.2 s for ConvNeXt-atto's 516 model, optimizer and metric variables on 2 CPU cores); otherwise
    `to_numpy` one by one."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        values = [v.value for v in variables]
        if not any(isinstance(x, tf.distribute.DistributedValues) for x in values):
            read_all = tf.function(lambda: [x.read_value() for x in values], autograph=False)
            return lambda: [np.asarray(t) for t in read_all()]
    return lambda: [to_numpy(v) for v in variables]


def variables(model):
    """The variables a checkpoint holds, in file order: model, optimizer, metrics."""
    return [v for vs in _groups(model).values() for v in vs]


def snapshot(model, meta, read):
    """The arrays of a checkpoint of compiled `model` and `meta`: host copies, consistent at this step, that
    later training steps do not change. `read`: `reader(variables(model))`."""
    groups = _groups(model)
    values = iter(read())
    arrays = {"meta": np.array(json.dumps(meta))}
    for group, variables in groups.items():
        for i in range(len(variables)):
            value = next(values)
            arrays[f"{group}/{i}"] = value if value.flags.owndata else value.copy()
    return arrays


def write_arrays(directory, arrays):
    """Write `arrays` (from `snapshot`) to `directory/state.npz`: a temporary file, fsync, atomic rename."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, STATE_FILE)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_READERS = weakref.WeakKeyDictionary()
"""model -> (the variables read, compiled read) for `BackgroundWriter`: tracing and graph-optimising the
read costs ~0.65 s for ConvNeXt-micro's 201 variables on this 2-core CPU against ~2 ms per later call, so a model
kept across the runs of a sweep (`mk_keras.training.reuse`) reads with the function traced by its first run."""


def _cached_reader(model, current):
    cached = _READERS.get(model)
    if cached is None or len(cached[0]) != len(current) or any(a is not b for a, b in zip(cached[0], current)):
        cached = _READERS[model] = (current, reader(current))
    return cached[1]


class BackgroundWriter:
    """Checkpoints to `directory` without stalling training: `save` snapshots the state in the calling thread
    (device -> host copies, so the checkpoint is one consistent step) and hands serialisation, fsync and rename
    to a single background thread. At most one write is in flight: `save` first waits for the previous one.
    A failed write raises its exception from the next `busy`, `save` or `join`, never silently."""

    def __init__(self, directory):
        self.directory = directory
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = None

    def busy(self):
        """Whether a write is still running (raises the error of one that failed)."""
        if self._pending is not None and self._pending.done():
            self.join()
        return self._pending is not None

    def save(self, model, meta):
        self.join()
        read = _cached_reader(model, variables(model))  # made once per model and set of variables
        self._pending = self._executor.submit(write_arrays, self.directory, snapshot(model, meta, read))

    def join(self):
        """Wait for the write in flight, if any; re-raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except Exception as e:
                raise RuntimeError(f"writing the checkpoint in {self.directory} failed: {e}") from e

    def close(self):
        """Join the last write and stop the thread."""
        try:
            self.join()
        finally:
            self._executor.shutdown(wait=True)


def read_meta(directory):
    """The `meta` dict of the checkpoint in `directory`, or None when there is none."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


def restore_state(directory, model):
    """Assign the saved model and optimizer variables to a compiled `model`.

    Returns `(meta, metric_values)`: metric accumulators are assigned by the caller once `fit` has built and
    reset them (`model.metrics_variables` order).
    """
    path = os.path.join(directory, STATE_FILE)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    with np.load(path) as z:
        saved = {g: [z[k] for k in sorted((k for k in z.files if k.startswith(f"{g}/")),
                                          key=lambda k: int(k.split("/")[1]))] for g in _GROUPS}
        meta = json.loads(str(z["meta"]))
    current = _groups(model)
    for group in ("model", "optimizer"):
        if [a.shape for a in saved[group]] != [tuple(v.shape) for v in current[group]]:
            raise ValueError(
                f"checkpoint {path} does not match this model's {group} variables "
                f"({len(saved[group])} saved, {len(current[group])} now); pass overwrite to start over"
            )
        for v, value in zip(current[group], saved[group]):
            v.assign(value)
    return meta, saved["metrics"]
