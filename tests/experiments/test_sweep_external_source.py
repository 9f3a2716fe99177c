"""Sweeps whose base A is an external source (a converted PyTorch checkpoint): planning and a real tiny sweep."""

import json
import os

import numpy as np
import pytest
import timm
import torch

from mk_keras.cli import sweep as cli
from mk_keras.experiments import SweepConfig, plan
from mk_keras.sources import file_sha256


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    state = timm.create_model("convnext_atto", pretrained=False, num_classes=3).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "atto.pth"
    torch.save(state, path)
    return str(path), {k: v.numpy() for k, v in state.items()}


def _config(spec, **kw):
    return SweepConfig(**{"name": "ext", "dataset_a": "digits", "classes_a": "random_half:A:0",
                          "classes_b": "random_half:B:0", "models": ["convnext_atto"], "depths": ["1"],
                          "treatments": ["baseB", "AnB"], "base_a_source": [spec], **kw})


def test_plan_has_no_base_a_run(checkpoint):
    spec = f"convnext_atto:{checkpoint[0]}"
    the_plan = plan(_config(spec, treatments=["baseB", "AnB", "BnB"]))
    assert [(r.run_id, r.source) for r in the_plan.runs] == [
        ("convnext_atto-baseB-s0", None), ("convnext_atto-depthwise-AnB-n1-s0", "external:convnext_atto"),
        ("convnext_atto-depthwise-BnB-n1-s0", "convnext_atto-baseB-s0")]
    assert the_plan.external_sources() == {"convnext_atto": spec}


@pytest.mark.parametrize("models, sources, treatments, message", [
    (["convnext_atto"], ["convnext_femto:{ckpt}"], ["baseB", "AnB"],
     "is a 'convnext_femto' model, not 'convnext_atto'"),
    (["convnext_atto"], ["convnext_atto:/nowhere/x.pth"], ["baseB", "AnB"], "checkpoint '/nowhere/x.pth' in"),
    (["convnext_atto"], ["keras:ConvNeXtTiny"], ["baseB", "AnB"], "is a keras:<Application> model \\(random init\\)"),
    (["convnext_atto"], ["convnext_atto:{ckpt}"], ["baseA", "baseB", "AnB"], "'baseA' has nothing to train"),
    (["convnext_atto", "convnext_femto"], ["convnext_atto:{ckpt}"] * 3, ["baseB", "AnB"], "3 entries for 2 models"),
    (["convnext_atto", "convnext_femto"], ["convnext_atto:{ckpt}", "train"], ["baseB", "AnB"],
     "needs 'baseA' \\(its source\\)"),
])
def test_bad_external_sources_are_refused(checkpoint, models, sources, treatments, message):
    specs = [s.format(ckpt=checkpoint[0]) for s in sources]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        plan(_config(None, models=models, base_a_source=specs, treatments=treatments))


@pytest.mark.slow
def test_sweep_transfers_the_checkpoints_filters(checkpoint, tmp_path, capsys):
    path, state = checkpoint
    out = str(tmp_path / "sweep")
    flags = ["mk-sweep", "--name=ext", "--dataset_a=digits", "--classes_a=random_half:A:0",
             "--classes_b=random_half:B:0", "--models=convnext_atto", "--treatments=baseB,AnB", "--depths=2",
             f"--base_a_source=convnext_atto:{path}", "--image_size=32", "--epochs=1", "--steps_per_epoch=2",
             "--batch_size=16", "--eval_max_per_class=2", "--eval_every=0", "--steps_per_execution=1",
             f"--output_dir={out}"]
    assert cli.main(flags) == 0, capsys.readouterr().err
    assert sorted(os.listdir(os.path.join(out, "runs"))) == ["convnext_atto-baseB-s0",
                                                             "convnext_atto-depthwise-AnB-n2-s0"]
    record = json.load(open(os.path.join(out, "sources", "convnext_atto.json")))
    assert record["sha256"] == file_sha256(path) and record["path"] == path

    import keras

    run = os.path.join(out, "runs", "convnext_atto-depthwise-AnB-n2-s0")
    trained = keras.saving.load_model(os.path.join(run, "model.keras"), compile=False)
    for layer, key in (("stage1_block1_dwconv", "stages.0.blocks.0.conv_dw.weight"),
                       ("stage1_block2_dwconv", "stages.0.blocks.1.conv_dw.weight")):
        assert not trained.get_layer(layer).trainable
        np.testing.assert_array_equal(trained.get_layer(layer).kernel.numpy(),
                                      np.transpose(state[key], (2, 3, 0, 1)))
    assert trained.get_layer("stage2_block1_dwconv").trainable  # n=2: the third layer trained
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["spec"]["source_sha256"] == record["keras_sha256"]
    report = open(os.path.join(out, "report.md")).read()
    assert f"`convnext_atto:{path}`" in report and file_sha256(path) in report

    capsys.readouterr()
    with open(path, "ab") as f:  # the checkpoint changed under the sweep: a rerun adding n=1 is refused
        f.write(b"x")
    assert cli.main([*flags, "--depths=1,2"]) == 2
    assert "the source file" in capsys.readouterr().err and not os.path.exists(run[:-2] + "n1-s0")
