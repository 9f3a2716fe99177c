import zipfile

import keras
import numpy as np
import pytest
from analysis_helpers import plant_model, planted, tiny, tiny_conv, to_np

import mk_keras
from mk_keras.analysis import (
    MASTER_KEY_NAMES,
    MasterKeyDepthwiseConv2D,
    assign_master_keys,
    fit_master_keys,
    layer_filters,
    master_keys,
)

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("k", [3, 5, 7])
def test_keys_are_centred_unit_norm_and_distinct(k):
    keys = master_keys(k)
    assert keys.shape == (8, k, k) and keys.dtype == np.float32
    flat = keys.reshape(8, -1).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1, atol=1e-6)
    off_diagonal = np.abs(flat @ flat.T - np.eye(8))
    assert off_diagonal.max() < (0.55 if k == 7 else 0.9)


def test_key_geometry_matches_the_documented_definitions():
    keys = dict(zip(MASTER_KEY_NAMES, master_keys(7)))
    for name in ("gaussian", "centre_surround"):
        np.testing.assert_allclose(keys[name], keys[name][::-1, ::-1], atol=1e-7)
        np.testing.assert_allclose(keys[name], keys[name].T, atol=1e-7)
    assert keys["gaussian"][3, 3] > keys["gaussian"][0, 0]
    assert keys["centre_surround"][3, 3] > 0 > keys["centre_surround"][3, 1]
    np.testing.assert_allclose(keys["dx"], -keys["dx"][:, ::-1], atol=1e-7)
    np.testing.assert_allclose(keys["dy"], keys["dx"].T, atol=1e-7)
    np.testing.assert_allclose(keys["one_sided_-x"], keys["one_sided_+x"][:, ::-1], atol=1e-7)
    np.testing.assert_allclose(keys["one_sided_+y"], keys["one_sided_+x"].T, atol=1e-7)
    np.testing.assert_allclose(keys["one_sided_-y"], keys["one_sided_+y"][::-1, :], atol=1e-7)
    row, col = np.unravel_index(np.argmax(keys["one_sided_+x"]), (7, 7))
    assert row == 3 and col > 3  # positive lobe to the right (+x)


def test_fit_recovers_key_scale_and_shift_of_a_times_key_plus_b():
    ids = np.arange(16) % 8
    filters, a, b = planted(ids)
    fit = fit_master_keys(filters)
    np.testing.assert_array_equal(fit.index, ids)
    np.testing.assert_allclose(fit.a, a, rtol=1e-6)
    np.testing.assert_allclose(fit.b, b, atol=1e-12)
    np.testing.assert_allclose(fit.cosine, 1, atol=1e-6)
    np.testing.assert_allclose(fit.reconstruct(master_keys(7)), filters, atol=1e-6)


def test_fit_of_a_noisy_filter_picks_the_best_key():
    filters, _, _ = planted([7, 1], noise=0.05, seed=3)
    fit = fit_master_keys(filters)
    np.testing.assert_array_equal(fit.index, [7, 1])
    assert (fit.cosine > 0.8).all() and (fit.cosine < 1).all()


@pytest.mark.parametrize("bad", [4, 1, "7", True])
def test_master_keys_rejects_bad_kernel_size(bad):
    with pytest.raises(ValueError, match="odd integer"):
        master_keys(bad)


def test_fit_rejects_non_square_filters():
    with pytest.raises(ValueError, match=r"\(N, k, k\)"):
        fit_master_keys(np.zeros((2, 3, 5)))


def _train(model):
    x = np.random.default_rng(0).uniform(0, 1, (16, 12, 12, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 4, 4)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss="categorical_crossentropy", jit_compile=False)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_round_robin_keys_stay_bit_identical_while_shift_and_bias_train():
    model, report = assign_master_keys(tiny(), 1)
    first, second, _ = mk_keras.filter_layers(model, "depthwise")
    assert type(first.layer) is MasterKeyDepthwiseConv2D and type(second.layer) is keras.layers.DepthwiseConv2D
    keys = master_keys(7)
    kernel = to_np(first.kernel).copy()
    for c in range(16):
        np.testing.assert_array_equal(kernel[:, :, c, 0], keys[c % 8])
    assert report.entries[0].key_index == [c % 8 for c in range(16)] and report.entries[0].key_counts == [2] * 8
    assert not first.kernel.trainable and first.layer.shift.trainable and first.layer.bias.trainable
    before = {name: to_np(getattr(first.layer, name)).copy() for name in ("shift", "bias")}
    other = to_np(second.kernel).copy()
    _train(model)
    np.testing.assert_array_equal(to_np(first.kernel), kernel)
    for name, value in before.items():
        assert not np.array_equal(to_np(getattr(first.layer, name)), value), name
    assert not np.array_equal(to_np(second.kernel), other)


def test_bias_shift_freezes_the_kernel_variable_in_place():
    model = tiny()
    same, report = assign_master_keys(model, 2, order="last", shift="bias")
    assert same is model and report.shift == "bias" and [e.layer for e in report.entries] == ["dw2", "dw3"]
    layer = model.get_layer("dw3")
    assert type(layer) is keras.layers.DepthwiseConv2D and layer.trainable
    assert not layer.kernel.trainable and layer.bias.trainable
    kernel = to_np(layer.kernel).copy()
    np.testing.assert_array_equal(kernel[:, :, 5, 0], master_keys(7)[5])
    bias, first = to_np(layer.bias).copy(), to_np(model.get_layer("dw1").kernel).copy()
    _train(model)
    np.testing.assert_array_equal(to_np(layer.kernel), kernel)
    assert not np.array_equal(to_np(layer.bias), bias)
    assert not np.array_equal(to_np(model.get_layer("dw1").kernel), first)


