"""2-D filters of a model as NumPy arrays; the centring / normalisation every analysis uses
(`normalize_filters`, defined in `mk_keras.master_keys`) and reproducible sub-sampling."""

import keras
import numpy as np

from mk_keras.filters import canonical_kernel, filter_layers
from mk_keras.master_keys import normalize_filters
from mk_keras.models.layers import MasterKeyDepthwiseConv2D

ANALYSIS_KINDS = ("depthwise", "conv")
__all__ = ["ANALYSIS_KINDS", "layer_filters", "normalize_filters", "random_layer_filters", "sample_filters"]


def layer_filters(model, kind="depthwise"):
    """`[(FilterLayer, filters)]` in forward order; `filters` is a float64 array (N, kh, kw).

    depthwise: one filter per output channel (N = C * multiplier; `Conv2D(groups=C)` included); for a
    `MasterKeyDepthwiseConv2D` the applied filter kernel + shift. conv: every 2-D slice of a regular
    convolution (N = C_in * C_out, index c_in * C_out + c_out).
    """
    if kind not in ANALYSIS_KINDS:
        raise ValueError(f"kind={kind!r}; allowed for filter analysis: {', '.join(ANALYSIS_KINDS)}")
    found = filter_layers(model, kind)
    if not found:
        raise ValueError(f"model {model.name!r} has no {kind} layers to analyse")
    out = []
    for entry in found:
        kernel = entry.layer.effective_kernel if isinstance(entry.layer, MasterKeyDepthwiseConv2D) else entry.kernel
        out.append((entry, _as_2d(keras.ops.convert_to_numpy(kernel), entry)))
    return out


def random_layer_filters(model, kind="depthwise", seed=0):
    """Like `layer_filters`, but drawn afresh from each layer's kernel initializer (its random-init filters).

    Layer i uses its initializer with an explicit seed derived from (seed, i); the global Keras seed is untouched.
    """
    out = []
    for entry, _ in layer_filters(model, kind):
        name = "kernel_initializer" if kind == "conv" or not hasattr(entry.layer, "depthwise_initializer") else (
            "depthwise_initializer"
        )
        config = keras.initializers.serialize(getattr(entry.layer, name))
        if "seed" in config.get("config", {}):
            config["config"]["seed"] = int(np.random.default_rng([seed, entry.index]).integers(2**31 - 1))
        value = keras.initializers.deserialize(config)(entry.kernel_shape, dtype="float32")
        out.append((entry, _as_2d(keras.ops.convert_to_numpy(value), entry)))
    return out


def _as_2d(value, entry):
    """A kernel of `entry` as (N, kh, kw) float64 filters."""
    value = canonical_kernel(value, entry).astype(np.float64)
    kh, kw = value.shape[:2]
    return value.reshape(kh, kw, -1).transpose(2, 0, 1)


def sample_filters(filters, max_filters, seed, *key):
    """At most `max_filters` of `filters` (N, ...), chosen at random without replacement, in original order.

    The choice depends only on (seed, *key, N), so the same model sampled twice gives the same subset.
    """
    if max_filters is not None and (
        isinstance(max_filters, bool) or not isinstance(max_filters, (int, np.integer)) or max_filters < 1
    ):
        raise ValueError(f"max_filters={max_filters!r} must be a positive integer (or None for all)")
    if max_filters is None or len(filters) <= max_filters:
        return filters
    rng = np.random.default_rng([seed, *key, len(filters)])
    return filters[np.sort(rng.choice(len(filters), max_filters, replace=False))]
