"""mk-filters end to end, in-process (main() parses argv like the console script)."""

import csv
import json

import keras
import numpy as np
import pytest
from analysis_helpers import plant_model, tiny, tiny_conv

import mk_keras
from mk_keras.cli.filters import main, run
from mk_keras.sources import load_source


@pytest.fixture
def planted_file(tmp_path):
    model = tiny()
    plant_model(model, [0, 0, 4, 7], noise=0.01)  # F1, F5, F8: apart once centred (|cos| <= 0.60)
    path = tmp_path / "planted.keras"
    model.save(path)
    return str(path)


def _one_line_error(capsys, rc, pattern):
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("mk-filters: error: ") and pattern in err, err


def test_cluster_from_a_flagfile_recovers_planted_types(tmp_path, planted_file):
    out = tmp_path / "out"
    flagfile = tmp_path / "cluster.flags"
    flagfile.write_text(f"--out_dir={out}\n--k=3\n--max_distance=0.3\n")
    assert main(["mk-filters", "cluster", planted_file, f"--flagfile={flagfile}"]) == 0
    with open(out / "clusters_depthwise_proportions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer_name"] for r in rows] == ["dw1", "dw2", "dw3"]
    for r in rows:
        assert r["model"] == "planted" and r["filters"] == "16"
        assert sorted(float(r[f"type_{j}"]) for j in range(3)) == [0.25, 0.25, 0.5]
    summary = json.loads((out / "clusters_depthwise_summary.json").read_text())
    assert summary["filters"] == 48 and summary["share_within"] == 1.0
    assert [t["nearest_master_key"] for t in summary["types"]] == ["F1_dy+T", "F5_dxT", "F8_T"]
    assert all(t["master_key_abs_cosine"] > 0.99 for t in summary["types"])
    for name in ("centroids", "proportions"):
        assert (out / f"clusters_depthwise_{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_a_model_file_with_itself(tmp_path, planted_file):
    paths = run("compare", [planted_file, planted_file], str(tmp_path))
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    np.testing.assert_allclose([float(r["similarity"]) for r in rows], 1, atol=1e-6)
    assert all(float(r["baseline"]) < 0.7 for r in rows)
    assert open(paths["plot"], "rb").read(4) == b"\x89PNG"


def test_compare_conv_filters(tmp_path):
    tiny_conv().save(tmp_path / "conv.keras")
    paths = run("compare", [str(tmp_path / "conv.keras")] * 2, str(tmp_path), kind="conv")
    assert paths["csv"].endswith("similarity_conv.csv")


def test_atlas_of_a_run_directory_and_a_model_file(tmp_path, planted_file, capsys):
    (tmp_path / "run1").mkdir()
    tiny().save(tmp_path / "run1" / "model.keras")
    argv = ["mk-filters", "atlas", str(tmp_path / "run1"), planted_file, f"--out_dir={tmp_path}"]
    assert main(argv + ["--per_layer=4", "--per_row=2"]) == 0
    assert (tmp_path / "atlas_depthwise.png").read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / "atlas_depthwise.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["run1"] * 12 + ["planted"] * 12
    assert {(r["tile_row"], r["tile_col"]) for r in rows} == {("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")}
    _one_line_error(capsys, main(argv), "exists; pass --overwrite")
    assert main(argv + ["--overwrite"]) == 0


def test_atlas_of_two_registry_models_draws_first_middle_last_layers(tmp_path):
    paths = run("atlas", ["convnext_atto_cifar", "mobilenetv2_cifar"], str(tmp_path), per_layer=5, per_row=3, seed=4)
    assert sorted(paths) == ["atlas", "csv"] and open(paths["atlas"], "rb").read(4) == b"\x89PNG"
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    keras.utils.set_random_seed(4)  # run() builds random-init models after this, in argument order
    models = {name: load_source(name).model for name in ("convnext_atto_cifar", "mobilenetv2_cifar")}
    for name, model in models.items():
        layers = mk_keras.filter_layers(model, "depthwise")
        picks = [0, (len(layers) - 1) // 2, len(layers) - 1]
        mine = [r for r in rows if r["model"] == name]
        assert len(mine) == 15
        assert [int(r["layer_index"]) for r in mine] == [i for i in picks for _ in range(5)]
        assert [r["layer"] for r in mine] == [layers[i].name for i in picks for _ in range(5)]
        for r in mine:
            kernel = keras.ops.convert_to_numpy(layers[int(r["layer_index"])].kernel)
            assert r["kernel"] == f"{kernel.shape[0]}x{kernel.shape[1]}"
            assert float(r["max_abs"]) == pytest.approx(np.abs(kernel[:, :, int(r["channel"]), 0]).max(), rel=1e-5)
    assert {m: len([r for r in rows if r["model"] == m and r["tile_row"] == "1"]) for m in models} == {
        m: 6 for m in models}  # 5 tiles per layer, 3 per row: 2 in the second row of each of the 3 layers


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["cluster", "{planted}", "--k=0"], "k=0 must be a positive integer"),
        (["cluster", "{conv}"], "has no depthwise layers"),
        (["atlas", "{bad}"], "cannot load model file"),
        (["atlas", "{tmp}/missing.keras"], "does not exist"),
        (["compare", "{planted}"], "compare needs exactly two models"),
        (["plot", "{planted}"], "unknown command 'plot'"),
        ([], "missing command"),
        (["atlas", "{planted}", "--kind=sideways"], "--kind"),
        (["atlas", "{planted}", "--per_row=0"], "--per_row"),
        (["atlas", "{planted}", "--per_layer=-3"], "--per_layer"),
        (["atlas", "convnext_atoo_cifar"], "unknown model spec 'convnext_atoo_cifar'"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, planted_file, capsys, args, pattern):
    tiny_conv().save(tmp_path / "conv.keras")
    (tmp_path / "bad.keras").write_bytes(b"garbage")
    names = {"planted": planted_file, "conv": tmp_path / "conv.keras", "bad": tmp_path / "bad.keras", "tmp": tmp_path}
    argv = ["mk-filters", *(a.format(**names) for a in args), f"--out_dir={tmp_path / 'out'}"]
    _one_line_error(capsys, main(argv), pattern)
