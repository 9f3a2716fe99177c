"""docs/findings.md generation: paired differences, outcome rules, verdicts, and the claim table's presets."""

import os

import pytest

from mk_keras.experiments import findings
from mk_keras.experiments.findings import CLAIMS, Check, Claim, Side, outcome, paired, render, verdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _row(treatment, seed, top1, model="m", kind=None, n=None, size=None):
    return {"model": model, "kind": kind, "treatment": treatment, "n": n, "seed": seed, "source_size": size,
            "top1": top1, "status": "finished", "relative_accuracy": None, "frozen_params": 0,
            "trainable_params": 1}


def test_outcome_rules():
    assert outcome(1.0, 0.5) == "higher"
    assert outcome(-1.0, 0.5) == "lower"
    assert outcome(-0.5, 1.0) == "no_loss"  # CI [-1.5, 0.5] above -2 pp
    assert outcome(-0.5, 2.0) == "unclear"  # CI [-2.5, 1.5] reaches below the margin
    assert outcome(0.3, None) is None


def test_paired_matches_seed_kind_n_and_size():
    rows = {"p": [
        *(_row("baseB", s, 0.80 + 0.01 * s) for s in range(3)),
        *(_row("AnB", s, 0.81 + 0.01 * s + 0.001 * n, kind="depthwise", n=n, size=100) for s in range(3)
          for n in (1, 5)),
        *(_row("random_frozen", s, 0.70 + 0.01 * s, kind="depthwise", n=n) for s in range(2) for n in (1, 5)),
    ]}
    last = paired(rows, Check(Side("p", "AnB", "depthwise", n="last"), Side("p", "baseB"), "no_loss"))
    assert len(last) == 1 and last[0]["n"] == 5 and last[0]["seeds"] == [0, 1, 2]
    assert last[0]["diffs_pp"] == pytest.approx([1.5, 1.5, 1.5])
    assert last[0]["ci_pp"] == pytest.approx(0.0, abs=1e-9) and last[0]["outcome"] == "higher"
    every_n = paired(rows, Check(Side("p", "AnB", "depthwise"), Side("p", "random_frozen", "depthwise"), "higher"))
    assert sorted(e["n"] for e in every_n) == [1, 5]
    for e in every_n:  # seed 2 has no random_frozen run: left out, not paired with another seed
        assert e["seeds"] == [0, 1]
        assert e["diffs_pp"] == pytest.approx([11 + 0.1 * e["n"]] * 2)


def test_paired_across_presets_and_sizes():
    rows = {"a": [_row("AnB", s, 0.9, kind="dw", n=5, size=400) for s in range(2)],
            "b": [_row("AnB", s, 0.8 + 0.05 * s, kind="dw", n=5, size=1000) for s in range(2)]}
    got = paired(rows, Check(Side("a", "AnB", "dw", n="last"), Side("b", "AnB", "dw", n="last"), None))
    assert got[0]["diffs_pp"] == pytest.approx([10.0, 5.0])  # sizes differ across presets: still paired by seed
    rows = {"a": [_row("AnB", s, 0.7 + 0.1 * (size == 6000), kind="dw", n=5, size=size)
                  for s in range(2) for size in (100, 6000)]}
    got = paired(rows, Check(Side("a", "AnB", "dw", source_size=6000), Side("a", "AnB", "dw", source_size=100), None))
    assert len(got) == 1 and got[0]["source_size"] == 6000
    assert got[0]["diffs_pp"] == pytest.approx([10.0, 10.0])


def _claim(*tests):
    return Claim("k", "t", ("p",), "q", "s", "r", tests)


def _entry(mean, half):
    return {"mean_pp": mean, "ci_pp": half, "outcome": outcome(mean, half)}


def test_verdict_rules():
    main = Check(Side("p", "AnB"), Side("p", "baseB"), "no_loss")
    control = Check(Side("p", "AnB"), Side("p", "random_frozen"), "higher", control=True)
    claim = _claim(main, control)
    word, why = verdict(claim, [[_entry(0.2, 0.5)], [_entry(3.0, 1.0)]])
    assert word == "supported" and "every control" in why
    word, why = verdict(claim, [[_entry(0.2, 0.5)], [_entry(0.5, 1.0)]])
    assert word == "not shown" and "cannot credit" in why
    assert verdict(claim, [[_entry(-3.0, 1.0)], [_entry(3.0, 1.0)]])[0] == "contradicted"
    assert verdict(claim, [[_entry(0.2, 0.5)], []])[0] == "incomplete"
    assert verdict(claim, [[_entry(0.2, None)], [_entry(3.0, 1.0)]])[0] == "incomplete"


def test_render_writes_tables_verdicts_and_figures(tmp_path):
    runs = tmp_path / "runs"
    fig = runs / "master_keys" / "figures"
    fig.mkdir(parents=True)
    (fig / "relative_accuracy.png").write_bytes(b"png")
    rows = {"master_keys": [_row("baseB", s, 0.80, model="convnext_micro_cifar") for s in range(3)]
            + [_row(t, s, 0.80 + d + 0.001 * s, model="convnext_micro_cifar", kind="depthwise", n=5)
               for s in range(3) for t, d in (("master_keys", 0.0), ("random_frozen", -0.05), ("shuffled", -0.04),
                                               ("delta", -0.06), ("master_keys_fit", 0.001), ("AnB", 0.002))]}
    out = tmp_path / "docs" / "findings.md"
    text = render(rows, str(runs), str(out), provenance="Test provenance.")
    assert "Test provenance." in text and findings.RULES in text
    for claim in CLAIMS:
        assert claim.title in text
    assert "| [Master keys: 8 published filters replace learned depthwise filters](#master_keys) | **supported** |" \
        in text
    assert ("| master_keys − random_frozen (control) | convnext_micro_cifar, depthwise, n=5 | 3 | +5.00 ± 0.00 |"
            in text)
    assert "**incomplete**" in text  # the claims without rows
    assert (tmp_path / "docs" / "img" / "findings" / "master_keys_relative_accuracy.png").read_bytes() == b"png"
    assert "](img/findings/master_keys_relative_accuracy.png)" in text


