"""Reuse compiled models, and so their traced train and test functions, across the runs of one process.

A sweep trains many short runs; tracing the train and test steps and building the training state cost as much as
training a quickstart run. The traced step depends on the architecture, which variables are trainable, the
optimizer, loss and metric settings, precision, steps per execution and input shape, but not on the values of
the variables. `ModelCache` keeps recently used compiled models under a key made of all of that (`trace_key`),
as many as fit a byte budget (their variables, optimizer state and its saved initial values), so a sweep that
cycles through the depths of several models finds each again.
A run whose key is cached still builds its fresh model as usual (seeded initial weights, transfer, freezing);
`ModelCache.adopt` then copies every variable of the fresh model (weights, normalisation statistics, random-seed
states) into the cached model, puts its optimizer variables back to their values right after they were built
(iteration count, moments, EMA) and resets its metrics, and training continues on the cached model: Keras
reuses its `train_function` / `test_function` (`make_*_function(force=False)` returns them), so nothing is
compiled or traced again; `clear_session(keep_traced=True)` starts each run without clearing TensorFlow's
kernel cache, so the kept functions are not graph-optimised again either. A run through the cache is
bit-identical to the same run trained fresh (tests/training/test_reuse.py).

Transfer sources are kept too (`SourceCache`): the models loaded from a file are kept under the file's path and
sha256, so the runs that copy from one source (every treatment and depth of a seed) load it once; a source
model is only read (its filters copied), never changed.

`supported` says where the caches are used: the TensorFlow backend without a distribution strategy, without
`mixed_float16` (its loss-scale state is not reset here) and without an `init_hook` (arbitrary code may change
what a step traces, e.g. a Python attribute a layer's `call` reads, which the key cannot see).
"""

import collections
import contextlib
import gc
import hashlib
import json

import keras
import numpy as np


def supported(distribution_name, precision, init_hook):
    """Whether a run with these settings may train through the cache (see the module docstring)."""
    return (keras.backend.backend() == "tensorflow" and distribution_name == "default"
            and precision != "mixed_float16" and init_hook is None)


_freezing = False  # inside `frozen_heap`
_changed = False  # the freeze state was changed inside it


@contextlib.contextmanager
def frozen_heap():
    """Within it, `clear_session(keep_traced=True)` collects garbage only among the objects created since the
    previous one (`gc.freeze` after each collection): a full collection over a sweep process's long-lived heap
    (cached models and their traced graphs) took ~0.5 s per run. Dropping a model or source from a cache
    inside it unfreezes everything, so its memory is collected next. Leaving the block (`run_sweep` runs in one)
    unfreezes what it froze, and freezes the heap again after a collection when it was frozen on entry (as the
    test suite's is)."""
    global _freezing, _changed
    outer, _freezing = _freezing, True
    frozen_before = gc.get_freeze_count() > 0
    try:
        yield
    finally:
        _freezing = outer
        if not outer and _changed:
            _changed = False
            gc.unfreeze()
            if frozen_before:
                gc.collect()
                gc.freeze()


def clear_session(keep_traced):
    """`keras.backend.clear_session()`; with `keep_traced` on TensorFlow, without clearing TensorFlow's kernel
    cache: clearing it makes the cached models' traced functions be instantiated (graph-optimised) again on
    their next call, a large part of the cost the cache saves (docs/performance.md); inside `frozen_heap`, the
    survivors of its garbage collection are frozen."""
    global _changed
    if not keep_traced or keras.backend.backend() != "tensorflow":
        return keras.backend.clear_session()
    from tensorflow.python.eager import context

    ctx = context.context()
    ctx.clear_kernel_cache = lambda: None  # instance attribute: shadows the method for this one call
    try:
        keras.backend.clear_session(free_memory=False)
    finally:
        del ctx.clear_kernel_cache
    gc.collect()
    if _freezing:
        gc.freeze()
        _changed = True


def _unfreeze():
    """Inside `frozen_heap`, unfreeze: a model or source dropped from a cache may be frozen; let the next
    collection reach it."""
    global _changed
    if _freezing:
        gc.unfreeze()
        _changed = True


def _drop_oldest(entries):
    entries.popitem(last=False)
    _unfreeze()


