import csv
import os

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
from analysis_helpers import tiny, to_np

import mk_keras
from mk_keras.analysis import load_source
from mk_keras.analysis.atlas import CSV_FIELDS, GAP_COLOR, atlas_layer_indices, atlas_rows, plot_atlas, write_atlas_csv
from mk_keras.analysis.plotting import display_scaled, mosaic

pytestmark = pytest.mark.backend_agnostic


def test_first_middle_last_layer_indices():
    assert atlas_layer_indices(1) == [0]
    assert atlas_layer_indices(2) == [0, 1]
    assert atlas_layer_indices(5) == [0, 2, 4]
    assert atlas_layer_indices(18) == [0, 8, 17]


def _plant(model, seed):
    """Give every depthwise filter of `model` a random shape and a scale from 1e-3 to 1e2; returns the kernels
    as [(N, kh, kw)] per layer."""
    rng = np.random.default_rng(seed)
    planted = []
    for entry in mk_keras.filter_layers(model, "depthwise"):
        kh, kw, channels, _ = entry.kernel_shape
        filters = rng.standard_normal((channels, kh, kw)) * 10.0 ** rng.uniform(-3, 2, (channels, 1, 1))
        entry.kernel.assign(filters.transpose(1, 2, 0)[:, :, :, None].astype("float32"))
        planted.append(filters.astype("float32").astype(np.float64))
    return planted


def test_each_tile_holds_one_planted_filter_scaled_by_its_max_abs_with_gaps_between(tmp_path):
    a, b = tiny(depth=5, name="a"), tiny(kernel_size=3, depth=2, name="b")
    kernels = {"A": _plant(a, 1), "B": _plant(b, 2)}
    blocks = atlas_rows([("A", a), ("B", b)], per_layer=6, per_row=4, seed=3)
    assert [(x.model, x.model_index, x.layer_index, x.layer, x.kernel) for x in blocks] == [
        ("A", 0, 0, "dw1", "7x7"), ("A", 0, 2, "dw3", "7x7"), ("A", 0, 4, "dw5", "7x7"),
        ("B", 1, 0, "dw1", "3x3"), ("B", 1, 1, "dw2", "3x3")]
    assert blocks[1].label == "A\ndw3 (#2 of #0-#4), 7x7"
    images = plot_atlas(blocks, tmp_path / "atlas.png")
    for block, image in zip(blocks, images):
        k = int(block.kernel[0])
        channels = block.channels
        assert len(channels) == 6 and len(set(channels)) == 6 and list(channels) == sorted(channels)
        assert image.shape == (2 * (k + 1) - 1, 4 * (k + 1) - 1)  # 2 rows of 4 tiles, 1-pixel gaps
        np.testing.assert_array_equal(image, block.image())
        in_tile = np.zeros(image.shape, bool)
        for j, channel in enumerate(channels):
            row, col = divmod(j, 4)
            assert block.tile(j) == (row, col)
            tile = (slice(row * (k + 1), row * (k + 1) + k), slice(col * (k + 1), col * (k + 1) + k))
            planted = kernels[block.model][block.layer_index][channel]
            np.testing.assert_allclose(image[tile], planted / np.abs(planted).max(), rtol=1e-12)
            in_tile[tile] = True
        assert np.isnan(image[~in_tile]).all() and not np.isnan(image[in_tile]).any()
        assert in_tile.sum() == 6 * k * k  # two unused tiles in the second row are background as well
    png = matplotlib.image.imread(tmp_path / "atlas.png")[:, :, :3]
    gap_pixels = np.isclose(png, matplotlib.colors.to_rgb(GAP_COLOR), atol=1 / 255).all(axis=2).sum()
    assert gap_pixels > 0.05 * png.shape[0] * png.shape[1]  # the gaps are drawn in their own colour


def test_draws_are_seeded_and_capped_by_the_layer_width():
    model = tiny(depth=5)
    first = atlas_rows([("A", model)], per_layer=5, seed=1)
    assert all(np.array_equal(x.channels, y.channels) for x, y in zip(first, atlas_rows([("A", model)], 5, seed=1)))
    assert any(not np.array_equal(x.channels, y.channels) for x, y in zip(first, atlas_rows([("A", model)], 5, seed=2)))
    kernel = to_np(model.get_layer("dw3").kernel)[:, :, :, 0].transpose(2, 0, 1)
    np.testing.assert_array_equal(first[1].filters, kernel[first[1].channels])
    everything = atlas_rows([("A", model)], per_layer=100, per_row=5)
    assert [list(x.channels) for x in everything] == [list(range(16))] * 3
    assert everything[0].image().shape == (4 * 8 - 1, 5 * 8 - 1)
    for bad in ({"per_layer": 0}, {"per_row": True}, {"per_row": 2.0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))}="):
            atlas_rows([("A", model)], **bad)


def test_atlas_csv_lists_every_drawn_filter_with_its_tile(tmp_path):
    model = tiny(depth=3)
    blocks = atlas_rows([("A", model)], per_layer=3, per_row=2, seed=0)
    write_atlas_csv(blocks, tmp_path / "atlas.csv")
    with open(tmp_path / "atlas.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 9
    kernels = {e.name: to_np(e.kernel)[:, :, :, 0] for e in mk_keras.filter_layers(model, "depthwise")}
    for block, chunk in zip(blocks, (rows[0:3], rows[3:6], rows[6:9])):
        assert [r["layer"] for r in chunk] == [block.layer] * 3 and chunk[0]["num_layers"] == "3"
        assert [int(r["channel"]) for r in chunk] == list(block.channels)
        assert [(r["tile_row"], r["tile_col"]) for r in chunk] == [("0", "0"), ("0", "1"), ("1", "0")]
        for r in chunk:
            expected = np.abs(kernels[block.layer][:, :, int(r["channel"])]).max()
            assert float(r["max_abs"]) == pytest.approx(expected, rel=1e-5)


def test_display_scaling_and_mosaic():
    scaled = display_scaled(np.array([[[2.0, -4.0]], [[0.0, 0.0]]]))
    np.testing.assert_array_equal(scaled, [[[0.5, -1.0]], [[0.0, 0.0]]])
    tiles = mosaic(np.ones((3, 2, 2)), columns=2)
    assert tiles.shape == (5, 5) and np.isnan(tiles[2]).all() and np.isnan(tiles[3:, 3:]).all()
    assert mosaic(np.ones((2, 3, 3)), columns=2, gap=2).shape == (3, 8)


def test_model_specs(tmp_path):
    model = tiny()
    os.makedirs(tmp_path / "run_a")
    model.save(tmp_path / "run_a" / "model.keras")
    model.save(tmp_path / "b.keras")
    loaded = load_source(str(tmp_path / "run_a"))
    assert loaded.label == "run_a" and loaded.model.count_params() == model.count_params()
    assert load_source(str(tmp_path / "b.keras")).label == "b"
    with pytest.raises(ValueError, match="is not a run directory"):
        load_source(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_source(str(tmp_path / "missing.keras"))
