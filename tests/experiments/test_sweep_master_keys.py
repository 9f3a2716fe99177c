"""The master_keys / master_keys_fit treatments: planning (depthwise arms only), train arguments, the merged
outputs, and a tiny real sweep whose runs hold the master keys."""

import json
import os

import keras
import numpy as np
import pytest
from sweep_helpers import FakeTrain

from mk_keras import filter_layers
from mk_keras.analysis import fit_master_keys, master_keys
from mk_keras.experiments import SweepConfig, plan, run_sweep
from mk_keras.experiments.sweep import train_kwargs

KEYED = ["baseA", "baseB", "master_keys", "master_keys_fit"]


def _config(**overrides):
    base = dict(name="mk", classes_a="fashion_garments", classes_b="fashion_accessories",
                models=["convnext_micro_cifar", "resnet10_cifar"], treatments=[*KEYED, "AnB"], depths=["2"])
    return SweepConfig(**{**base, **overrides})


def test_master_key_runs_are_planned_for_depthwise_arms_with_their_train_arguments():
    p = plan(_config())
    keyed = [r for r in p.runs if r.treatment.startswith("master_keys")]
    assert [(r.run_id, r.source) for r in keyed] == [
        ("convnext_micro_cifar-depthwise-master_keys-n2-s0", None),
        ("convnext_micro_cifar-depthwise-master_keys_fit-n2-s0", "convnext_micro_cifar-baseA-s0")]
    assert "resnet10_cifar-conv-AnB-n2-s0" in {r.run_id for r in p.runs}  # other treatments keep conv arms
    plain, fitted = (train_kwargs(r, p.config, "/out") for r in keyed)
    assert (plain["source"], plain["n"], plain["kind"], plain["freeze"]) == ("master_keys", 2, "depthwise", True)
    assert "master_key_reference" not in plain and plain["classes"] == "fashion_accessories"
    assert fitted["source"] == "master_keys"
    assert fitted["master_key_reference"] == os.path.join("/out", "runs", "convnext_micro_cifar-baseA-s0")


@pytest.mark.parametrize("overrides, message", [
    ({"models": ["resnet10_cifar"], "treatments": KEYED},
     "treatment 'master_keys' needs a model with kind depthwise; the models have resnet10_cifar (conv)"),
    ({"treatments": ["baseB", "master_keys_fit"]}, "treatment 'master_keys_fit' needs 'baseA'"),
])
def test_bad_master_key_sweeps_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(_config(**overrides))


def test_master_key_rows_reach_tables_figures_and_report(tmp_path):
    rows = run_sweep(_config(), str(tmp_path), train_fn=FakeTrain(), log=lambda line: None)
    by_id = {r["run_id"]: r for r in rows}
    row = by_id["convnext_micro_cifar-depthwise-master_keys_fit-n2-s0"]
    base = by_id["convnext_micro_cifar-baseB-s0"]
    assert row["relative_accuracy"] == pytest.approx(row["top1"] / base["top1"])
    assert row["source"] == "convnext_micro_cifar-baseA-s0"
    report = (tmp_path / "report.md").read_text()
    assert "| master_keys_fit | as master_keys, each channel's key and sign fitted to baseA's filter" in report
    assert "| master_keys | " in report and "convnext_micro_cifar (depthwise), master_keys_fit:" in report
    assert os.path.getsize(tmp_path / "figures" / "relative_accuracy.png") > 0


@pytest.mark.long  # make test-long
@pytest.mark.slow
def test_tiny_real_sweep_trains_master_key_runs(tmp_path):
    config = SweepConfig(name="mk", dataset_a="digits", classes_a="random_half:A:0", classes_b="random_half:B:0",
                         models=["convnext_micro_cifar"], treatments=KEYED, depths=["2"],
                         train_args=dict(epochs=1, steps_per_epoch=3, batch_size=16, max_per_class=16,
                                         eval_max_per_class=4, eval_every=0, steps_per_execution=1, verbose=0))
    rows = {r["run_id"]: r for r in run_sweep(config, str(tmp_path), log=lambda line: None)}
    assert all(r["status"] == "finished" for r in rows.values()), rows
    keys = master_keys(7)
    base_a = filter_layers(keras.saving.load_model(tmp_path / "runs" / "convnext_micro_cifar-baseA-s0" / "model.keras"))
    for name in ("master_keys", "master_keys_fit"):
        run_id = f"convnext_micro_cifar-depthwise-{name}-n2-s0"
        assert rows[run_id]["frozen_params"] == 7 * 7 * (24 + 48) and rows[run_id]["relative_accuracy"] > 0
        run = tmp_path / "runs" / run_id
        layers = filter_layers(keras.saving.load_model(run / "model.keras"))
        entries = json.loads((run / "transfer_report.json").read_text())["entries"]
        for f, ref, entry in zip(layers[:2], base_a[:2], entries, strict=True):
            kernel = keras.ops.convert_to_numpy(f.kernel)[:, :, :, 0].transpose(2, 0, 1)
            if name == "master_keys":
                expected = keys[np.arange(len(kernel)) % 8]
            else:
                fit = fit_master_keys(keras.ops.convert_to_numpy(ref.kernel)[:, :, :, 0].transpose(2, 0, 1))
                assert entry["key_index"] == fit.index.tolist()
                expected = np.where(fit.a < 0, -1, 1)[:, None, None] * keys[fit.index]
            np.testing.assert_array_equal(kernel, expected.astype("float32"))