def test_bias_shift_works_on_grouped_conv_but_the_flag_is_not_saved(tmp_path):
    inputs = keras.Input((8, 8, 4))
    grouped = keras.Model(inputs, keras.layers.Conv2D(4, 3, groups=4, name="grouped")(inputs))
    assign_master_keys(grouped, 1, shift="bias")
    np.testing.assert_array_equal(to_np(grouped.get_layer("grouped").kernel)[:, :, 0, 2], master_keys(3)[2])
    grouped.save(tmp_path / "g.keras")
    loaded = keras.saving.load_model(tmp_path / "g.keras").get_layer("grouped")
    np.testing.assert_array_equal(to_np(loaded.kernel), to_np(grouped.get_layer("grouped").kernel))
    assert loaded.kernel.trainable  # documented: variable-level freezing is not part of the .keras format


def test_reference_fit_gives_the_reference_filter_up_to_its_scale():
    reference = tiny()
    plant_model(reference, [7, 0, 3, 1])
    target = tiny()
    model, report = assign_master_keys(target, 1, reference=reference)
    entry = mk_keras.filter_layers(model, "depthwise")[0]
    y = layer_filters(reference)[0][1]
    fit = fit_master_keys(y)
    applied = layer_filters(model)[0][1]
    np.testing.assert_allclose(applied * np.abs(fit.a)[:, None, None], y, atol=1e-5)
    assert report.entries[0].mean_cosine == pytest.approx(1, abs=1e-6)
    assert report.entries[0].key_index[:4] == [7, 0, 3, 1]
    # The layer computes the depthwise convolution with those filters (plus its bias, zero here).
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 16)).astype("float32")
    kernel = (y / np.abs(fit.a)[:, None, None]).transpose(1, 2, 0)[..., None].astype("float32")
    expected = keras.ops.depthwise_conv(x, kernel, padding="same")
    np.testing.assert_allclose(to_np(entry.layer(x)), to_np(expected), atol=1e-4)


def test_other_weights_and_trainable_flags_are_copied():
    target = tiny()
    mk_keras.freeze_filters(target, 1, order="last")
    head = to_np(target.get_layer("head").kernel).copy()
    model, _ = assign_master_keys(target, 1)
    np.testing.assert_array_equal(to_np(model.get_layer("head").kernel), head)
    assert not model.get_layer("dw3").trainable
    x = np.zeros((1, 12, 12, 3), "float32")
    assert model(x).shape == (1, 4)


def test_keras_file_round_trip_keeps_frozen_kernel_and_shift(tmp_path):
    model, _ = assign_master_keys(tiny(), 2)
    layer = model.get_layer("dw2")
    layer.shift.assign(np.linspace(-1, 1, 16).astype("float32"))
    model.save(tmp_path / "mk.keras")
    loaded = keras.saving.load_model(tmp_path / "mk.keras")
    again = loaded.get_layer("dw2")
    assert isinstance(again, MasterKeyDepthwiseConv2D) and not again.kernel.trainable and again.shift.trainable
    np.testing.assert_array_equal(to_np(again.shift), to_np(layer.shift))
    x = np.random.default_rng(0).uniform(0, 1, (2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), atol=1e-5)
    clone = keras.models.clone_model(model).get_layer("dw2")
    assert isinstance(clone, MasterKeyDepthwiseConv2D) and not clone.kernel.trainable


def test_a_file_saved_when_the_layer_lived_in_mk_keras_analysis_still_loads(tmp_path):
    """Files record the layer's module; the registered name `mk_keras>MasterKeyDepthwiseConv2D` finds it."""
    model, _ = assign_master_keys(tiny(), 1)
    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as src, zipfile.ZipFile(tmp_path / "old.keras", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                assert b'"mk_keras.models.layers"' in data
                data = data.replace(b'"mk_keras.models.layers"', b'"mk_keras.analysis.layers"')
            dst.writestr(item, data)
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert type(loaded.get_layer("dw1")) is MasterKeyDepthwiseConv2D
    x = np.random.default_rng(0).uniform(0, 1, (2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), atol=1e-6)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="no depthwise layers"):
        assign_master_keys(tiny_conv(), 1)
    with pytest.raises(ValueError, match="out of range"):
        assign_master_keys(tiny(), 4)
    with pytest.raises(ValueError, match="does not match target layer 'dw1'"):
        assign_master_keys(tiny(), 1, reference=tiny(kernel_size=3))
    inputs = keras.Input((8, 8, 4))
    grouped = keras.Model(inputs, keras.layers.Conv2D(4, 3, groups=4, name="grouped")(inputs))
    with pytest.raises(ValueError, match="'grouped' is a Conv2D; shift='kernel' replaces plain"):
        assign_master_keys(grouped, 1)
    with pytest.raises(ValueError, match="shift='output'"):
        assign_master_keys(tiny(), 1, shift="output")
