import keras
import numpy as np
import pytest

import mk_keras
from mk_keras.filters import canonical_kernel, from_canonical_kernel, iter_layers, select_indices

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize(
    "builder, kwargs, kind, expected",
    [
        (keras.applications.MobileNetV2, {"input_shape": (32, 32, 3)}, "depthwise", 17),
        (keras.applications.EfficientNetB0, {"input_shape": (32, 32, 3)}, "depthwise", 16),
        (keras.applications.ConvNeXtTiny, {"input_shape": (32, 32, 3)}, "depthwise", 18),
        (keras.applications.Xception, {"input_shape": (71, 71, 3)}, "depthwise", 34),
        (keras.applications.MobileNet, {"input_shape": (32, 32, 3)}, "depthwise", 13),
    ],
)
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="layer structure, the same under every backend")
def test_counts_on_keras_applications(builder, kwargs, kind, expected):
    model = builder(weights=None, **kwargs)
    assert len(mk_keras.filter_layers(model, kind)) == expected


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="layer structure, the same under every backend")
def test_convnext_applications_grouped_convs_are_depthwise_and_ordered():
    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3))
    layers = mk_keras.filter_layers(model, "depthwise")
    assert [l.index for l in layers] == list(range(18))
    assert layers[0].kernel_shape == (7, 7, 1, 96) and layers[-1].kernel_shape == (7, 7, 1, 768)
    # its pwconv Dense layers are pointwise: two per block
    assert len(mk_keras.filter_layers(model, "pointwise")) == 36


def test_descends_into_nested_models():
    inner = mk_keras.create_model("convnext_micro_cifar", num_classes=3)
    outer = keras.Sequential([keras.Input((32, 32, 3)), inner, keras.layers.Dense(2)])
    assert [l.name for l in mk_keras.filter_layers(outer, "depthwise")] == [
        l.name for l in mk_keras.filter_layers(inner, "depthwise")
    ]


def test_separable_halves_and_stage_block():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.SeparableConv2D(8, 3, name="stage1_block2_sep")(inputs)
    x = keras.layers.Conv2D(4, 1, name="pw")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c3")(x))
    dw = mk_keras.filter_layers(model, "depthwise")
    pw = mk_keras.filter_layers(model, "pointwise")
    conv = mk_keras.filter_layers(model, "conv")
    assert [(l.name, l.attr, l.stage, l.block) for l in dw] == [("stage1_block2_sep", "depthwise_kernel", 1, 2)]
    assert [(l.name, l.attr) for l in pw] == [("stage1_block2_sep", "pointwise_kernel"), ("pw", "kernel")]
    assert [l.name for l in conv] == ["c3"] and dw[0].shares_layer


def test_mk_models_expose_stage_and_block():
    layers = mk_keras.filter_layers(mk_keras.create_model("convnext_micro_cifar", num_classes=2), "depthwise")
    assert [(l.stage, l.block) for l in layers] == [(1, 1), (2, 1), (3, 1), (3, 2), (4, 1)]


def test_bad_kind_and_bad_model():
    model = mk_keras.create_model("resnet10_cifar", num_classes=2)
    with pytest.raises(ValueError, match=r"unknown filter kind 'dw'.*depthwise, pointwise, conv"):
        mk_keras.filter_layers(model, "dw")
    with pytest.raises(ValueError, match="expected a keras.Model"):
        mk_keras.filter_layers("resnet10_cifar", "conv")


def test_iter_layers_yields_leaves_of_nested_models_in_forward_order():
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="a"),
                              keras.layers.ReLU(name="b")], name="inner")
    outer = keras.Sequential([keras.Input((8, 8, 3)), inner, keras.layers.Flatten(name="c")])
    assert [layer.name for layer in iter_layers(outer)] == ["a", "b", "c"]


def test_canonical_kernel_of_grouped_conv_with_multiplier_round_trips():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(6, 3, groups=3, name="g")(inputs))
    (entry,) = mk_keras.filter_layers(model, "depthwise")
    value = np.arange(3 * 3 * 1 * 6, dtype="float32").reshape(3, 3, 1, 6)  # output o = channel * 2 + j
    canon = canonical_kernel(value, entry)
    assert canon.shape == entry.canonical_shape == (3, 3, 3, 2)
    np.testing.assert_array_equal(canon[:, :, 1, 0], value[:, :, 0, 2])
    np.testing.assert_array_equal(from_canonical_kernel(canon, entry), value)


@pytest.mark.parametrize("n, order, expected", [(2, "first", [0, 1]), (2, "last", [3, 4]), (0, "last", [])])
def test_select_indices(n, order, expected):
    assert select_indices(5, n, order) == expected


@pytest.mark.parametrize("n, order, message", [(6, "first", r"n=6 is out of range; allowed: 0..5"),
                                               (True, "first", r"n=True"), (1, "mid", r"order='mid'; allowed")])
def test_select_indices_rejects_bad_values(n, order, message):
    with pytest.raises(ValueError, match=message):
        select_indices(5, n, order)
