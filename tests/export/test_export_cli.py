"""mk-export in-process: a transfer run exported to saved_models/ and verified, bad input, the backend switch."""

import json
import os
import sys

import keras
import pytest
from export_helpers import make_run_dir, sha256

from mk_keras.cli import export as cli
from mk_keras.export import METADATA_FILE


def _one_error_line(capsys, fragment):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mk-export: error:") and fragment in err[0], err


def test_resnet_transfer_run_exports_to_saved_models_and_verifies(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _, report = make_run_dir("runs/resnet_conv_n4", "resnet10_cifar", n=4, kind="conv")
    assert cli.main(["mk-export", "--run_dir=runs/resnet_conv_n4", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "-> saved_models/resnet_conv_n4" in out and "OK" in out and "4/4 bit-identical" in out
    assert "4 transfer proofs" in out and "transfer proofs: 4 kernels checked against transfer_report.json" in out
    with open(tmp_path / "saved_models" / "resnet_conv_n4" / METADATA_FILE) as f:
        meta = json.load(f)
    assert meta["kind"] == "conv" and len(meta["frozen_kernels"]) == 4
    assert meta["frozen_layers"] == report.frozen_layers and meta["frozen_layers"][0] == "stem_conv"

    before = os.path.getmtime(tmp_path / "saved_models" / "resnet_conv_n4" / METADATA_FILE)
    assert cli.main(["mk-export", "--run_dir=runs/resnet_conv_n4"]) == 2
    _one_error_line(capsys, "exists; pass overwrite")
    assert os.path.getmtime(tmp_path / "saved_models" / "resnet_conv_n4" / METADATA_FILE) == before


def _running(run_dir):
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump({"status": "running"}, f)


def _corrupt(run_dir):
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump({"status": "finished"}, f)
    with open(os.path.join(run_dir, "model.keras"), "wb") as f:
        f.write(b"PK\x03\x04 truncated")


@pytest.mark.parametrize(
    "prepare, args, fragment",
    [
        (None, ["--run_dir={run}"], "does not exist"),
        (os.makedirs, ["--run_dir={run}"], "has no metrics.json"),
        (_running, ["--run_dir={run}"], "unfinished run (status 'running')"),
        (_corrupt, ["--run_dir={run}", "--overwrite"], "cannot load"),
        (None, ["--model_file={run}.keras"], "does not exist"),
        (None, ["--run_dir={run}", "--model_file=m.keras"], "not both"),
        (None, [], "nothing to export"),
        (None, ["--verify"], "is not an mk_keras export"),
        (None, ["--run_dir={run}", "--atol=-1"], "atol"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys, prepare, args, fragment):
    run = str(tmp_path / "run")
    if prepare is not None:
        prepare(run)
    output = tmp_path / "export"
    assert cli.main(["mk-export", *[a.format(run=run) for a in args], f"--output={output}"]) == 2
    _one_error_line(capsys, fragment)
    assert sorted(os.listdir(tmp_path)) == (["run"] if prepare else [])


def test_other_backend_reexecutes_under_tensorflow(monkeypatch):
    calls = []

    class Exec(Exception):
        pass

    def fake_execve(path, args, env):
        calls.append((path, args, env))
        raise Exec

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.delenv(cli._REEXEC_ENV, raising=False)
    with pytest.raises(Exec):
        cli._ensure_tensorflow(["mk-export", "--run_dir=r"])
    path, args, env = calls[0]
    assert args == [sys.executable, "-m", "mk_keras.cli.export", "--run_dir=r"]
    assert env["KERAS_BACKEND"] == "tensorflow"
    monkeypatch.setenv(cli._REEXEC_ENV, "1")
    with pytest.raises(SystemExit, match="could not switch"):
        cli._ensure_tensorflow(["mk-export"])


@pytest.mark.slow
def test_real_transfer_run_exports(tmp_path, capsys):
    from mk_keras import create_model
    from mk_keras.training import train

    create_model("convnext_micro_cifar", num_classes=10).save(str(tmp_path / "source.keras"))
    run_dir = str(tmp_path / "digits_n2")
    train(model="convnext_micro_cifar", dataset="digits", classes=[0, 1, 2], run_dir=run_dir, epochs=1,
          batch_size=16, steps_per_epoch=1, steps_per_execution=1, max_per_class=16, eval_max_per_class=4,
          eval_every=0, source=str(tmp_path / "source.keras"), n=2, verbose=0)
    assert cli.main(["mk-export", f"--run_dir={run_dir}", f"--output={tmp_path / 'export'}"]) == 0
    with open(tmp_path / "export" / METADATA_FILE) as f:
        meta = json.load(f)
    trained = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    frozen = ["stage1_block1_dwconv", "stage2_block1_dwconv"]
    assert meta["frozen_layers"] == frozen
    assert [k["sha256"] for k in meta["frozen_kernels"]] == [
        sha256(keras.ops.convert_to_numpy(trained.get_layer(name).kernel)) for name in frozen]
    assert (meta["n"], meta["kind"], meta["class_names"]) == (2, "depthwise", ["0", "1", "2"])
    assert meta["datasets"]["train"]["spec"] == "digits" and meta["filter_source"]["model"] == "convnext_micro_cifar"
    assert meta["source"]["trained_backend"] == "tensorflow"
