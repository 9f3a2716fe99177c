"""The builders initialise as their reference implementations (docs/models.md): kernel statistics, biases,
norm layers, and reproducibility from `keras.utils.set_random_seed`."""

import math

import keras
import numpy as np
import pytest

import mk_keras

pytestmark = pytest.mark.backend_agnostic


def _w(model, layer, attr="kernel"):
    return keras.ops.convert_to_numpy(getattr(model.get_layer(layer), attr)).astype(np.float64)


def _assert_normal(values, std, rel=0.03):
    """Zero-mean, untruncated normal with this std: ~4.55 % of the values lie beyond 2 std (a normal truncated
    at 2 std, Keras' TruncatedNormal, has none)."""
    values = values.ravel()
    assert abs(values.mean()) < 5 * std / math.sqrt(values.size)
    assert values.std() == pytest.approx(std, rel=rel)
    assert 0.035 < np.mean(np.abs(values) > 2 * std) < 0.056


def test_convnext_trunc_normal_002_and_zero_biases():
    model = mk_keras.create_model("convnext_micro_cifar", num_classes=10)
    _assert_normal(_w(model, "stage4_block1_pwconv1"), 0.02)  # 192 x 768
    _assert_normal(_w(model, "stage4_block1_dwconv"), 0.02, rel=0.05)  # 7 x 7 x 192
    _assert_normal(_w(model, "stage4_downsample_conv"), 0.02)  # 2 x 2 x 96 x 192
    _assert_normal(_w(model, "head_dense"), 0.02, rel=0.1)  # 192 x 10
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            assert not np.any(keras.ops.convert_to_numpy(layer.bias)), layer.name
    np.testing.assert_array_equal(_w(model, "stage1_block1_norm", "gamma"), 1.0)
    np.testing.assert_array_equal(_w(model, "stage1_block1_norm", "beta"), 0.0)
    np.testing.assert_allclose(_w(model, "stage1_block1_layer_scale", "gamma"), 1e-6)


def test_convnextv2_grn_starts_at_zero():
    model = mk_keras.create_model("convnextv2_micro_cifar", num_classes=10)
    _assert_normal(_w(model, "stage4_block1_pwconv2"), 0.02)  # 768 x 192
    assert not np.any(_w(model, "stage1_block1_grn", "gamma")) and not np.any(_w(model, "stage1_block1_grn", "beta"))


def test_resnet_kaiming_fan_out_bn_and_torch_linear_head():
    model = mk_keras.create_model("resnet10_cifar", num_classes=10)
    _assert_normal(_w(model, "stage4_block1_conv2"), math.sqrt(2 / (3 * 3 * 192)))  # fan_out = 3*3*C_out
    _assert_normal(_w(model, "stage4_block1_shortcut_conv"), math.sqrt(2 / 192))  # 1x1: fan_out = C_out
    np.testing.assert_array_equal(_w(model, "stage1_block1_bn1", "gamma"), 1.0)
    np.testing.assert_array_equal(_w(model, "stage1_block1_bn1", "beta"), 0.0)
    bound = 1 / math.sqrt(192)  # PyTorch nn.Linear: kernel and bias uniform in +-1/sqrt(fan_in)
    for values in (_w(model, "head_dense"), _w(model, "head_dense", "bias")):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.5 * bound
    kernel = _w(model, "head_dense")
    assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)  # uniform std = bound / sqrt(3)


def test_mobilenetv2_kaiming_fan_out_with_torch_depthwise_fan_and_normal_head():
    model = mk_keras.create_model("mobilenetv2_cifar", num_classes=10)
    # torch's fan-out of the (960, 1, 3, 3) depthwise weight is 960 * 9 (groups are ignored).
    _assert_normal(_w(model, "stage7_block1_dwconv"), math.sqrt(2 / (9 * 960)), rel=0.05)
    _assert_normal(_w(model, "head_conv"), math.sqrt(2 / 1280))
    _assert_normal(_w(model, "head_dense"), 0.01, rel=0.05)
    assert not np.any(_w(model, "head_dense", "bias"))
    np.testing.assert_array_equal(_w(model, "stage7_block1_dwconv_bn", "gamma"), 1.0)


def test_alexnet_caffe_reference_init():
    model = mk_keras.create_model("alexnet_cifar", num_classes=10)
    _assert_normal(_w(model, "conv4"), 0.01)
    _assert_normal(_w(model, "fc6"), 0.005)
    _assert_normal(_w(model, "head_dense"), 0.01, rel=0.05)
    biases = {name: set(np.unique(_w(model, name, "bias"))) for name in
              ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "head_dense")}
    assert biases == {"conv1": {0.0}, "conv2": {1.0}, "conv3": {0.0}, "conv4": {1.0}, "conv5": {1.0},
                      "fc6": {1.0}, "fc7": {1.0}, "head_dense": {0.0}}


def test_alexnet_small_he_init_and_bad_init_named():
    # The CPU-scale arm trains from He-normal weights and zero biases (docs/models.md says why).
    model = mk_keras.create_model("alexnet_small_cifar", num_classes=10, input_shape=(28, 28, 1))
    for name, fan_in in (("conv4", 3 * 3 * 96), ("fc6", _w(model, "fc6").shape[0])):
        # keras.initializers.HeNormal: a normal truncated at 2 std, rescaled so its std is sqrt(2 / fan_in)
        assert _w(model, name).std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03), name
    for name in ("conv2", "conv5", "fc6", "fc7", "head_dense"):
        assert not np.any(_w(model, name, "bias")), name
    with pytest.raises(ValueError, match="init='xavier'; allowed: caffe, he"):
        mk_keras.create_model("alexnet_small_cifar", num_classes=10, init="xavier")


@pytest.mark.parametrize("name", ["convnext_micro_cifar", "resnet10_cifar", "mobilenetv2_cifar"])
def test_same_global_seed_same_weights_and_layers_draw_independently(name):
    def build(seed):
        keras.utils.set_random_seed(seed)
        return mk_keras.create_model(name, num_classes=10)

    first, again, other = build(3), build(3), build(4)
    for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    kernels = [keras.ops.convert_to_numpy(e.kernel) for e in mk_keras.filter_layers(first, "depthwise")
               + mk_keras.filter_layers(first, "conv")]
    assert not np.array_equal(kernels[-1], keras.ops.convert_to_numpy(
        (mk_keras.filter_layers(other, "depthwise") + mk_keras.filter_layers(other, "conv"))[-1].kernel))
    same_shape = {}
    for kernel in kernels:
        same_shape.setdefault(kernel.shape, []).append(kernel)
    pairs = [group for group in same_shape.values() if len(group) > 1]
    assert pairs, "no two filter layers of the same shape to compare"
    for group in pairs:
        assert not np.array_equal(group[0], group[1])  # one initialiser instance per layer, not a shared seed
