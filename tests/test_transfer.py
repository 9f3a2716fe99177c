import hashlib
import os

import keras
import numpy as np
import pytest

import mk_keras

pytestmark = pytest.mark.backend_agnostic


def sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _np(v):
    return keras.ops.convert_to_numpy(v)


def _kernels(model, kind="depthwise"):
    return [_np(l.kernel).copy() for l in mk_keras.filter_layers(model, kind)]


def _fit(model, classes, steps=3):
    x = np.random.default_rng(0).uniform(0, 255, (16 * steps, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16 * steps) % classes, classes)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_frozen_kernels_stay_bit_identical_and_others_change():
    source = mk_keras.create_model("convnext_micro_cifar", num_classes=10)
    target = mk_keras.create_model("convnext_micro_cifar", num_classes=4)
    src = _kernels(source)
    before = _kernels(target)
    report = mk_keras.transfer_filters(source, target, 3, kind="depthwise")
    _fit(target, 4)
    after = _kernels(target)
    for i in range(3):
        np.testing.assert_array_equal(after[i], src[i])
    for i in (3, 4):
        assert not np.array_equal(after[i], before[i])
    assert report.frozen_layers == ["stage1_block1_dwconv", "stage2_block1_dwconv", "stage3_block1_dwconv"]
    assert [e.index for e in report.entries] == [0, 1, 2]


def test_unfrozen_transfer_copies_then_trains():
    source = mk_keras.create_model("convnext_micro_cifar", num_classes=10)
    target = mk_keras.create_model("convnext_micro_cifar", num_classes=4)
    report = mk_keras.transfer_filters(source, target, 2, freeze=False)
    np.testing.assert_array_equal(_kernels(target)[1], _kernels(source)[1])
    np.testing.assert_array_equal(
        _np(target.get_layer("stage1_block1_dwconv").bias), _np(source.get_layer("stage1_block1_dwconv").bias)
    )
    _fit(target, 4)
    assert not report.frozen_layers
    assert not np.array_equal(_kernels(target)[0], _kernels(source)[0])


def test_order_last_freezes_the_last_layers():
    source = mk_keras.create_model("resnet10_cifar", num_classes=10)
    target = mk_keras.create_model("resnet10_cifar", num_classes=10)
    report = mk_keras.transfer_filters(source, target, 2, kind="conv", order="last")
    layers = mk_keras.filter_layers(target, "conv")
    assert [l.name for l in layers if not l.layer.trainable] == [layers[-2].name, layers[-1].name]
    assert [e.index for e in report.entries] == [7, 8]
    np.testing.assert_array_equal(_np(layers[-1].kernel), _np(mk_keras.filter_layers(source, "conv")[-1].kernel))


def test_freeze_filters_without_copy_and_following_norm():
    model = mk_keras.create_model("mobilenetv2_cifar", num_classes=3)
    before = _kernels(model)
    report = mk_keras.freeze_filters(model, 2, freeze_following_norm=True)
    assert report.frozen_layers == report.fully_frozen_layers == [
        "stage1_block1_dwconv",
        "stage1_block1_dwconv_bn",
        "stage2_block1_dwconv",
        "stage2_block1_dwconv_bn",
    ]
    assert not model.get_layer("stage1_block1_dwconv_bn").trainable
    assert report.entries[0].frozen_variables == ["stage1_block1_dwconv/kernel"] + [
        f"stage1_block1_dwconv_bn/{v}" for v in ("gamma", "beta", "moving_mean", "moving_variance")]
    assert [e.kernel_sha256 for e in report.entries] == [sha256(k) for k in before[:2]]
    assert report.entries[0].source_sha256 is None and not report.entries[0].norm_copied


def test_following_norm_is_copied_when_frozen():
    source = mk_keras.create_model("resnet10_cifar", num_classes=3)
    target = mk_keras.create_model("resnet10_cifar", num_classes=3)
    source.get_layer("stem_bn").set_weights([np.full((24,), 2.0, "float32")] * 4)
    mk_keras.transfer_filters(source, target, 1, kind="conv", freeze_following_norm=True)
    assert not target.get_layer("stem_bn").trainable
    np.testing.assert_array_equal(target.get_layer("stem_bn").get_weights()[0], np.full((24,), 2.0))


