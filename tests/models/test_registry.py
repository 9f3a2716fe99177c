import keras
import pytest

import mk_keras

pytestmark = pytest.mark.backend_agnostic


def _trainable(model):
    return sum(int(keras.ops.size(w)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "name, expected, tolerance",
    [
        ("convnext_tiny", 28_589_128, 0),  # timm convnext_tiny: 28,589,128
        ("convnextv2_tiny", 28_635_496, 0),  # timm convnextv2_tiny: 28,635,496
        ("resnet18", 11_689_512, 0),  # torchvision resnet18: 11,689,512
        ("resnet50", 25_557_032, 0),  # torchvision resnet50: 25,557,032
        ("mobilenetv2", 3_504_872, 0),  # torchvision mobilenet_v2: 3,504,872
    ],
)
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="parameter counts: layer structure, the same under every backend")
def test_parameter_counts_match_reference(name, expected, tolerance):
    model = mk_keras.create_model(name, num_classes=1000)
    assert abs(_trainable(model) - expected) <= tolerance


@pytest.mark.parametrize(
    "name, depthwise, conv",
    [
        ("convnext_tiny", 18, 4),
        ("convnext_atto_cifar", 12, 4),
        ("convnext_micro_cifar", 5, 4),
        ("convnextv2_micro_cifar", 5, 4),
        ("resnet18_cifar", 0, 17),
        ("resnet34_cifar", 0, 33),
        ("resnet10_cifar", 0, 9),
        ("mobilenetv2_cifar", 17, 1),
        ("alexnet_cifar", 0, 5),
        ("hornet_micro_cifar", 5, 4),
        ("resnet18_w16_cifar", 0, 17),
        ("resnet34_w16_cifar", 0, 33),
        ("resnet50_w16_cifar", 0, 17),  # the 3x3 convs of the 16 bottlenecks and the stem
        ("mobilenetv2_035_cifar", 17, 1),
        ("alexnet_small_cifar", 0, 5),
    ],
)
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="layer structure, the same under every backend")
def test_filter_layer_counts(name, depthwise, conv):
    model = mk_keras.create_model(name, num_classes=10)
    assert len(mk_keras.filter_layers(model, "depthwise")) == depthwise
    assert len(mk_keras.filter_layers(model, "conv")) == conv
    real_dw = [l for l in model.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert len(real_dw) == depthwise


def test_graphs_are_flat_with_deterministic_names():
    a = mk_keras.create_model("convnext_micro_cifar", num_classes=10)
    b = mk_keras.create_model("convnext_micro_cifar", num_classes=10)
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    assert not any(isinstance(l, keras.Model) for l in a.layers)
    names = {l.name for l in a.layers}
    assert {"stage1_block1_dwconv", "stage1_block1_pwconv1", "stage3_block2_dwconv", "head_dense"} <= names


def test_convnext_v1_has_layer_scale_and_v2_has_grn():
    v1 = {l.name for l in mk_keras.create_model("convnext_micro_cifar", num_classes=3).layers}
    v2 = {l.name for l in mk_keras.create_model("convnextv2_micro_cifar", num_classes=3).layers}
    assert "stage1_block1_layer_scale" in v1 and "stage1_block1_grn" not in v1
    assert "stage1_block1_grn" in v2 and "stage1_block1_layer_scale" not in v2


def test_list_models_and_pattern():
    names = mk_keras.list_models()
    assert names == sorted(names)
    assert {"convnext_tiny", "convnextv2_base", "resnet152", "mobilenetv2", "alexnet"} <= set(names)
    assert mk_keras.list_models("resnet*") and all(n.startswith("resnet") for n in mk_keras.list_models("resnet*"))
    assert mk_keras.model_family("convnextv2_tiny") == "convnextv2"


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'convnext_tiy'.*convnext_tiny"):
        mk_keras.create_model("convnext_tiy")


def test_overrides_and_input_shape():
    model = mk_keras.create_model(
        "convnext_micro_cifar", num_classes=4, input_shape=(28, 28, 1), depths=[1, 1, 1, 1], drop_path_rate=0.1
    )
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 4)
    assert len(mk_keras.filter_layers(model, "depthwise")) == 4
    assert any("drop_path" in l.name for l in model.layers)


def test_forward_pass_and_config_round_trip():
    model = mk_keras.create_model("convnextv2_micro_cifar", num_classes=5, drop_path_rate=0.1)
    x = keras.random.uniform((2, 32, 32, 3), maxval=255.0)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert clone.count_params() == model.count_params()
    out, out_clone = keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(clone(x))
    assert out.shape == (2, 5)
    assert (abs(out - out_clone) < 1e-5).all()


@pytest.mark.parametrize("name", ["convnext_micro_cifar", "resnet10_cifar", "mobilenetv2_cifar", "alexnet_cifar"])
def test_logits_stay_float32_under_mixed_precision(name):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = mk_keras.create_model(name, num_classes=3)
        assert keras.backend.standardize_dtype(model.output.dtype) == "float32"
        assert model.layers[-2].compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
