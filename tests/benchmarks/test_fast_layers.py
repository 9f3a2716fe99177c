"""The speed-motivated pieces of mk_keras.models (docs/performance.md) compute the same function and gradients
as the Keras code they replace."""

import keras
import numpy as np
import pytest

from mk_keras.models.layers import LayerNorm, _layer_norm, gelu

pytestmark = pytest.mark.backend_agnostic


def _value_and_grads(fn, inputs):
    """[fn(*inputs), d sum(fn(*inputs) * w) / d input for each input], w a fixed random weighting."""
    w = np.random.default_rng(1).normal(size=np.shape(fn(*inputs))).astype("float32")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(v) for v in inputs]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            y = fn(*tensors)
            loss = tf.reduce_sum(y * w)
        return [np.asarray(y), *[np.asarray(g) for g in tape.gradient(loss, tensors)]]
    import jax

    grads = jax.grad(lambda *a: (fn(*a) * w).sum(), argnums=tuple(range(len(inputs))))(*inputs)
    return [np.asarray(fn(*inputs)), *[np.asarray(g) for g in grads]]


def test_gelu_matches_keras_exact_gelu():
    x = np.linspace(-9, 9, 2001, dtype="float32")
    got = _value_and_grads(gelu, [x])
    expected = _value_and_grads(lambda v: keras.activations.gelu(v, approximate=False), [x])
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_layer_norm_matches_keras_layer_normalization():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2, 3, 4, 24)) * 5 + 2).astype("float32")
    gamma, beta = rng.normal(size=24).astype("float32"), rng.normal(size=24).astype("float32")
    got = _value_and_grads(lambda v, g, b: _layer_norm(v, g, b, 1e-6), [x, gamma, beta])
    expected = _value_and_grads(lambda v, g, b: keras.ops.layer_normalization(v, g, b, epsilon=1e-6),
                                [x, gamma, beta])
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

    ours, reference = LayerNorm(), keras.layers.LayerNormalization(epsilon=1e-6)
    for layer in (ours, reference):
        layer.build(x.shape)
        layer.set_weights([gamma, beta])
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(reference(x)), atol=1e-5)
    clone = LayerNorm.from_config(ours.get_config())
    assert isinstance(clone, keras.layers.LayerNormalization) and clone.epsilon == 1e-6


def test_layer_norm_under_mixed_precision_keeps_float32_statistics():
    x = (np.random.default_rng(0).normal(size=(2, 5, 16)) * 100).astype("float32")
    layer = LayerNorm(dtype="mixed_bfloat16")
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16" and layer.gamma.dtype == "float32"
    reference = keras.layers.LayerNormalization(epsilon=1e-6, dtype="mixed_bfloat16")(x)
    np.testing.assert_allclose(np.asarray(keras.ops.cast(y, "float32")),
                               np.asarray(keras.ops.cast(reference, "float32")), atol=2e-2)


def test_layer_norm_rejects_other_axes():
    with pytest.raises(ValueError, match="last axis"):
        LayerNorm(axis=1)