def _dw_pair(src_shape, dst_shape):
    def model(kernel, channels, name):
        inputs = keras.Input((8, 8, channels))
        out = keras.layers.DepthwiseConv2D(kernel, padding="same", name="dw")(inputs)
        return keras.Model(inputs, out, name=name)

    source, target = model(src_shape[0], src_shape[1], "s"), model(dst_shape[0], dst_shape[1], "t")
    value = np.arange(np.prod(source.get_layer("dw").kernel.shape), dtype="float32").reshape(
        source.get_layer("dw").kernel.shape
    )
    source.get_layer("dw").kernel.assign(value)
    return source, target, value


def test_kernel_maps_give_documented_values():
    source, target, value = _dw_pair((7, 4), (3, 4))
    report = mk_keras.transfer_filters(source, target, 1, kernel_map="center_crop")
    np.testing.assert_array_equal(_np(target.get_layer("dw").kernel), value[2:5, 2:5])
    assert report.entries[0].mapping == "kernel:center_crop"

    source, target, value = _dw_pair((3, 4), (7, 4))
    mk_keras.transfer_filters(source, target, 1, kernel_map="zero_pad")
    padded = _np(target.get_layer("dw").kernel)
    np.testing.assert_array_equal(padded[2:5, 2:5], value)
    assert padded.sum() == value.sum()

    source, target, _ = _dw_pair((7, 4), (3, 4))
    source.get_layer("dw").kernel.assign(np.ones((7, 7, 4, 1), "float32"))
    mk_keras.transfer_filters(source, target, 1, kernel_map="resize")
    np.testing.assert_allclose(_np(target.get_layer("dw").kernel), np.ones((3, 3, 4, 1)), atol=1e-5)


def test_channel_maps_give_documented_values():
    source, target, value = _dw_pair((3, 6), (3, 4))
    mk_keras.transfer_filters(source, target, 1, channel_map="truncate")
    np.testing.assert_array_equal(_np(target.get_layer("dw").kernel), value[:, :, :4])

    source, target, value = _dw_pair((3, 2), (3, 5))
    mk_keras.transfer_filters(source, target, 1, channel_map="tile")
    np.testing.assert_array_equal(_np(target.get_layer("dw").kernel), value[:, :, [0, 1, 0, 1, 0]])


def test_cross_architecture_convnext_to_mobilenet():
    source = mk_keras.create_model("convnext_micro_cifar", num_classes=10)
    target = mk_keras.create_model("mobilenetv2_cifar", num_classes=10)
    report = mk_keras.transfer_filters(source, target, 5, kernel_map="center_crop", channel_map="auto")
    assert [e.mapping for e in report.entries][0] == "kernel:center_crop+channel:auto"
    src0 = _kernels(source)[0]  # (7, 7, 24, 1) -> (3, 3, 32, 1): crop, then tile 24 -> 32 channels
    np.testing.assert_array_equal(_kernels(target)[0], src0[2:5, 2:5][:, :, [i % 24 for i in range(32)]])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="keras.applications structure and a NumPy-level kernel copy, the same under every backend")
def test_applications_grouped_conv_to_depthwise_layer():
    source = keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3))
    target = mk_keras.create_model("convnext_tiny", num_classes=10, input_shape=(32, 32, 3))
    mk_keras.transfer_filters(source, target, 2)
    src = _np(mk_keras.filter_layers(source, "depthwise")[1].kernel)  # (7, 7, 1, 96)
    np.testing.assert_array_equal(_kernels(target)[1], src.reshape(7, 7, 96, 1))


def _separable():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x)))


def _separable_values(model):
    return {w.path: _np(w).copy() for w in model.get_layer("sep").weights}


