import os

import numpy as np
import pytest
from analysis_helpers import tiny, to_np

from mk_keras.analysis import load_source
from mk_keras.analysis.atlas import atlas_layer_indices, atlas_rows, plot_atlas
from mk_keras.analysis.plotting import display_scaled, mosaic

pytestmark = pytest.mark.backend_agnostic


def test_first_middle_last_layer_indices():
    assert atlas_layer_indices(1) == [0]
    assert atlas_layer_indices(2) == [0, 1]
    assert atlas_layer_indices(5) == [0, 2, 4]
    assert atlas_layer_indices(18) == [0, 8, 17]


def test_atlas_rows_hold_real_kernel_slices_with_model_and_layer_labels(tmp_path):
    model = tiny(depth=5)
    rows = atlas_rows([("A", model)], per_row=4, seed=1)
    assert [label for label, _ in rows] == ["A\ndw1 (#0)", "A\ndw3 (#2)", "A\ndw5 (#4)"]
    kernel = to_np(model.get_layer("dw3").kernel)[:, :, :, 0].transpose(2, 0, 1)
    filters = rows[1][1]
    assert filters.shape == (4, 7, 7)
    matches = [int(np.flatnonzero((np.abs(kernel - f) < 1e-7).all(axis=(1, 2)))[0]) for f in filters]
    assert matches == sorted(set(matches))
    assert [len(f) for _, f in atlas_rows([("A", model)], per_row=100)] == [16, 16, 16]
    plot_atlas(rows, "depthwise", tmp_path / "atlas.png")
    assert (tmp_path / "atlas.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="per_row=0"):
        atlas_rows([("A", model)], per_row=0)


def test_display_scaling_and_mosaic():
    scaled = display_scaled(np.array([[[2.0, -4.0]], [[0.0, 0.0]]]))
    np.testing.assert_array_equal(scaled, [[[0.5, -1.0]], [[0.0, 0.0]]])
    tiles = mosaic(np.ones((3, 2, 2)), columns=2)
    assert tiles.shape == (5, 5) and np.isnan(tiles[2]).all() and np.isnan(tiles[3:, 3:]).all()


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
