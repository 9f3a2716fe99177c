import math
import zipfile

import keras
import numpy as np
import pytest
from analysis_helpers import plant_model, planted, tiny, tiny_conv, to_np
from scipy.special import iv

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


PUBLISHED = {  # (sigma_x, sigma_y) of F1..F8, arXiv 2509.11711
    "B": [(.644, .583), (.586, .644), (.690, .674), (.756, .460), (1.107, .945), (.900, .889), (.675, .675),
          (.609, .601)],
    "A": [(.580, .558), (.559, .580), (.617, .601), (.642, .424), (1.075, .800), (.771, 1.003), (.675, .675),
          (.552, .545)],
}


def _published_key(index, k, sx, sy):
    """F1..F8 (index 0..7) from the published formulas, written out tap by tap (rows = y, columns = x)."""
    r = (k - 1) // 2

    def t1d(sigma):
        values = [math.exp(-sigma**2) * iv(n, sigma**2) for n in range(-r, r + 1)]
        return [v / sum(values) for v in values]

    ty, tx = t1d(sy), t1d(sx)
    T = [[ty[i] * tx[j] for j in range(k)] for i in range(k)]
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if index == 0:  # F1 = dy+ T: forward along rows
                out[i, j] = T[i + 1][j] - T[i][j] if i + 1 < k else 0.0
            elif index == 1:  # F2 = dx- T: backward along columns
                out[i, j] = T[i][j] - T[i][j - 1] if j >= 1 else 0.0
            elif index == 2:  # F3 = dy- T
                out[i, j] = T[i][j] - T[i - 1][j] if i >= 1 else 0.0
            elif index == 3:  # F4 = dx+ T
                out[i, j] = T[i][j + 1] - T[i][j] if j + 1 < k else 0.0
            elif index == 4:  # F5 = dx T: central inside, one-sided at the border
                out[i, j] = (T[i][j + 1] - T[i][j - 1]) / 2 if 0 < j < k - 1 else (
                    T[i][1] - T[i][0] if j == 0 else T[i][k - 1] - T[i][k - 2])
            elif index == 5:  # F6 = dy T
                out[i, j] = (T[i + 1][j] - T[i - 1][j]) / 2 if 0 < i < k - 1 else (
                    T[1][j] - T[0][j] if i == 0 else T[k - 1][j] - T[k - 2][j])
            elif index == 6:  # F7 = T - 0.5 * five-point Laplacian (interior only)
                lap = (T[i + 1][j] + T[i - 1][j] + T[i][j + 1] + T[i][j - 1] - 4 * T[i][j]
                       if 0 < i < k - 1 and 0 < j < k - 1 else 0.0)
                out[i, j] = T[i][j] - 0.5 * lap
            else:  # F8 = T
                out[i, j] = T[i][j]
    return out / math.sqrt((out**2).sum())


@pytest.mark.parametrize("method", ["B", "A"])
@pytest.mark.parametrize("k", [3, 7])
def test_keys_are_the_published_formulas_in_order_at_unit_norm(k, method):
    keys = master_keys(k, method) if method == "A" else master_keys(k)
    assert keys.shape == (8, k, k) and keys.dtype == np.float32
    for i, (sx, sy) in enumerate(PUBLISHED[method]):
        np.testing.assert_allclose(keys[i], _published_key(i, k, sx, sy), atol=2e-7, err_msg=MASTER_KEY_NAMES[i])
    flat = keys.reshape(8, -1).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1, atol=1e-6)
    centred = flat - flat.mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    assert np.abs(centred @ centred.T - np.eye(8)).max() < 0.999  # distinct, also after the fit centres them