def _flags(preset):
    values = {}
    for path in (os.path.join(ROOT, "flags", "claims", "common.flags"),
                 os.path.join(ROOT, "flags", "claims", f"{preset}.flags")):
        with open(path) as f:
            for line in f:
                if line.startswith("--") and "=" in line:
                    key, value = line[2:].strip().split("=", 1)
                    values[key] = value
    return values


def test_every_claim_test_names_treatments_of_its_preset():
    on_disk = {f[:-6] for f in os.listdir(os.path.join(ROOT, "flags", "claims")) if f.endswith(".flags")}
    assert set(findings.presets()) == on_disk - {"common"}
    for claim in CLAIMS:
        for test in claim.tests:
            for side in (test.x, test.y):
                assert side.preset in claim.presets
                flags = _flags(side.preset)
                assert side.treatment in flags["treatments"].split(","), (claim.key, side)
                if side.model:
                    assert side.model in flags["models"].split(","), (claim.key, side)
                if side.source_size:
                    assert str(side.source_size) in flags["source_sizes"].split(","), (claim.key, side)


def test_cli_lists_presets_and_refuses_a_missing_runs_dir(tmp_path, capsys):
    assert findings.main(["--list_presets"]) == 0
    assert capsys.readouterr().out.split() == findings.presets()
    with pytest.raises(SystemExit) as e:
        findings.main([f"--runs={tmp_path / 'nope'}"])
    assert e.value.code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_progress_names_unfinished_presets():
    first, *rest = findings.presets()
    rows = {first: [_row("baseB", 0, 0.8)]}
    text = findings.progress(rows, {first: 2})
    assert text.startswith("**Incomplete") and f"{first} 1/2" in text and f"{rest[0]} not started" in text
    everything = {p: [_row("baseB", 0, 0.8)] for p in findings.presets()}
    assert findings.progress(everything, {p: 1 for p in findings.presets()}).startswith("All planned runs finished")


def test_plain_words_say_what_is_shown_what_is_open_and_whether_the_setup_can_see_filters():
    main = Check(Side("p", "AnB"), Side("p", "baseB"), "no_loss")
    control = Check(Side("p", "AnB"), Side("p", "random_frozen"), "higher", control=True)
    claim = _claim(main, control)
    where = {"model": "m", "kind": "depthwise", "n": 5, "source_size": None}
    text = findings.plain_words(claim, [[{**_entry(0.2, 0.5), **where}], [{**_entry(0.5, 3.0), **where}]])
    assert "The data show AnB within 2 pp of or above baseB (m, depthwise, n=5: +0.20 ± 0.50 pp; predicted no " \
           "loss)." in text
    assert "They do not tell AnB from random_frozen (m, depthwise, n=5: +0.50 ± 3.00 pp; predicted higher): the " \
           "95 % interval holds 0 and reaches below -2 pp." in text
    assert "No comparison with control filters comes out higher" in text
    assert findings.SCALE_CAVEAT in text
    text = findings.plain_words(claim, [[{**_entry(0.2, 0.5), **where}], [{**_entry(3.0, 1.0), **where}]])
    assert "can detect an effect of what the filters hold where the filters under test beat control filters: AnB " \
           "above random_frozen in m, depthwise, n=5." in text
    assert findings.plain_words(claim, [[], []]) == ""
    # a predicted direction whose interval holds 0 but stays above -2 pp is said to be open, not shown
    text = findings.plain_words(claim, [[{**_entry(0.2, 0.5), **where}], [{**_entry(0.5, 1.0), **where}]])
    assert "AnB within 2 pp of or above random_frozen (m, depthwise, n=5: +0.50 ± 1.00 pp; predicted higher)" in text
    assert "They do not show AnB above random_frozen (m, depthwise, n=5), as predicted: there the 95 % interval " \
           "holds 0." in text
    # controls not finished are not read as a negative result
    text = findings.plain_words(claim, [[{**_entry(0.2, 0.5), **where}], []])
    assert "No comparison with control filters has finished yet" in text
    assert "comes out higher" not in text


def test_load_rows_reads_the_finished_runs_of_each_preset_sweep(tmp_path):
    from sweep_helpers import FakeTrain

    from mk_keras.cli import sweep as cli

    runs = tmp_path / "runs"
    status = cli.main(["mk-sweep", f"--flagfile={ROOT}/flags/claims/master_keys.flags",
                       f"--output_dir={runs / 'master_keys'}", f"--store={tmp_path / 'store'}"], train_fn=FakeTrain())
    assert status == 0
    result = runs / "master_keys" / "results" / "convnext_micro_cifar-depthwise-delta-n5-s3.json"
    result.write_text(result.read_text().replace('"status": "finished"', '"status": "failed"'))
    (runs / "fig3_general_filters").mkdir()  # a directory without sweep.json: not a sweep yet
    rows, planned = findings.load_rows(str(runs))
    assert planned == {"master_keys": 40}
    assert len(rows["master_keys"]) == 39 and {r["status"] for r in rows["master_keys"]} == {"finished"}
    assert ("delta", 3) not in {(r["treatment"], r["seed"]) for r in rows["master_keys"]}
    assert all(r["top1"] is not None for r in rows["master_keys"])
    line = findings.progress(rows, planned)
    assert "master_keys 39/40" in line and "fig3_general_filters not started" in line