def trace_key(model, optimizer, compile_args, precision):
    """sha256 of everything a traced train or test step of `model` depends on: its class and config (layers,
    their `trainable` flags and dtype policies, the input shape), each variable's path, shape, dtype and
    `trainable` flag, the optimizer's config (learning-rate schedule, decay, betas, EMA, clipping) and which
    variables it does not decay, the `compile` arguments, the precision, and TensorFlow op determinism."""
    from tensorflow.python.framework import config as tf_config  # no public getter for op determinism

    exempt = getattr(optimizer, "_exclude_from_weight_decay", None) or set()
    parts = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": model.get_config(),
        "variables": [(v.path, tuple(v.shape), str(v.dtype), bool(v.trainable), id(v) in exempt)
                      for v in model.variables],
        "optimizer": [f"{type(optimizer).__module__}.{type(optimizer).__qualname__}", optimizer.get_config()],
        "compile": compile_args,
        "precision": precision,
        "op_determinism": tf_config.is_op_determinism_enabled(),
        "backend": keras.backend.backend(),
    }
    text = json.dumps(parts, sort_keys=True, default=repr)  # repr of an unknown object: a miss, never a false hit
    return hashlib.sha256(text.encode()).hexdigest()


def _nbytes(variables):
    return sum(int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
               for v in variables)


class _BoundedCache:
    """Entries `(..., nbytes)` by key, least recently used dropped first once there are more than `max_entries`
    or their bytes exceed `max_bytes`; the newest is always kept."""

    def __init__(self, max_entries, max_bytes):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries = collections.OrderedDict()
        self.hits = self.misses = 0

    def __len__(self):
        return len(self._entries)

    def clear(self):
        self._entries.clear()
        _unfreeze()

    def nbytes(self):
        """Bytes the kept entries hold (see the class docstring)."""
        return sum(entry[-1] for entry in self._entries.values())

    def _keep(self, key, *values, nbytes):
        self._entries[key] = (*values, nbytes)
        self._entries.move_to_end(key)
        while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self.nbytes() > self.max_bytes):
            _drop_oldest(self._entries)

    def _get(self, key):
        """The entry of `key` (counted as a hit, now the most recently used), or None (counted as a miss)."""
        if key not in self._entries:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return self._entries[key]


class ModelCache(_BoundedCache):
    """Recently used compiled models by `trace_key`, least recently used dropped first once there are more than
    `max_entries` or their bytes (variables, optimizer variables and the saved copy of those) exceed
    `max_bytes`; the newest is always kept."""

    def __init__(self, max_entries=16, max_bytes=2 * 2**30):
        super().__init__(max_entries, max_bytes)

    def put(self, key, model):
        """Keep `model`, compiled and with its training state built, untrained: the values of its optimizer
        variables now are the ones `adopt` restores."""
        self._keep(key, model, [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables],
                   nbytes=_nbytes(model.variables) + 2 * _nbytes(model.optimizer.variables))

    def adopt(self, key, fresh):
        """The cached model of `key` holding the values of `fresh`'s variables, with a fresh optimizer state and
        reset metrics; None (a miss) when `key` is not cached."""
        entry = self._get(key)
        if entry is None:
            return None
        model, optimizer_values, _ = entry
        for target, source in zip(model.variables, fresh.variables, strict=True):
            if target.path != source.path:  # the key covers the paths: this would be a bug here
                raise RuntimeError(f"cached model variable {target.path} != fresh {source.path}")
            target.assign(source.value)
        for variable, value in zip(model.optimizer.variables, optimizer_values, strict=True):
            variable.assign(value)
        model.reset_metrics()
        model.stop_training = False
        return model


class SourceCache(_BoundedCache):
    """Loaded transfer sources by (spec, sha256 of the file it loads, global dtype policy it was loaded under):
    `(model, info dict)`; least recently used dropped first beyond `max_entries` or `max_bytes` of variables (the
    newest is always kept). A source of unknown file hash (None) is never kept."""

    def __init__(self, max_entries=16, max_bytes=2**30):
        super().__init__(max_entries, max_bytes)

    def load(self, spec, sha256, loader):
        """`loader()`'s `(model, info)` for `spec`, from the cache when the file with `sha256` was loaded before;
        the info dict is a copy."""
        if sha256 is None:  # unknown content: loaded, never kept
            self.misses += 1
            return loader()
        key = (str(spec), sha256, keras.config.dtype_policy().name)
        entry = self._get(key)
        if entry is None:
            model, info = loader()
            self._keep(key, model, info, nbytes=_nbytes(model.variables))
            entry = self._entries[key]
        model, info, _ = entry
        return model, json.loads(json.dumps(info))


CACHE = ModelCache()
"""The process-wide cache `train(..., reuse=True)` uses."""

SOURCES = SourceCache()
"""The process-wide source cache `train(..., reuse=True)` uses."""