@pytest.mark.parametrize("kind, frozen", [("depthwise", "depthwise_kernel"), ("pointwise", "pointwise_kernel")])
@pytest.mark.parametrize("copy", [True, False])
def test_separable_layer_freezes_only_the_transferred_kernel(kind, frozen, copy):
    target = _separable()
    if copy:
        report = mk_keras.transfer_filters(_separable(), target, 1, kind=kind)
    else:
        report = mk_keras.freeze_filters(target, 1, kind=kind)
    layer = target.get_layer("sep")
    assert layer.trainable and [w.path for w in layer.non_trainable_weights] == [f"sep/{frozen}"]
    assert report.frozen_variables == [f"sep/{frozen}"] and report.entries[0].variable == f"sep/{frozen}"
    assert report.frozen_layers == ["sep"] and report.fully_frozen_layers == []
    before = _separable_values(target)
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    target.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    target.fit(x, np.ones((8, 2), "float32"), batch_size=8, verbose=0)
    after = _separable_values(target)
    changed = sorted(path for path in before if not np.array_equal(before[path], after[path]))
    assert changed == sorted({"sep/depthwise_kernel", "sep/pointwise_kernel", "sep/bias"} - {f"sep/{frozen}"})


def test_report_records_source_and_target_hashes():
    source, target, value = _dw_pair((7, 4), (3, 4))
    source.get_layer("dw").bias.assign(np.arange(4, dtype="float32"))
    report = mk_keras.transfer_filters(source, target, 1, kernel_map="center_crop")
    entry = report.to_dict()["entries"][0]
    assert entry["source_sha256"] == sha256(value)
    assert entry["kernel_sha256"] == sha256(value[2:5, 2:5]) == sha256(_np(target.get_layer("dw").kernel))
    assert entry["source_bias_sha256"] == entry["bias_sha256"] == sha256(np.arange(4, dtype="float32"))
    assert (entry["source_index"], entry["index"], entry["variable"]) == (0, 0, "dw/kernel")
    assert report.to_dict()["frozen_variables"] == ["dw/kernel", "dw/bias"]


def test_following_norm_of_another_type_is_refused_before_target_changes():
    source = mk_keras.create_model("convnext_micro_cifar", num_classes=3)
    target = mk_keras.create_model("mobilenetv2_cifar", num_classes=3)
    before = _kernels(target)
    with pytest.raises(ValueError, match=r"source layer 'stage1_block1_dwconv' \(LayerNorm 'stage1_block1_norm' "
                       r"\[\(24,\), \(24,\)\]\) into the norm after target layer 'stage1_block1_dwconv' "
                       r"\(BatchNormalization 'stage1_block1_dwconv_bn' \[\(32,\)"):
        mk_keras.transfer_filters(source, target, 2, kernel_map="auto", channel_map="auto",
                                  freeze_following_norm=True)
    for a, b in zip(before, _kernels(target)):
        np.testing.assert_array_equal(a, b)
    assert all(layer.trainable for layer in target.layers)


def _bn_fit(model):
    x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    model.train_on_batch(x, keras.utils.to_categorical(np.arange(16) % 3, 3))


@pytest.mark.parametrize("mode", [True, "all", "affine"])
def test_norm_freeze_all_uses_moving_statistics_and_affine_keeps_batch_statistics(mode):
    source = mk_keras.create_model("resnet10_cifar", num_classes=3)
    target = mk_keras.create_model("resnet10_cifar", num_classes=3)
    report = mk_keras.transfer_filters(source, target, 1, kind="conv", freeze_following_norm=mode)
    bn = target.get_layer("stem_bn")
    before = {w.path: _np(w).copy() for w in bn.weights}
    _bn_fit(target)
    changed = {w.path for w in bn.weights if not np.array_equal(before[w.path], _np(w))}
    entry = report.entries[0]
    assert entry.norm_layer == "stem_bn" and entry.norm_copied
    if mode == "affine":  # training mode: batch statistics, moving ones updated; gamma/beta frozen
        assert bn.trainable and changed == {"stem_bn/moving_mean", "stem_bn/moving_variance"}
        assert entry.frozen_variables == ["stem_conv/kernel", "stem_bn/gamma", "stem_bn/beta"]
        assert report.fully_frozen_layers == ["stem_conv"] and report.frozen_layers == ["stem_conv", "stem_bn"]
    else:  # inference mode: nothing in the layer changes
        assert not bn.trainable and changed == set()
        assert report.fully_frozen_layers == ["stem_conv", "stem_bn"]


