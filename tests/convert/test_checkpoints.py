"""mk_keras.convert.convert_checkpoint / convert_application plumbing: file types, head size, family dispatch,
one-line errors (the per-family exactness tests live with each family)."""

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from mk_keras.convert import FAMILY_MODULES, convert_application, convert_checkpoint


@pytest.fixture(scope="module")
def atto_state(tmp_path_factory):
    """A random timm convnext_atto (5 classes) saved as .pth and .safetensors."""
    torch.manual_seed(0)
    state = timm.create_model("convnext_atto", pretrained=False, num_classes=5).state_dict()
    folder = tmp_path_factory.mktemp("ckpt")
    torch.save({"model": state}, folder / "atto.pth")  # wrapped, as training checkpoints are
    save_file(state, str(folder / "atto.safetensors"))
    return folder, {k: v.numpy() for k, v in state.items()}


@pytest.mark.parametrize("name", ["atto.pth", "atto.safetensors"])
def test_checkpoint_file_converts_with_its_head(atto_state, name):
    folder, state = atto_state
    model = convert_checkpoint(folder / name, "convnext_atto")
    assert model.name == "convnext_atto" and model.output_shape[-1] == 5
    np.testing.assert_array_equal(model.get_layer("stage1_block1_dwconv").kernel.numpy(),
                                  np.transpose(state["stages.0.blocks.0.conv_dw.weight"], (2, 3, 0, 1)))


def test_state_dict_and_overrides(atto_state):
    _, state = atto_state
    model = convert_checkpoint(state, "convnext_atto", input_shape=(32, 32, 3))
    assert model.input_shape == (None, 32, 32, 3)
    np.testing.assert_array_equal(model.get_layer("stage4_block2_dwconv").kernel.numpy(),
                                  np.transpose(state["stages.3.blocks.1.conv_dw.weight"], (2, 3, 0, 1)))


def test_checkpoint_of_another_model_names_the_mismatch(atto_state):
    folder, _ = atto_state
    with pytest.raises(ValueError, match=r"atto.pth' -> convnext_femto does not match: .*stem.0.weight") as e:
        convert_checkpoint(folder / "atto.pth", "convnext_femto")
    assert "\n" not in str(e.value)


def test_family_without_converter_names_the_supported_ones(atto_state, monkeypatch):
    _, state = atto_state
    with pytest.raises(ValueError, match=r"no checkpoint converter for model 'alexnet_cifar' \(family 'alexnet'\); "
                                         r"supported families: .*convnext"):
        convert_checkpoint(state, "alexnet_cifar")
    monkeypatch.setitem(FAMILY_MODULES, "convnext", "mk_keras.convert.not_written_yet")
    with pytest.raises(ValueError, match="no checkpoint converter for model 'convnext_atto'"):
        convert_checkpoint(state, "convnext_atto")
    with pytest.raises(ValueError, match=r"unknown model 'convnext_atoo'; close matches: convnext_atto"):
        convert_checkpoint(state, "convnext_atoo")


def test_application_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="no mk_keras model is known for keras.applications.Xception"):
        convert_application("Xception", weights=None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_application("ConvNeXtTiny", weights=tmp_path / "none.weights.h5")
    with pytest.raises(ValueError, match="allowed 'imagenet' or a .weights.h5 file"):
        convert_application("ConvNeXtTiny", weights=tmp_path / "x.h5")
