"""mk-sweep in-process: one-line usage errors (exit 2), stored flags, --dry_run, --merge_only."""

import glob
import os

import pytest
from sweep_helpers import FakeTrain

from mk_keras.cli import sweep as cli

FLAGS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "flags")
BASE = ["mk-sweep", "--classes_a=fashion_garments", "--classes_b=fashion_accessories",
        "--models=convnext_micro_cifar,resnet10_cifar", "--depths=1,5", "--epochs=1"]


@pytest.mark.parametrize("args, message", [
    (["--treatments=baseB,AnB"], "mk-sweep: error: treatment 'AnB' needs 'baseA' (its source) in the sweep"),
    (["--depths=7"], "mk-sweep: error: depth n=7 is out of range for convnext_micro_cifar (5 depthwise layers)"),
    (["--kinds=dense"], "mk-sweep: error: unknown filter kind 'dense'; allowed: depthwise, pointwise, conv, auto"),
    (["--seeds=0,x"], "mk-sweep: error: --seeds=0,x: expected integers"),
    (["--shard_index=2", "--num_shards=2"], "mk-sweep: error: shard_index=2 is out of range; allowed: 0..1"),
    (["--epochs=0"], "mk-sweep: error: flag --epochs=0"),
    (["--seeds=0,1,0"], "mk-sweep: error: seeds lists 0 more than once; give each value once"),
    (["--source_sizes=50,50", "--treatments=baseA,baseB,AnB"], "mk-sweep: error: source_sizes lists 50 more than once"),
    (["--models=mobilenetv2_cifar", "--kinds=pointwise", "--cross_source=convnext_micro_cifar",
      "--treatments=baseA,baseB,cross"],
     "mk-sweep: error: treatment 'cross' cannot copy 5 pointwise layers of convnext_micro_cifar into "
     "mobilenetv2_cifar: "),
])
def test_bad_definitions_exit_2_with_one_line(tmp_path, capsys, args, message):
    fake = FakeTrain()
    status = cli.main([*BASE, f"--output_dir={tmp_path}", *args], train_fn=fake)
    err = capsys.readouterr().err
    assert status == 2 and fake.calls == []
    assert err.startswith(message) and err.count("\n") == 1
    assert not os.listdir(tmp_path)  # nothing written


def test_run_stores_flags_dry_run_and_merge_only(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert cli.main([*BASE, f"--output_dir={out}", "--dry_run", "--num_shards=3"]) == 0
    printed = capsys.readouterr().out
    assert "12 runs planned" in printed
    assert "   4 shard 1  convnext_micro_cifar-depthwise-AnB-n1-s0  <- convnext_micro_cifar-baseA-s0" in printed
    assert not os.path.exists(out)

    fake = FakeTrain()
    assert cli.main([*BASE, f"--output_dir={out}"], train_fn=fake) == 0
    printed = capsys.readouterr().out
    assert "[12/12] BnB           resnet10_cifar/conv n=5 seed=0  top-1" in printed
    flags_txt = open(os.path.join(out, "flags.txt")).read()
    assert "--models=convnext_micro_cifar,resnet10_cifar" in flags_txt and "--epochs=1" in flags_txt
    assert "--shard_index" not in flags_txt and "--num_shards" not in flags_txt and "--dry_run" not in flags_txt
    assert fake.calls[0]["flags_text"].startswith(flags_txt)  # every run directory stores the flags
    assert fake.calls[0]["verbose"] == 0  # not a terminal: no Keras progress bars

    os.remove(os.path.join(out, "results.csv"))
    os.remove(os.path.join(out, "report.md"))
    assert cli.main(["mk-sweep", f"--output_dir={out}", "--merge_only"]) == 0
    assert "merged 12 of 12 runs (12 finished)" in capsys.readouterr().out
    assert os.path.exists(os.path.join(out, "results.csv")) and os.path.exists(os.path.join(out, "report.md"))


def test_merge_only_without_a_sweep_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["mk-sweep", f"--output_dir={tmp_path}", "--merge_only"]) == 2
    assert "holds no sweep.json" in capsys.readouterr().err


@pytest.mark.parametrize("preset", sorted(glob.glob(os.path.join(FLAGS_DIR, "paper", "*.flags")))
                         + [os.path.join(FLAGS_DIR, "quickstart.flags")]
                         + sorted(p for p in glob.glob(os.path.join(FLAGS_DIR, "claims", "*.flags"))
                                  if not p.endswith("common.flags")))  # claims include common.flags (cwd: the repo)
def test_presets_plan(preset, capsys):
    assert cli.main(["mk-sweep", f"--flagfile={preset}", "--dry_run"]) == 0, capsys.readouterr().err
    assert "runs planned" in capsys.readouterr().out


def test_rerun_under_another_name_exits_2_with_one_line(tmp_path, capsys):
    args = [*BASE, "--models=convnext_micro_cifar", "--depths=1", f"--output_dir={tmp_path}"]
    assert cli.main([*args, "--name=first"], train_fn=FakeTrain()) == 0
    capsys.readouterr()
    fake = FakeTrain()
    assert cli.main([*args, "--name=second"], train_fn=fake) == 2 and fake.calls == []
    err = capsys.readouterr().err
    assert err == (f"mk-sweep: error: {str(tmp_path)!r} holds a sweep with other settings (name: 'first' -> "
                   "'second'); use another output directory\n")
