"""Helpers for the analysis tests: filters planted from known master keys, tiny models."""

import keras
import numpy as np

import mk_keras
from mk_keras.analysis import master_keys


def planted(key_ids, kernel_size=7, noise=0.0, seed=0):
    """Filters a*key+b(+noise) for each id in `key_ids`: (N, k, k), a random in ±[0.5, 2], b in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    keys = master_keys(kernel_size).astype(np.float64)
    n = len(key_ids)
    a = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
    b = rng.uniform(-0.5, 0.5, n)
    out = a[:, None, None] * keys[np.asarray(key_ids)] + b[:, None, None]
    return out + noise * rng.standard_normal(out.shape), a, b


def plant_model(model, pattern, noise=0.0, seed=0):
    """Set channel c of every depthwise layer to key pattern[c % len(pattern)]; returns the key ids per layer."""
    ids = []
    for entry in mk_keras.filter_layers(model, "depthwise"):
        kh, _, channels, mult = entry.kernel_shape
        layer_ids = [pattern[c % len(pattern)] for c in range(channels * mult)]
        filters, _, _ = planted(layer_ids, kh, noise, seed + entry.index)
        entry.kernel.assign(filters.transpose(1, 2, 0).reshape(entry.kernel_shape).astype("float32"))
        ids.append(np.array(layer_ids))
    return ids


def tiny(kernel_size=7, channels=16, depth=3, name="tiny"):
    """`depth` DepthwiseConv2D layers (`channels` channels) on 12x12x3 inputs, 4 classes: fast to build and train."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(channels, 1, name="expand")(inputs)
    for i in range(1, depth + 1):
        x = keras.layers.DepthwiseConv2D(kernel_size, padding="same", name=f"dw{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name=name)


def tiny_conv(channels=16):
    """Three regular 3x3 Conv2D layers and no depthwise layer."""
    inputs = keras.Input((12, 12, 3))
    x = inputs
    for i in range(1, 4):
        x = keras.layers.Conv2D(channels, 3, padding="same", name=f"conv{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name="tiny_conv")


def to_np(value):
    return keras.ops.convert_to_numpy(value)
