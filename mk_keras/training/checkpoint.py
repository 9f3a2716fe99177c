"""Exact, step-level training state: model variables (weights, normalisation statistics, RNG seeds), optimizer
variables (moments, iteration count, EMA) and metric accumulators, plus a JSON `meta` dict, in one `.npz`
written atomically (a kill -9 leaves the previous checkpoint intact).
"""

import io
import json
import os

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


def save_state(directory, model, meta):
    """Write the training state of a compiled `model` and `meta` to `directory/state.npz`."""
    os.makedirs(directory, exist_ok=True)
    arrays = {"meta": np.array(json.dumps(meta))}
    for group, variables in _groups(model).items():
        for i, v in enumerate(variables):
            arrays[f"{group}/{i}"] = to_numpy(v)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = os.path.join(directory, STATE_FILE)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
