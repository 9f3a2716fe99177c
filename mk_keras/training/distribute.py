"""Strategy factory: one `Distribution` object for tf.distribute strategies (TensorFlow backend) and
`keras.distribution.DataParallel` (JAX backend).

Names (`DISTRIBUTIONS`):
- auto: TF: multi_worker when TF_CONFIG names more than one task, mirrored on more than one GPU, else the
  default (no-op) strategy. JAX: data_parallel on more than one device, else none.
- one_device: TF OneDeviceStrategy on the first GPU (or the CPU); JAX: no distribution.
- mirrored: TF MirroredStrategy over all GPUs, or over all logical CPUs when there is no GPU.
- multi_worker: TF MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable; TensorFlow
  allows one per process, so it is created once (before other TensorFlow work) and every later call returns it.
- tpu: TF TPUStrategy on the TPU found by TPUClusterResolver.
- data_parallel: JAX keras.distribution.DataParallel over all devices.

The batch size given to `train` is the global batch, split evenly over `num_replicas`.
"""

import contextlib
import dataclasses
import json
import os

import keras

DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker", "tpu", "data_parallel")
TF_ONLY = ("mirrored", "multi_worker", "tpu")


@dataclasses.dataclass
class Distribution:
    """A resolved distribution: use `with dist.scope():` around build, transfer, compile and fit."""

    name: str
    num_replicas: int = 1
    strategy: object = None  # tf.distribute.Strategy, or None for the default strategy
    keras_distribution: object = None  # keras.distribution.Distribution on JAX
    task_type: str | None = None
    task_id: int = 0

    @property
    def is_chief(self):
        """True on the worker that owns the run directory (always True outside multi-worker training)."""
        if self.task_type in (None, "chief"):
            return True
        has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
        return self.task_type == "worker" and self.task_id == 0 and not has_chief

    @contextlib.contextmanager
    def scope(self):
        if self.strategy is not None:
            with self.strategy.scope():
                yield self
        elif self.keras_distribution is not None:
            previous = keras.distribution.distribution()
            keras.distribution.set_distribution(self.keras_distribution)
            try:
                yield self
            finally:
                keras.distribution.set_distribution(previous)
        else:
            yield self

    def broadcast(self, value):
        """The chief's integer `value` on every worker (a collective: every worker calls it, in the same order;
        the others' `value` is ignored); `value` itself outside multi-worker training."""
        if self.name != "multi_worker":
            return value
        import tensorflow as tf

        mine = [float(value), 1.0] if self.is_chief else [0.0, 0.0]
        per_replica = self.strategy.run(lambda: tf.constant(mine, tf.float64))
        total = self.strategy.reduce("SUM", per_replica, axis=None).numpy()
        return int(round(total[0] / total[1]))  # each of the chief's replicas added (value, 1)

    def describe(self):
        return {"name": self.name, "num_replicas": self.num_replicas, "task_type": self.task_type,
                "task_id": self.task_id, "is_chief": self.is_chief}


def _tf_config_tasks():
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    return sum(len(v) for v in cluster.values())


def multi_worker_requested(name):
    """True when `make_distribution(name)` makes (or made) a multi-worker strategy on this backend and TF_CONFIG."""
    return keras.backend.backend() == "tensorflow" and (name == "multi_worker" or name == "auto"
                                                        and _tf_config_tasks() > 1)


_MULTI_WORKER = []  # this process's multi_worker Distribution, once created


def make_distribution(name="auto"):
    """Create the `Distribution` called `name` (see module docstring) for the current Keras backend.

    Create it before any other TensorFlow work in the process (multi-worker collectives, logical devices).
    """
    if name not in DISTRIBUTIONS:
        raise ValueError(f"distribution={name!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_distribution(name)
    if backend != "tensorflow":
        if name not in ("auto", "one_device"):
            raise ValueError(f"distribution={name!r} needs the tensorflow or jax backend, not {backend!r}")
        return Distribution("none")
    if name == "data_parallel":
        raise ValueError("distribution='data_parallel' is the JAX-backend path; on tensorflow use one of "
                         "auto, one_device, mirrored, multi_worker, tpu")
    return _tf_distribution(name)


def _jax_distribution(name):
    if name in TF_ONLY:
        raise ValueError(f"distribution={name!r} needs the tensorflow backend; on jax use auto, one_device "
                         "or data_parallel")
    devices = keras.distribution.list_devices()
    if name == "data_parallel" or name == "auto" and len(devices) > 1:
        return Distribution("data_parallel", len(devices), keras_distribution=keras.distribution.DataParallel(
            devices=devices))
    return Distribution("none")


def _tf_distribution(name):
    import tensorflow as tf

    if name == "auto":
        if _tf_config_tasks() > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            return Distribution("default")
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return Distribution(name, 1, tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0"))
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
        return Distribution(name, strategy.num_replicas_in_sync, strategy)
    if name == "multi_worker":
        if _tf_config_tasks() < 1:
            raise ValueError("distribution='multi_worker' needs the TF_CONFIG environment variable "
                             "(cluster and task); see docs/training.md")
        if not _MULTI_WORKER:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            resolver = strategy.cluster_resolver
            _MULTI_WORKER.append(Distribution(name, strategy.num_replicas_in_sync, strategy,
                                              task_type=resolver.task_type, task_id=int(resolver.task_id or 0)))
        return _MULTI_WORKER[0]
    try:  # tpu
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"distribution='tpu' found no TPU ({str(e).splitlines()[0]})") from None
    strategy = tf.distribute.TPUStrategy(resolver)
    return Distribution(name, strategy.num_replicas_in_sync, strategy)
