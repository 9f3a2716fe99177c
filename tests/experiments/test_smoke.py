"""mk-sweep --smoke: every arm and treatment of a preset, 2 steps on synthetic data, through the real training.

make test runs one small preset cut to its ConvNeXt arm and three treatments (real training, ~1 min on 2 cores),
the conversion of every preset's definition (no training) and the usage error; `make test-long` smoke-tests every
preset in flags/paper/ at its real image size.
"""

import dataclasses
import glob
import json
import os

import keras
import numpy as np
import pytest
from absl import flags
from sweep_helpers import FakeTrain

from mk_keras.cli import sweep as cli
from mk_keras.data import synthetic
from mk_keras.experiments import plan, results
from mk_keras.experiments.smoke import SMOKE_BATCH, SMOKE_STEPS, smoke_config

PAPER = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "flags", "paper", "*.flags")))


def _preset_config(path):
    """The SweepConfig mk-sweep builds from a preset flagfile."""
    fv = flags.FlagValues()
    training = cli.define_flags(fv)[1]
    fv(["mk-sweep", f"--flagfile={path}"])
    return cli.config_from_flags(fv, training)


def _frozen_layers_equal_source(smoke_dir, run_id, source_id):
    """Every layer frozen in run `run_id` holds the weights of the same layer of its source run."""
    metrics = results.read_metrics(results.run_dir(smoke_dir, run_id))
    frozen = metrics["frozen_layers"]
    assert frozen
    model, source = (keras.saving.load_model(os.path.join(results.run_dir(smoke_dir, r), "model.keras"))
                     for r in (run_id, source_id))
    for name in frozen:
        for w, s in zip(model.get_layer(name).weights, source.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(w), np.asarray(s), err_msg=f"{run_id}: {name}")
    keras.backend.clear_session()


def _check_smoke(smoke_dir, status, printed):
    assert status == 0, printed[-3000:]
    definition = results.load_definition(smoke_dir)
    with open(os.path.join(smoke_dir, "results.jsonl")) as f:
        rows = {row["run_id"]: row for row in map(json.loads, f)}
    assert sorted(rows) == sorted(r["run_id"] for r in definition["runs"])
    assert all(r["status"] == "finished" for r in rows.values())
    for run in definition["runs"]:
        assert f"PASS  {run['run_id']}" in printed
        metrics = results.read_metrics(results.run_dir(smoke_dir, run["run_id"]))
        assert metrics["recipe"]["total_steps"] == SMOKE_STEPS
        assert metrics["recipe"]["global_batch_size"] == SMOKE_BATCH
        assert metrics["dataset"]["spec"].startswith(synthetic.PREFIX)
    assert os.path.isfile(os.path.join(smoke_dir, "report.md"))
    return definition, rows


@pytest.mark.slow
def test_smoke_one_small_preset_trains_every_run(tmp_path, capsys):
    preset = os.path.join(os.path.dirname(PAPER[0]), "cross_domain_cifar100_svhn.flags")
    # cut to one arm and three treatments to fit make test; every preset in full: test_smoke_every_preset
    argv = ["mk-sweep", f"--flagfile={preset}", "--models=convnext_atto_cifar", "--treatments=baseA,baseB,AnB",
            "--smoke", f"--output_dir={tmp_path}"]
    status = cli.main(argv)
    printed = capsys.readouterr().out
    smoke_dir = str(tmp_path / "smoke")
    definition, rows = _check_smoke(smoke_dir, status, printed)
    assert sorted(rows) == ["convnext_atto_cifar-baseA-s0", "convnext_atto_cifar-baseB-s0",
                            "convnext_atto_cifar-depthwise-AnB-n12-s0"]  # seed 0 only, deepest n = 12
    assert "smoke: A = tfds:cifar100 classes=None (100 classes, images 32x32x3) -> synthetic:100:32x32x3:1" in printed
    assert "smoke: B = tfds:svhn_cropped classes=None (10 classes, images 32x32x3) -> synthetic:10:32x32x3:1" in printed
    assert "3/3 runs passed" in printed
    _frozen_layers_equal_source(smoke_dir, "convnext_atto_cifar-depthwise-AnB-n12-s0", "convnext_atto_cifar-baseA-s0")
    assert not os.path.exists(tmp_path / "runs")  # nothing outside the smoke directory

    # a second smoke replaces the first; a directory that is not a smoke run's is refused
    os.remove(os.path.join(smoke_dir, "smoke.json"))
    assert cli.main(argv) == 2
    assert "holds no smoke.json (not a smoke run's)" in capsys.readouterr().err


