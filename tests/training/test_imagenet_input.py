"""train() on the streamed ImageNet-style input pipeline (`input_pipeline="imagenet"`): a JPEG folder trains
with per-image crops, RandAugment and erasing, the settings are part of the run's identity, and misuse fails
before anything is written."""

import os

import numpy as np
import pytest
import tensorflow as tf

from mk_keras.training import RunSpec, train


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            os.makedirs(root / split / cls)
            for i in range(count):
                h, w = rng.integers(40, 64, 2)
                image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                (root / split / cls / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return root


def test_streamed_pipeline_trains_and_is_part_of_the_identity(jpeg_folder, tmp_path):
    metrics = train(model="convnext_atto_cifar", dataset=f"folder:{jpeg_folder}", input_pipeline="imagenet",
                    augment="randaugment", erase_prob=0.25, cache=False, image_size=32, batch_size=4, epochs=1,
                    steps_per_epoch=2, eval_every=0, steps_per_execution=1, run_dir=str(tmp_path / "run"), verbose=0)
    assert metrics["status"] == "finished" and metrics["spec"]["input_pipeline"] == "imagenet"
    assert 0.0 <= metrics["top1"] <= 1.0
    base = RunSpec(dataset="folder:x", input_pipeline="imagenet")
    assert base.replace(erase_prob=0.25).spec_hash() != base.spec_hash()
    assert base.replace(crop_pct=0.95).spec_hash() != base.spec_hash()
    assert base.replace(cache=True, memory_budget_gb=8.0).spec_hash() == base.spec_hash()  # execution only


@pytest.mark.parametrize("fields, message", [
    (dict(erase_prob=0.25), "need input_pipeline='imagenet'"),
    (dict(input_pipeline="imagenet", erase_prob=1.5), "erase_prob=1.5 must be in"),
    (dict(input_pipeline="imagenet", crop_pct=0.0), "crop_pct=0.0 must be in"),
    (dict(input_pipeline="streamed"), "input_pipeline='streamed'; allowed: 'memory', 'imagenet'"),
])
def test_bad_input_pipeline_settings(fields, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        train(run_dir=str(tmp_path / "run"), **fields)
    assert not (tmp_path / "run").exists()
