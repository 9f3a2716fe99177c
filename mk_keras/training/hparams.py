"""A finished run's settings and final metrics for TensorBoard's HParams dashboard.

`log_hparams` writes one HParams session into the run's `tensorboard/` folder: its hyperparameters are the
spec's identity fields (`RunSpec.identity()` without the sources' sha256), its metrics the final evaluation
(`final_top1`, `final_top5`, `final_loss`). `tensorboard --logdir <sweep>/runs` then lists every run of a sweep
in the HPARAMS tab. No experiment-level `hparams_config` is written: the dashboard infers the columns and their
domains from the sessions, so runs of any sweep (or none) can be viewed together.
"""

import json

from mk_keras.training.spec import EXECUTION_FIELDS

FINAL_METRICS = ("top1", "top5", "loss")
# Identity fields left out: content hashes of source files, not settings (the source field names the source).
_NOT_HPARAMS = ("seed", "source_sha256", "master_key_reference_sha256")


def hparam_values(spec_dict):
    """{field: bool, int, float or str} of the identity fields: None becomes "None", lists and dicts their
    JSON text (the dashboard takes scalars only)."""
    values = {}
    for key, value in spec_dict.items():
        if key in EXECUTION_FIELDS or key in _NOT_HPARAMS:
            continue
        if value is None:
            value = "None"
        elif isinstance(value, (list, tuple, dict)):
            value = json.dumps(value, sort_keys=True)
        elif not isinstance(value, (bool, int, float, str)):
            raise ValueError(f"spec field {key!r} has a {type(value).__name__} value {value!r}; expected the "
                             "JSON-ready dict of RunSpec.to_dict()")
        values[key] = value
    return values


def log_hparams(logdir, spec_dict, metrics):
    """Write one HParams session to `logdir`: trial id `metrics["spec_hash"]`, the hyperparameters of
    `hparam_values(spec_dict)`, and `final_<metric>` scalars from `metrics` (the finished run's metrics.json
    dict) at the last epoch's index, the step axis of the epoch scalars."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    missing = [k for k in ("spec_hash", *FINAL_METRICS) if k not in metrics]
    if missing:
        raise ValueError(f"metrics lack {missing}; log_hparams needs a finished run's metrics "
                         f"(spec_hash, {', '.join(FINAL_METRICS)})")
    step = max(int(metrics.get("epochs_completed", 1)) - 1, 0)
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp.hparams(hparam_values(spec_dict), trial_id=metrics["spec_hash"])
        for key in FINAL_METRICS:
            tf.summary.scalar(f"final_{key}", float(metrics[key]), step=step)
    writer.close()
