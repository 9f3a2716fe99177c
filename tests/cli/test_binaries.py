"""mk-train, mk-transfer and mk-tune end to end, in-process, on a few steps of real data (scikit-learn
digits), plus their error paths: one line on stderr, exit status 2, nothing already written lost."""

import json
import zipfile

import keras
import numpy as np
import pytest
from absl import flags

from mk_keras import filter_layers
from mk_keras.analysis import MasterKeyDepthwiseConv2D, master_keys
from mk_keras.cli import common, train, transfer, tune
from mk_keras.cli import export as mk_export

pytestmark = pytest.mark.slow

TINY = ["--dataset=digits", "--max_per_class=16", "--eval_max_per_class=8", "--batch_size=16", "--epochs=1",
        "--verbose=0"]


def _kernels(path):
    return [keras.ops.convert_to_numpy(f.kernel) for f in filter_layers(keras.saving.load_model(path))]


def _snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "base"
    argv = ["mk-train", *TINY, "--classes=0,1,2,3,4", f"--run_dir={run_dir}"]
    assert train.main(argv) == 0
    return run_dir, argv


def test_mk_train_writes_a_reproducible_run_directory(base_run):
    run_dir, _ = base_run
    for name in ("flags.txt", "spec.json", "metrics.json", "model.keras"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((run_dir / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    assert not (run_dir / "checkpoint").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 1
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and np.isfinite(metrics["loss"])
    assert metrics["params"]["frozen"] == 0 and metrics["params"]["trainable"] == metrics["params"]["total"]
    assert metrics["dataset"]["num_classes"] == 5 and metrics["epochs"][0]["wall_time_s"] > 0
    # flags.txt, parsed by mk-train, gives back every setting the run used.
    fv = flags.FlagValues()
    names = train.define_flags(fv)
    fv(["mk-train", f"--flagfile={run_dir / 'flags.txt'}"])
    stored = json.loads((run_dir / "spec.json").read_text())
    spec = stored["spec"]
    assert stored["spec_hash"] == metrics["spec_hash"] and spec == metrics["spec"]
    for name, value in common.training_kwargs(fv, names).items():
        if name in ("overwrite", "verbose", "run_dir"):
            continue
        if name in ("init_seed", "data_seed") and value is None:
            value = spec["seed"]  # unset: they take --seed
        if name == "image_size" and value is not None:
            value = [value, value]
        assert json.loads(json.dumps(value)) == spec[name], name


def test_finished_run_is_not_overwritten(base_run, capsys):
    run_dir, argv = base_run
    before = _snapshot(run_dir)
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a finished run" in err and "--overwrite" in err
    assert _snapshot(run_dir) == before


def test_mk_transfer_freezes_bit_identical_source_kernels(base_run, tmp_path, capsys):
    source, _ = base_run
    argv = ["mk-transfer", *TINY, "--classes=5,6,7,8,9", f"--source={source}", "--n=3",
            f"--run_dir={tmp_path}/accessories_n{{n}}"]
    assert transfer.main(argv) == 0
    assert "3 frozen layers (depthwise n=3)" in capsys.readouterr().out
    run_dir = tmp_path / "accessories_n3"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "convnext_micro_cifar"  # taken from the source
    assert metrics["frozen_layers"] == ["stage1_block1_dwconv", "stage2_block1_dwconv", "stage3_block1_dwconv"]
    assert metrics["params"]["frozen"] == sum(7 * 7 * c + c for c in (24, 48, 96))
    report = json.loads((run_dir / "transfer_report.json").read_text())
    assert [e["frozen"] for e in report["entries"]] == [True] * 3 and report["source"]["dataset"] == "digits"
    src, dst = _kernels(source / "model.keras"), _kernels(run_dir / "model.keras")
    for i in range(3):
        np.testing.assert_array_equal(dst[i], src[i])
    for i in range(3, 5):
        assert not np.array_equal(dst[i], src[i])
    assert "--source=" in (run_dir / "flags.txt").read_text()


def test_mk_transfer_master_keys_and_mk_export_verify(tmp_path, capsys):
    run_dir = tmp_path / "master_keys_n3"
    argv = ["mk-transfer", *TINY, "--classes=5,6,7,8,9", "--source=master_keys", "--model=convnext_micro_cifar",
            "--n=3", f"--run_dir={run_dir}"]
    assert transfer.main(argv) == 0
    assert "3 frozen layers (depthwise n=3, master keys)" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    frozen = ["stage1_block1_dwconv", "stage2_block1_dwconv", "stage3_block1_dwconv"]
    assert metrics["frozen_layers"] == frozen and metrics["params"]["frozen"] == 7 * 7 * (24 + 48 + 96)
    assert metrics["transfer"]["source"] == {"type": "master_keys", "reference": None}
    layers = filter_layers(keras.saving.load_model(run_dir / "model.keras"))
    keys = master_keys(7)
    for f in layers[:3]:  # round-robin: channel c holds key c mod 8, unchanged by training
        assert isinstance(f.layer, MasterKeyDepthwiseConv2D)
        kernel = keras.ops.convert_to_numpy(f.kernel)
        for c in range(kernel.shape[2]):
            np.testing.assert_array_equal(kernel[:, :, c, 0], keys[c % 8])
        assert np.abs(keras.ops.convert_to_numpy(f.layer.shift)).max() > 0  # started at 0, trained
    assert not any(isinstance(f.layer, MasterKeyDepthwiseConv2D) for f in layers[3:])
    assert "--source=master_keys" in (run_dir / "flags.txt").read_text()

    assert mk_export.main(["mk-export", f"--run_dir={run_dir}", f"--output={tmp_path / 'export'}", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "frozen kernels: 3/3 bit-identical" in out
    meta = json.loads((tmp_path / "export" / "mk_keras_metadata.json").read_text())
    assert meta["frozen_layers"] == frozen
    assert [k["variable"] for k in meta["frozen_kernels"]] == [f"{name}/kernel" for name in frozen]
    assert meta["filter_source"]["type"] == "master_keys" and (meta["n"], meta["kind"]) == (3, "depthwise")


@pytest.mark.parametrize(
    "binary, args, message",
    [
        (train, ["--model=convnext_micro_cfar"], "unknown model 'convnext_micro_cfar'; close matches"),
        (train, ["--dataset=cifar11"], "cifar11"),
        (train, ["--epochs=0"], "--epochs"),
        (train, ["--no_such_flag"], "no_such_flag"),
        (transfer, ["--kind=diagonal"], "depthwise|pointwise|conv"),
        (transfer, ["--n=9"], "n=9 is out of range; allowed: 0..5"),
        (transfer, ["--source=/nonexistent/run"], "'/nonexistent/run' does not exist"),
        (transfer, ["--source=master_keys", "--n=2"], "--source=master_keys needs --model"),
        (transfer, ["--source=master_keys", "--model=resnet10_cifar", "--n=2", "--kind=conv"],
         "kind='conv' with source='master_keys'; allowed: depthwise"),
        (transfer, ["--source=master_keys", "--model=resnet10_cifar", "--n=2"],
         "model 'resnet10_cifar' has no depthwise layers"),
    ],
)
def test_bad_flags_exit_2_with_one_line(binary, args, message, base_run, tmp_path, capsys):
    source, _ = base_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")
    argv = [binary.PROG, *TINY, f"--run_dir={run_dir}"]
    if binary is transfer:
        argv.append(f"--source={source}")
    assert binary.main(argv + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{binary.PROG}: error: ") and "Traceback" not in err
    assert message in err
    assert _snapshot(run_dir) == {run_dir.joinpath("notes.txt").relative_to(run_dir): b"keep me"}


def test_mk_tune_writes_a_flagfile_mk_train_accepts(tmp_path, capsys):
    argv = ["mk-tune", "--dataset=digits", "--max_per_class=16", "--batch_size=16", "--epochs=1",
            "--steps_per_epoch=3", "--max_trials=2", "--verbose=0", f"--run_dir={tmp_path}"]
    assert tune.main(argv) == 0
    assert "best of 2 trials" in capsys.readouterr().out
    summary = json.loads((tmp_path / "tuning.json").read_text())
    assert len(summary["trials"]) == 2 and all(0 <= t["val_top1"] <= 1 for t in summary["trials"])
    assert summary["best_val_top1"] == max(t["val_top1"] for t in summary["trials"])
    trial = json.loads((tmp_path / "trials" / summary["best_trial"] / "metrics.json").read_text())
    assert trial["status"] == "finished" and trial["eval_dataset"]["split"].startswith("train[every")
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["mk-train", f"--flagfile={tmp_path / 'best.flags'}", "--run_dir=unused"])
    lo, hi = summary["ranges"]["lr"]
    assert fv.lr == summary["best"]["lr"] and lo <= fv.lr <= hi
    assert fv.weight_decay == summary["best"]["weight_decay"]
    assert fv.label_smoothing == summary["best"]["label_smoothing"]


@pytest.mark.parametrize("binary, preset", [(train, "train_small"), (transfer, "transfer_small"), (tune, "tune_small")])
def test_presets_parse(binary, preset):
    fv = flags.FlagValues()
    binary.define_flags(fv)
    fv([binary.PROG, f"--flagfile=flags/{preset}.flags"])
    assert fv.run_dir.startswith("runs/small/") and fv.dataset == "fashion_mnist"


def _truncated_keras(tmp_path):
    """A valid .keras zip whose model.weights.h5 is cut in half (named like a registered architecture)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.DepthwiseConv2D(3)(inputs))
    keras.Model(inputs, keras.layers.Dense(5)(x), name="convnext_micro_cifar").save(tmp_path / "ok.keras")
    with zipfile.ZipFile(tmp_path / "ok.keras") as z_in, zipfile.ZipFile(tmp_path / "cut.keras", "w") as z_out:
        for name in z_in.namelist():
            raw = z_in.read(name)
            z_out.writestr(name, raw[: len(raw) // 2] if name == "model.weights.h5" else raw)
    return tmp_path / "cut.keras"


def _unregistered_keras(tmp_path):
    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)), name="mine").save(tmp_path / "m.keras")
    return tmp_path / "m.keras"


def _unfinished_run(tmp_path):
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "metrics.json").write_text(json.dumps({"status": "running"}))
    return tmp_path / "unfinished"


@pytest.mark.parametrize(
    "source, extra, message",
    [
        (_truncated_keras, [], "cannot load model file '{p}/cut.keras' (OSError: Unable to synchronously open file "
                               "(truncated file"),
        (_truncated_keras, ["--model=convnext_micro_cifar"], "cannot load model file '{p}/cut.keras' (OSError"),
        (_unregistered_keras, [], "source '{p}/m.keras' holds a model named 'mine', not a registered mk_keras "
                                  "architecture; pass --model"),
        (_unfinished_run, [], "run directory '{p}/unfinished' has no model.keras (unfinished run: its metrics.json "
                              "says status 'running')"),
        (lambda p: "convnext_micro_cifar", [], "'convnext_micro_cifar' is a registry model (random init); allowed "
                                               "here: run directory, .keras file"),
    ],
)
def test_mk_transfer_unusable_source_exits_2_with_one_line(source, extra, message, tmp_path, capsys):
    argv = ["mk-transfer", *TINY, "--classes=5,6,7,8,9", f"--source={source(tmp_path)}", "--n=1",
            f"--run_dir={tmp_path / 'run'}", *extra]
    assert transfer.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mk-transfer: error: ") and "Traceback" not in err
    assert message.format(p=tmp_path) in err
    assert not (tmp_path / "run").exists()


def test_mk_train_named_split_of_another_dataset_exits_2(tmp_path, capsys):
    argv = ["mk-train", *TINY, "--classes=fashion_garments", f"--run_dir={tmp_path / 'run'}"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert ("classes='fashion_garments' is a split of fashion_mnist or tfds:fashion_mnist (10 classes); "
            "digits[train] has classes '0', '1', '2', ...") in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("prog", ["mk-train", "mk-tune", "mk-sweep"])
def test_output_directory_below_a_regular_file_exits_2(prog, tmp_path, capsys):
    from mk_keras.cli import sweep

    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me")
    target = blocker / "run"
    argv = {
        "mk-train": ["mk-train", *TINY, f"--run_dir={target}"],
        "mk-tune": ["mk-tune", *TINY, "--max_trials=1", f"--run_dir={target}"],
        "mk-sweep": ["mk-sweep", "--dataset_a=digits", "--classes_a=0,1,2,3,4", "--classes_b=5,6,7,8,9",
                     "--depths=1", f"--output_dir={target}"],
    }[prog]
    binary = {"mk-train": train, "mk-tune": tune, "mk-sweep": sweep}[prog]
    assert binary.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: ") and "Traceback" not in err
    assert str(blocker) in err
    assert blocker.read_text() == "keep me"


@pytest.fixture(scope="module")
def atto_checkpoint(tmp_path_factory):
    """A random timm convnext_atto (3 classes) saved as a .safetensors state dict."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = timm.create_model("convnext_atto", pretrained=False, num_classes=3).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "atto.safetensors"
    save_file(state, str(path))
    return path, {k: v.numpy() for k, v in state.items()}


def test_mk_convert_writes_a_keras_file_mk_transfer_can_read(atto_checkpoint, tmp_path):
    import hashlib
    import os
    import subprocess
    import sys

    path, state = atto_checkpoint
    out = tmp_path / "models" / "atto.keras"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "mk_keras.cli.convert", f"--source=convnext_atto:{path}",
                           f"--out={out}"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    count = sum(v.size for v in state.values())  # the reference model's parameters (ConvNeXt has no buffers)
    assert proc.stdout == (f"mk-convert: convnext_atto:{path} (sha256 {digest}) -> {out}: convnext_atto, {count:,} "
                           "parameters, 3 classes\n")
    model = keras.saving.load_model(out, compile=False)
    np.testing.assert_array_equal(model.get_layer("stage3_block1_dwconv").kernel.numpy(),
                                  np.transpose(state["stages.2.blocks.0.conv_dw.weight"], (2, 3, 0, 1)))
    assert transfer.source_model_name(str(out)) == "convnext_atto"


@pytest.mark.parametrize("args, message", [
    (["--source=convnext_atto", "--out={tmp}/a.keras"], "is a registry model (random init); allowed: keras:"),
    (["--source=convnext_femto:{ckpt}", "--out={tmp}/a.keras"], "-> convnext_femto does not match: stem.0.weight has shape"),
    (["--source=convnext_atto:{ckpt}", "--model=resnet18", "--out={tmp}/a.keras"], "names model 'convnext_atto', "
     "not 'resnet18'"),
    (["--source=convnext_atto:{ckpt}", "--out={tmp}/a.h5"], "--out='{tmp}/a.h5' must end with .keras"),
    (["--source=convnext_atto:{ckpt}", "--out={tmp}/exists.keras"], "exists; pass --overwrite to replace it"),
    (["--source=keras:ConvNeXtTiny:{tmp}/none.weights.h5", "--out={tmp}/a.keras"], "does not exist"),
    (["--out={tmp}/a.keras"], "Flag --source must have a value other than None"),
])
def test_mk_convert_bad_input_exits_2_with_one_line(atto_checkpoint, args, message, tmp_path, capsys):
    from mk_keras.cli import convert

    (tmp_path / "exists.keras").write_text("keep")
    args = [a.format(tmp=tmp_path, ckpt=atto_checkpoint[0]) for a in args]
    assert convert.main(["mk-convert", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mk-convert: error: ") and err.count("\n") == 1
    assert message.format(tmp=tmp_path) in err
    assert (tmp_path / "exists.keras").read_text() == "keep" and not (tmp_path / "a.keras").exists()