# planning builds every model of a preset once: the two slowest presets (~50-60 s each) run in make test-long
_SLOW_TO_PLAN = ("imagenet_resnets.flags", "cross_architecture.flags")


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.long) if os.path.basename(p) in _SLOW_TO_PLAN
                                  else p for p in PAPER], ids=lambda p: os.path.basename(p)[:-6])
def test_smoke_config_of_every_preset(tmp_path, path):
    """Every preset turns into a smoke sweep that plans: synthetic data of its class counts and image shapes,
    every arm and treatment once, one seed, 2 steps (no training), outside any run store."""
    config = dataclasses.replace(_preset_config(path), store=str(tmp_path / "store"))
    lines = []
    smoke = smoke_config(config, str(tmp_path / "weights"), log=lines.append)
    imagenet = config.train_args["input_pipeline"] == "imagenet"
    for which in ("A", "B"):
        spec = smoke.data(which)[0]
        k, shape, _, jpeg = synthetic.parse(spec[len(synthetic.PREFIX):])
        assert jpeg == imagenet
        assert shape == ((32, 32, 3) if "cifar" in os.path.basename(path) else (256, 256, 3))
    if config.classes_a == "imagenet_manmade":
        assert smoke.dataset_a.startswith("synthetic:551:") and smoke.dataset_b.startswith("synthetic:449:")
    assert smoke.train_args["steps_per_epoch"] == SMOKE_STEPS and smoke.train_args["epochs"] == 1
    assert smoke.seeds == config.seeds[:1] and smoke.store is None
    full, small = plan(config), plan(smoke)
    assert {(r.model, r.kind, r.treatment, r.source_size is not None) for r in small.runs} == \
        {(r.model, r.kind, r.treatment, r.source_size is not None) for r in full.runs if r.seed == config.seeds[0]}
    assert len({r.n for r in small.runs if r.n is not None}) <= 1
    if config.base_a_source:
        assert any("random weights" in line and "nothing downloaded" in line for line in lines)
        assert all(":imagenet" not in s for s in smoke.base_a_source)


def test_a_failing_run_is_reported_and_the_rest_still_run(tmp_path, capsys):
    preset = os.path.join(os.path.dirname(PAPER[0]), "cross_domain_cifar100_svhn.flags")
    fake = FakeTrain(crash={"convnext_atto_cifar-baseA-s0"})  # raises RuntimeError("out of memory")
    status = cli.main(["mk-sweep", f"--flagfile={preset}", "--models=convnext_atto_cifar",
                       "--treatments=baseA,baseB,AnB", "--smoke", f"--output_dir={tmp_path}"], train_fn=fake)
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err == ("mk-sweep: error: smoke test of 'cross_domain_cifar100_svhn' failed (see the FAIL lines "
                            "above)\n")
    assert "FAIL  convnext_atto_cifar-baseA-s0  failed: RuntimeError: out of memory" in captured.out
    assert "PASS  convnext_atto_cifar-baseB-s0" in captured.out
    assert ("FAIL  convnext_atto_cifar-depthwise-AnB-n12-s0  failed: source run convnext_atto_cifar-baseA-s0 failed"
            in captured.out)
    assert "1/3 runs passed" in captured.out


def test_smoke_with_merge_only_is_a_usage_error(tmp_path, capsys):
    status = cli.main(["mk-sweep", f"--output_dir={tmp_path}", "--merge_only", "--smoke"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("mk-sweep: error: --smoke runs the whole smoke sweep in one process; it does not combine "
                          "with --merge_only")
    assert not os.listdir(tmp_path)


@pytest.mark.long  # make test-long: every preset at its real image size (about an hour on 2 cores, see docs)
@pytest.mark.parametrize("path", PAPER, ids=lambda p: os.path.basename(p)[:-6])
def test_smoke_every_preset(tmp_path, capsys, path):
    status = cli.main(["mk-sweep", f"--flagfile={path}", "--smoke", f"--output_dir={tmp_path}"])
    printed = capsys.readouterr().out
    smoke_dir = str(tmp_path / "smoke")
    definition, rows = _check_smoke(smoke_dir, status, printed)
    anb = [r for r in definition["runs"] if r["treatment"] == "AnB" and not r["source"].startswith("external:")]
    if anb:  # same architecture: frozen layers keep the source's weights
        _frozen_layers_equal_source(smoke_dir, anb[0]["run_id"], anb[0]["source"])