def test_published_keys_have_the_expected_geometry():
    keys = dict(zip(MASTER_KEY_NAMES, master_keys(7).astype(np.float64)))
    assert MASTER_KEY_NAMES == ("F1_dy+T", "F2_dx-T", "F3_dy-T", "F4_dx+T", "F5_dxT", "F6_dyT", "F7_T-0.5lapT",
                                "F8_T")
    assert (keys["F8_T"] >= 0).all() and np.argmax(keys["F8_T"]) == 24  # a blob at the centre
    assert keys["F7_T-0.5lapT"][3, 3] > 0 > keys["F7_T-0.5lapT"][2, 2]  # centre-surround
    assert keys["F1_dy+T"][2, 3] > 0 > keys["F1_dy+T"][3, 3] and not keys["F1_dy+T"][6].any()  # y = rows
    assert keys["F4_dx+T"][3, 2] > 0 > keys["F4_dx+T"][3, 3] and not keys["F4_dx+T"][:, 6].any()  # x = columns
    assert not keys["F3_dy-T"][0].any() and not keys["F2_dx-T"][:, 0].any()
    np.testing.assert_allclose(keys["F5_dxT"], -keys["F5_dxT"][:, ::-1], atol=1e-7)
    np.testing.assert_allclose(keys["F6_dyT"], -keys["F6_dyT"][::-1], atol=1e-7)
    assert not np.allclose(master_keys(7, "A"), master_keys(7, "B"))


def test_fit_recovers_key_scale_and_shift_of_a_times_key_plus_b():
    ids = np.arange(16) % 8
    filters, a, b = planted(ids)  # a * F + b with F the (uncentred) unit-norm key
    keys = master_keys(7).reshape(8, -1).astype(np.float64)[ids]
    means = keys.mean(axis=1)
    fit = fit_master_keys(filters)
    np.testing.assert_array_equal(fit.index, ids)
    # a*F + b = a*|F_c| x̂ + (b + a*mean F): the fit's a and b are those of the centred key x̂
    np.testing.assert_allclose(fit.a, a * np.linalg.norm(keys - means[:, None], axis=1), rtol=1e-6)
    np.testing.assert_allclose(fit.b, b + a * means, atol=1e-12)
    np.testing.assert_allclose(fit.cosine, 1, atol=1e-6)
    np.testing.assert_allclose(fit.reconstruct(master_keys(7)), filters, atol=1e-6)


def test_fit_of_a_noisy_filter_picks_the_best_key():
    filters, _, _ = planted([6, 1, 4], noise=0.01, seed=3)
    fit = fit_master_keys(filters)
    np.testing.assert_array_equal(fit.index, [6, 1, 4])
    assert (fit.cosine > 0.8).all() and (fit.cosine < 1).all()


@pytest.mark.parametrize("bad", [4, 1, "7", True])
def test_master_keys_rejects_bad_kernel_size(bad):
    with pytest.raises(ValueError, match="odd integer"):
        master_keys(bad)
    with pytest.raises(ValueError, match="method='C'; allowed: B, A"):
        master_keys(7, "C")


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
    applied = layer_filters(model)[0][1]  # kernel + shift
    keys = master_keys(7).reshape(8, -1).astype(np.float64)
    centred_norm = np.linalg.norm(keys - keys.mean(axis=1, keepdims=True), axis=1)[fit.index]
    scale = (centred_norm / np.abs(fit.a))[:, None, None]  # the layer applies y up to a positive scale
    np.testing.assert_allclose(applied, y * scale, atol=1e-5)
    np.testing.assert_array_equal(to_np(entry.kernel)[:, :, :, 0].transpose(2, 0, 1),
                                  np.sign(fit.a)[:, None, None] * master_keys(7)[fit.index])  # the published keys
    assert report.entries[0].mean_cosine == pytest.approx(1, abs=1e-6)
    assert report.entries[0].key_index[:4] == [7, 0, 3, 1]
    # The layer computes the depthwise convolution with those filters (plus its bias, zero here).
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 16)).astype("float32")
    kernel = (y * scale).transpose(1, 2, 0)[..., None].astype("float32")
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
    with pytest.raises(ValueError, match="method='C'; allowed: B, A"):
        assign_master_keys(tiny(), 1, method="C")


def test_method_a_installs_the_method_a_keys():
    model, report = assign_master_keys(tiny(), 1, method="A")
    kernel = to_np(mk_keras.filter_layers(model, "depthwise")[0].kernel)
    np.testing.assert_array_equal(kernel[:, :, 3, 0], master_keys(7, "A")[3])
    assert report.method == "A" and "method A" in str(report)
