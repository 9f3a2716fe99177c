"""The atlas of a converted PyTorch checkpoint (random timm ConvNeXt-Atto) shows the checkpoint's own filters."""

import csv

import numpy as np
import pytest

from mk_keras.analysis.atlas import atlas_rows
from mk_keras.cli.filters import run
from mk_keras.sources import load_source

pytestmark = pytest.mark.backend_agnostic


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random timm convnext_atto state dict on disk and its depthwise kernels [(C, 7, 7)] in forward order."""
    import timm
    import torch

    torch.manual_seed(0)
    state = timm.create_model("convnext_atto", pretrained=False).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "atto.pth"
    torch.save(state, path)
    return str(path), [v[:, 0].numpy().astype(np.float64) for k, v in state.items() if k.endswith("conv_dw.weight")]


def test_tiles_of_a_converted_checkpoint_are_its_filters(checkpoint):
    path, kernels = checkpoint
    src = load_source(f"convnext_atto:{path}")
    blocks = atlas_rows([(src.label, src.model)], per_layer=3, per_row=2, seed=5)
    assert [(b.layer_index, b.num_layers, b.kernel) for b in blocks] == [(0, 12, "7x7"), (5, 12, "7x7"),
                                                                          (11, 12, "7x7")]
    for block in blocks:
        image = block.image()
        assert image.shape == (15, 15)
        for j, channel in enumerate(block.channels):
            row, col = block.tile(j)
            expected = kernels[block.layer_index][channel]
            np.testing.assert_allclose(image[8 * row : 8 * row + 7, 8 * col : 8 * col + 7],
                                       expected / np.abs(expected).max(), rtol=1e-5, atol=1e-6)
        assert np.isnan(image[7]).all() and np.isnan(image[:, 7]).all() and np.isnan(image[8:, 8:]).all()


def test_cli_csv_names_the_checkpoint_filters(checkpoint, tmp_path):
    path, kernels = checkpoint
    paths = run("atlas", [f"convnext_atto:{path}"], str(tmp_path), per_layer=4, per_row=4)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["layer_index"]) for r in rows] == [0] * 4 + [5] * 4 + [11] * 4
    for r in rows:
        expected = np.abs(kernels[int(r["layer_index"])][int(r["channel"])]).max()
        assert float(r["max_abs"]) == pytest.approx(expected, rel=1e-5)
