"""mk_keras' AdamW: the same update as keras.optimizers.AdamW, fewer graph ops on TensorFlow."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from mk_keras import create_model, freeze_filters
from mk_keras.training import lr_schedule, make_optimizer
from mk_keras.training.optimizer import AdamW

_STEPS = 6


def _train(optimizer_class, steps=_STEPS, **kwargs):
    """Weights and optimizer state after `steps` updates with the same random gradients."""
    keras.utils.set_random_seed(3)
    model = create_model("convnext_micro_cifar", 4)
    freeze_filters(model, 2)
    rng = np.random.default_rng(0)
    optimizer = optimizer_class(learning_rate=lr_schedule(1e-2, 20, 2), weight_decay=0.5, **kwargs)
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.weights if v.ndim <= 1])
    for _ in range(steps):
        grads = [rng.standard_normal(v.shape).astype("float32") for v in model.trainable_variables]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return [keras.ops.convert_to_numpy(v) for v in [*model.weights, *optimizer.variables]]


# 1 - beta exact in float32: TensorFlow's fused kernel (which computes 1 - beta in float32) and Keras' ops
# (1 - beta in float64, then cast) then do the same arithmetic, so the results are bit-identical.
EXACT_BETAS = {"beta_1": 0.875, "beta_2": 1 - 2.0**-10}


# TensorFlow only: the fused update is TensorFlow's; other backends run Keras' own AdamW code (126 s under JAX)
@pytest.mark.parametrize("kwargs", [EXACT_BETAS, {"amsgrad": True, **EXACT_BETAS}], ids=["adamw", "amsgrad"])
def test_bit_identical_to_keras_adamw(kwargs):
    ours, reference = _train(AdamW, **kwargs), _train(keras.optimizers.AdamW, **kwargs)
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        np.testing.assert_array_equal(a, b)
    initial = _train(AdamW, steps=0, **kwargs)
    assert sum(not np.array_equal(a, b) for a, b in zip(ours, initial)) > 50  # the updates moved the weights


def test_default_betas_match_keras_adamw_to_float32_rounding():
    ours, reference = _train(AdamW), _train(keras.optimizers.AdamW)
    for a, b in zip(ours, reference):
        # 1 - 0.999 rounded in float32 (the kernel) vs float64 (Keras): 1.3e-5 apart, a few ulps after 6 steps
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow graph op counts")
def test_update_traces_far_fewer_ops_than_keras_adamw():
    import tensorflow as tf

    def op_count(optimizer_class):
        model = create_model("convnext_micro_cifar", 4)
        optimizer = optimizer_class(learning_rate=lr_schedule(1e-2, 20, 2), weight_decay=0.05)
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.weights if v.ndim <= 1])
        optimizer.build(model.trainable_variables)
        grads = [tf.zeros(v.shape) for v in model.trainable_variables]
        step = tf.function(lambda: optimizer.apply_gradients(zip(grads, model.trainable_variables)))
        return len(step.get_concrete_function().graph.get_operations())

    ours, reference = op_count(AdamW), op_count(keras.optimizers.AdamW)
    assert ours * 4 < reference, (ours, reference)


@pytest.mark.backend_agnostic
def test_serialises_as_mk_keras_adamw(tmp_path):
    model = create_model("convnext_micro_cifar", 3)
    optimizer = make_optimizer(model, lr_schedule(1e-3, 10, 2), weight_decay=0.1)
    assert isinstance(optimizer, AdamW) and isinstance(optimizer, keras.optimizers.AdamW)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    model.fit(np.zeros((4, 32, 32, 3)), np.eye(3)[[0, 1, 2, 0]], epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is AdamW
    assert loaded.optimizer.get_config() == optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


_MIRRORED = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mk_keras.training import lr_schedule
    from mk_keras.training.optimizer import AdamW

    def run(optimizer_class, strategy):
        with strategy.scope():
            var = keras.Variable(np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4))
            optimizer = optimizer_class(learning_rate=lr_schedule(0.1, 6, 2), weight_decay=0.5, beta_1=0.875,
                                        beta_2=1 - 2.0**-10)
            optimizer.build([var])

        @tf.function
        def step(g):
            def replica_fn():
                ctx = tf.distribute.get_replica_context()
                optimizer.apply_gradients([(g * tf.cast(ctx.replica_id_in_sync_group + 1, "float32"), var)])
            strategy.run(replica_fn)

        for i in range(3):
            step(tf.constant(np.full((3, 4), i + 1.0, "float32")))
        return var.numpy(), [v.numpy() for v in optimizer.variables]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ours, ours_opt = run(AdamW, mirrored)
    ref, ref_opt = run(keras.optimizers.AdamW, mirrored)
    np.testing.assert_array_equal(ours, ref)  # betas as EXACT_BETAS: bit-identical
    for a, b in zip(ours_opt, ref_opt):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(ours, np.linspace(-1, 1, 12).reshape(3, 4))
    print("OK")
    """
)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_bit_identical_to_keras_adamw_under_mirrored_strategy():
    proc = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
