"""Recipe and distribution factory: numerical checks without training runs."""

import json
import math

import keras
import numpy as np
import pytest

from mk_keras import create_model, freeze_filters
from mk_keras.training import (
    compile_model,
    lr_schedule,
    make_distribution,
    make_optimizer,
    no_decay_variables,
    peak_learning_rate,
    precision_policy,
    resolve_jit_compile,
)
from mk_keras.training.distribute import Distribution
from mk_keras.training.recipe import divisor_at_most


def test_weight_decay_skips_norms_biases_and_frozen_weights():
    model = create_model("convnext_micro_cifar", 3)
    freeze_filters(model, 2)
    excluded = {id(v) for v in no_decay_variables(model)}
    frozen = [v for v in model.weights if v.path.startswith(("stage1_block1_dwconv", "stage2_block1_dwconv"))]
    assert frozen and all(id(v) in excluded for v in frozen)
    lr, wd = 0.1, 0.5
    optimizer = make_optimizer(model, lr, weight_decay=wd)
    variables = model.trainable_variables
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    # Zero gradients: Adam's step is exactly 0, so only decoupled weight decay moves a variable.
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in variables])
    decayed = 0
    for v, old in zip(variables, before):
        new = keras.ops.convert_to_numpy(v)
        if id(v) in excluded:
            np.testing.assert_array_equal(new, old, err_msg=v.path)
            assert v.ndim <= 1, v.path
        else:
            np.testing.assert_allclose(new, old * (1 - lr * wd), rtol=1e-6, err_msg=v.path)
            decayed += 1
    names = {v.path for v in variables if id(v) in excluded}
    assert any(n.endswith("bias") for n in names) and any(n.endswith("gamma") for n in names)
    assert decayed == sum(1 for v in variables if v.ndim > 1)


def test_warmup_then_cosine():
    peak, total, warmup = 2e-3, 100, 10
    schedule = lr_schedule(peak, total, warmup, min_lr_ratio=0.1)
    for step in (0, 5, 10, 40, 77, 100):
        if step < warmup:
            expected = peak * step / warmup
        else:
            t = (step - warmup) / (total - warmup)
            expected = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9), step
    no_warmup = lr_schedule(peak, total, 0)
    assert float(no_warmup(0)) == pytest.approx(peak)


def test_lr_scaling_rule():
    assert peak_learning_rate(8e-4, 512) == pytest.approx(1.6e-3)
    assert peak_learning_rate(8e-4, 512, "none") == 8e-4
    with pytest.raises(ValueError, match="allowed: linear, none"):
        peak_learning_rate(1e-3, 64, "sqrt")


def test_jit_off_on_cpu_and_compile_uses_it():
    assert resolve_jit_compile(None) is False
    assert resolve_jit_compile(True) is True
    model = create_model("convnext_micro_cifar", 3)
    compile_model(model, make_optimizer(model, 1e-3), 3, label_smoothing=0.1, steps_per_execution=4)
    assert model.jit_compile is False and model.steps_per_execution == 4
    assert model.loss.get_config()["label_smoothing"] == 0.1 and model.loss.get_config()["from_logits"]


def test_steps_per_execution_divides_the_epoch():
    assert divisor_at_most(10, 8) == 5
    assert divisor_at_most(16, 8) == 8
    assert divisor_at_most(7, 8) == 7
    assert divisor_at_most(13, 8) == 1


def test_precision_policy_is_scoped():
    with precision_policy(True) as name:
        assert name == "mixed_bfloat16"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="mixed_precision='fp8'; allowed:"):
        with precision_policy("fp8"):
            pass


def test_distribution_factory(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_distribution("auto").name == "default"
    one = make_distribution("one_device")
    assert one.num_replicas == 1 and one.strategy is not None
    with pytest.raises(ValueError, match="allowed: auto, one_device, mirrored, multi_worker, tpu, data_parallel"):
        make_distribution("horovod")
    with pytest.raises(ValueError, match="JAX-backend path"):
        make_distribution("data_parallel")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_distribution("multi_worker")


@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        ({"worker": ["a:1", "b:2"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:2"]}, "worker", 1, False),
        ({"chief": ["c:0"], "worker": ["a:1"]}, "worker", 0, False),
        ({"chief": ["c:0"], "worker": ["a:1"]}, "chief", 0, True),
    ],
)
def test_chief_owns_the_run_directory(monkeypatch, cluster, task_type, task_id, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": task_id}}))
    assert Distribution("multi_worker", 2, task_type=task_type, task_id=task_id).is_chief is chief