@pytest.mark.parametrize("kwargs, message", [
    ({"freeze_following_norm": "gamma"}, r"freeze_following_norm='gamma'; allowed: False, True, 'all', 'affine'"),
    ({"freeze_following_norm": "all", "freeze": False}, r"freeze_following_norm='all' needs freeze=True"),
])
def test_bad_norm_freeze(kwargs, message):
    source = mk_keras.create_model("resnet10_cifar", num_classes=3)
    target = mk_keras.create_model("resnet10_cifar", num_classes=3)
    with pytest.raises(ValueError, match=message):
        mk_keras.transfer_filters(source, target, 1, kind="conv", **kwargs)
    with pytest.raises(ValueError, match=r"freeze_following_norm='gamma'"):
        mk_keras.freeze_filters(target, 1, kind="conv", freeze_following_norm="gamma")
    assert all(layer.trainable for layer in target.layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 6}, r"n=6 is out of range; allowed: 0..5"),
        ({"n": -1}, r"n=-1 is out of range"),
        ({"n": 1, "kind": "grouped"}, r"unknown filter kind 'grouped'"),
        ({"n": 1, "order": "middle"}, r"order='middle'; allowed: first, last"),
        ({"n": 1, "kernel_map": "stretch"}, r"kernel_map='stretch'"),
    ],
)
def test_bad_arguments(kwargs, message):
    source = mk_keras.create_model("convnext_micro_cifar", num_classes=3)
    target = mk_keras.create_model("convnext_micro_cifar", num_classes=3)
    with pytest.raises(ValueError, match=message):
        mk_keras.transfer_filters(source, target, **kwargs)


def test_mismatched_shapes_name_both_layers_and_leave_target_untouched():
    source = mk_keras.create_model("convnext_micro_cifar", num_classes=3)
    target = mk_keras.create_model("mobilenetv2_cifar", num_classes=3)
    before = _kernels(target)
    with pytest.raises(ValueError, match=r"source layer 'stage1_block1_dwconv' \(7, 7, 24, 1\) vs target layer"):
        mk_keras.transfer_filters(source, target, 2)
    for a, b in zip(before, _kernels(target)):
        np.testing.assert_array_equal(a, b)
    assert all(l.layer.trainable for l in mk_keras.filter_layers(target, "depthwise"))


def test_same_object_is_rejected():
    model = mk_keras.create_model("convnext_micro_cifar", num_classes=3)
    with pytest.raises(ValueError, match="same model object"):
        mk_keras.transfer_filters(model, model, 1)


def test_keras_file_and_config_round_trip_keep_frozen_flags(tmp_path):
    source = mk_keras.create_model("convnext_micro_cifar", num_classes=3)
    target = mk_keras.create_model("convnext_micro_cifar", num_classes=3)
    mk_keras.transfer_filters(source, target, 2)
    path = os.path.join(tmp_path, "m.keras")
    target.save(path)
    loaded = keras.saving.load_model(path)
    clone = keras.Model.from_config(target.get_config())
    for model in (loaded, clone):
        flags = [l.layer.trainable for l in mk_keras.filter_layers(model, "depthwise")]
        assert flags == [False, False, True, True, True]
    np.testing.assert_array_equal(_kernels(loaded)[1], _kernels(source)[1])


@pytest.mark.backend_agnostic
def test_frozen_moving_statistics_need_the_same_input_scaling():
    source = mk_keras.create_model("resnet18_cifar", 3, preprocessing="tf")  # as converted keras MobileNetV2
    target = mk_keras.create_model("resnet18_cifar", 3)
    with pytest.raises(ValueError, match="normalises its inputs differently"):
        mk_keras.transfer_filters(source, target, 1, "conv", freeze_following_norm="all")
    report = mk_keras.transfer_filters(source, target, 1, "conv", freeze_following_norm="affine")
    assert len(report.entries) == 1
