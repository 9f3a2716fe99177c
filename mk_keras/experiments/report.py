"""report.md of a sweep: what was compared, the training settings stored by the runs, progress, base
accuracies, relative-accuracy tables (mean ± sample std over seeds), paired per-seed differences with 95 %
confidence intervals (`mk_keras.experiments.stats`), the figures, and a summary computed from them."""

import json
import os

from mk_keras.experiments import external, plots, results
from mk_keras.experiments.treatments import TREATMENTS

# Spec keys that are not training settings (paths, logging, resumption) or that differ per run by design
# (the seed, and the source run of that seed).
_NOT_SETTINGS = ("run_dir", "flags_text", "overwrite", "verbose", "checkpoint_every", "checkpoint_every_s")
_PER_RUN = ("seed", "init_seed", "data_seed", "source", "source_sha256", "master_key_reference")


def _fmt(mean, std, digits=3):
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _fmt_ci(mean, half, digits=3, signed=False, unit=""):
    """'0.992 [0.980, 1.004]' (mean and 95 % CI); '0.992 (1 seed: no CI)' without a half-width."""
    if mean is None:
        return "–"
    def f(x):
        return f"{round(x, digits) + 0.0:{'+' if signed else ''}.{digits}f}"  # + 0.0: no "-0.000"

    if half is None:
        return f(mean) + unit + " (1 seed: no CI)"
    return f"{f(mean)}{unit} [{f(mean - half)}, {f(mean + half)}]"


def _excludes_zero(mean, half):
    return half is not None and abs(mean) > half


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return out


def _dataset_line(output_dir, rows, side, spec):
    """'spec (k classes: names; N training / M test images)' from a finished base run's metrics.json."""
    base = next((r for r in rows if r["treatment"] == f"base{side}" and r["status"] == "finished"), None)
    metrics = results.read_metrics(results.run_dir(output_dir, base["run_id"])) if base else None
    if not metrics or "dataset" not in metrics:
        return f"`{spec}`"
    info, evaluated = metrics["dataset"], metrics.get("eval_dataset", {})
    sizes = f"; {info['num_examples']} training images" + (
        f", {evaluated['num_examples']} test images" if evaluated.get("num_examples") else "")
    if base["source_size"]:
        sizes += f" with {base['source_size']} per class (source sizes vary)"
    return f"`{spec}` ({info['num_classes']} classes: {', '.join(info['class_names'])}{sizes})"


def _value(v):
    return v if isinstance(v, str) else json.dumps(v)


def stored_settings(output_dir, rows):
    """(common, differing, without) from the resolved run specification each finished run stored in its
    metrics.json ("spec"; runs of older versions: "config"): common = {key: value} equal in every such run;
    differing = [(run group, key, values)] for keys that differ between runs of one (model, kind, treatment,
    source size, n) beyond the seed and its source run; without = the finished runs that store none."""
    specs, without = {}, []
    for r in rows:
        if r["status"] != "finished":
            continue
        metrics = results.read_metrics(results.run_dir(output_dir, r["run_id"])) or {}
        spec = metrics.get("spec") or metrics.get("config")
        if spec:
            specs[r["run_id"]] = {k: json.dumps(v, sort_keys=True) for k, v in spec.items() if k not in _NOT_SETTINGS}
        else:
            without.append(r["run_id"])
    common = {}
    if specs:
        first, *others = specs.values()
        common = {k: json.loads(v) for k, v in first.items() if all(o.get(k, object()) == v for o in others)}
    groups = {}
    for r in rows:
        if r["run_id"] in specs:
            groups.setdefault((r["model"], r["kind"], r["treatment"], r["source_size"], r["n"]), []).append(
                specs[r["run_id"]])
    differing = []
    for (model, kind, treatment, size, n), members in groups.items():
        for key in sorted({k for m in members for k in m} - set(_PER_RUN)):
            values = list(dict.fromkeys(m.get(key, "(absent)") for m in members))
            if len(values) > 1:
                label = f"{model}{f' ({kind})' if kind else ''} {plots.line_label(treatment, size)}" + (
                    f" n={n}" if n is not None else "")
                differing.append((label, key, values))
    return common, differing, without


def _settings_lines(output_dir, rows, config):
    common, differing, without = stored_settings(output_dir, rows)
    if not common:
        given = ", ".join(f"{k}={_value(v)}" for k, v in sorted(config["train_args"].items())) or "none"
        return [f"- **Training settings:** no finished run stores its settings yet (the sweep's train_args: "
                f"{given})"]
    out = ["- **Training settings common to every finished run** (stored by each run in metrics.json; the "
           "rest differ by run, as the treatments say): "
           + ", ".join(f"{k}={_value(v)}" for k, v in sorted(common.items()))]
    if without:
        out.append(f"- **Runs without stored settings:** {len(without)} ({', '.join(without[:5])}"
                   f"{' …' if len(without) > 5 else ''})")
    if differing:
        out.append("- **Warning: settings differ between runs of one treatment, n and source size** (the seeds "
                   "of such a cell are not comparable): " + "; ".join(
                       f"{label}: {key} = {' / '.join(values)}" for label, key, values in differing[:10])
                   + (" …" if len(differing) > 10 else ""))
    return out


def _frozen_share(entry):
    """'; 22,800 of 590,812 weights frozen (3.9%)' for a summary entry, or '' without counts."""
    frozen, trainable = entry.get("frozen_params"), entry.get("trainable_params")
    if not frozen or trainable is None:
        return ""
    total = frozen + trainable
    return f"; {frozen:,} of {total:,} weights frozen ({100 * frozen / total:.1f}%)"


def _pp(entry):
    """'Δ top-1 −1.23 pp [−2.01, −0.45]' of a `stats.paired_differences` entry."""
    return "Δ top-1 " + _fmt_ci(entry["top1_pp_mean"], entry["top1_pp_ci"], 2, signed=True, unit=" pp")


def _seed_note(entry):
    """'3 seeds, 95 % CI excludes 0' (or 'includes 0'; one seed: no CI)."""
    k = entry["k"]
    if k < 2:
        return "1 seed"
    side = "excludes" if _excludes_zero(entry["top1_pp_mean"], entry["top1_pp_ci"]) else "includes"
    return f"{k} seeds; the CI of Δ top-1 {side} 0"


def _findings(summary, paired, arms):
    lines = []
    for arm in arms:
        for treatment in TREATMENTS:
            for size in dict.fromkeys(s["source_size"] for s in summary):
                pts = [s for s in summary if (s["model"], s["kind"], s["treatment"], s["source_size"]) ==
                       (arm["model"], arm["kind"], treatment, size) and s["relative_accuracy"] is not None
                       and s["n"] is not None]
                if not pts:
                    continue
                low = min(pts, key=lambda s: s["relative_accuracy"])
                high = max(pts, key=lambda s: s["relative_accuracy"])
                deep = max(pts, key=lambda s: s["n"])
                what = "layers n..L frozen" if treatment == "reversed" else "layers 1..n"
                vs_base = next((p for p in paired if (p["model"], p["kind"], p["x"], p["y"], p["source_size"],
                                                      p["n"]) == (arm["model"], arm["kind"], treatment, "baseB",
                                                                  size, deep["n"])), None)
                lines.append(
                    f"- {arm['model']} ({arm['kind']}), {plots.line_label(treatment, size)}: relative accuracy "
                    f"{low['relative_accuracy']:.3f} (n={low['n']}) to {high['relative_accuracy']:.3f} "
                    f"(n={high['n']}) over n = {', '.join(str(s['n']) for s in sorted(pts, key=lambda s: s['n']))} "
                    f"({what}); at the deepest n={deep['n']}: "
                    f"{_fmt_ci(deep['relative_accuracy'], deep['relative_accuracy_ci'])}"
                    + (f", vs baseB of the same seed {_pp(vs_base)} ({_seed_note(vs_base)}" if vs_base else
                       f" ({deep['relative_accuracy_seeds']} seed{'s' if deep['relative_accuracy_seeds'] != 1 else ''}")
                    + f"{_frozen_share(deep)})."
                )
    return lines


def _gaps(paired, arms):
    """Per arm: the paired differences X − Y (X, Y not baseB: AnB − BnB, AnB − random_frozen) at the deepest n
    they have, as 'model (kind) n=5: +0.012 relative accuracy [CI], Δ top-1 ... (k seeds; ...; per seed ...)'."""
    out = []
    for arm in arms:
        entries = [p for p in paired if (p["model"], p["kind"]) == (arm["model"], arm["kind"]) and p["y"] != "baseB"]
        for key in dict.fromkeys((p["x"], p["source_size"], p["y"]) for p in entries):
            deep = max((p for p in entries if (p["x"], p["source_size"], p["y"]) == key), key=lambda p: p["n"])
            rel = (f"{_fmt_ci(deep['rel_mean'], deep['rel_ci'], signed=True)} relative accuracy, "
                   if deep["rel_mean"] is not None else "")
            out.append(f"- {plots.line_label(key[0], key[1])} − {key[2]}: {arm['model']} ({arm['kind']}) "
                       f"n={deep['n']}: {rel}{_pp(deep)} ({_seed_note(deep)}; per seed: {_per_seed(deep)})")
    return out


def _per_seed(entry):
    return ", ".join(f"s{s} {v:+.2f}" for s, v in zip(entry["seeds"], entry["top1_pp"]))


def _paired_section(paired, arms):
    out = ["## Paired differences (per seed)", "",
           "At one seed every run of a model starts from the same initial weights and sees the same data order, so "
           "treatments are compared seed by seed: for X − Y, the difference is taken between the runs of the same "
           "model, kind, n, source size and seed (baseB: same model and seed), then averaged over the seeds that "
           "have both. **Δ top-1** = top-1 of X − top-1 of Y in percentage points; **Δ rel** = relative accuracy "
           "of X − relative accuracy of Y (for Y = baseB: relative accuracy of X − 1). Brackets: 95 % "
           "confidence interval of the mean over the k seeds (Student t: mean ± t(0.975, k−1) · s / √k); none "
           "with one seed.",
           ""]
    for arm in arms:
        entries = [p for p in paired if (p["model"], p["kind"]) == (arm["model"], arm["kind"])]
        if not entries:
            continue
        order = list(dict.fromkeys((p["x"], p["source_size"], p["y"]) for p in entries))
        entries.sort(key=lambda p: (order.index((p["x"], p["source_size"], p["y"])), p["n"]))
        out += [f"### {plots.arm_title(arm)}", ""]
        header = ["X − Y", "n", "k seeds", "Δ top-1 (pp) [95 % CI]", "Δ rel [95 % CI]", "Δ top-1 per seed (pp)"]
        out += _table(header,
                      [(f"{plots.line_label(p['x'], p['source_size'])} − {p['y']}", p["n"], p["k"],
                        _fmt_ci(p["top1_pp_mean"], p["top1_pp_ci"], 2, signed=True),
                        _fmt_ci(p["rel_mean"], p["rel_ci"], signed=True), _per_seed(p)) for p in entries])
        out.append("")
    return out


def _external_lines(output_dir, definition):
    """One line per model whose base A is an external source: its spec, the sha256 of the source file and of
    the `.keras` file the runs copied from."""
    config = definition["config"]
    out = []
    for model, spec in external.external_sources(config["models"], config.get("base_a_source")).items():
        record = external.read_record(output_dir, model)
        if record is None or record.get("spec") != spec:
            out.append(f"- **Base A of {model} (external source, not trained here):** `{spec}` (not converted yet)")
            continue
        digest = f"sha256 `{record['sha256']}`" if record.get("sha256") else "no file hash"
        what = "weights digest of the converted model" if record.get("kind") == "keras_weights" and not \
            record.get("path") else f"source file `{record.get('path')}`"
        out.append(f"- **Base A of {model} (external source, not trained here):** `{spec}` ({what}, {digest}); "
                   f"converted into `{record['keras_file']}` (sha256 `{record['keras_sha256']}`), which the "
                   "transfers from A copy from")
    return out


def render(output_dir, definition, rows, summary, paired, figures):
    """The markdown text of report.md."""
    config, arms, planned = definition["config"], definition["arms"], definition["runs"]
    seeds = config["seeds"]
    done = [r for r in rows if r["status"] == "finished"]
    failed = [r for r in rows if r["status"] != "finished"]
    have = {r["run_id"] for r in rows}
    missing = [r["run_id"] for r in planned if r["run_id"] not in have]
    train_min = sum(r["wall_time_s"] or 0 for r in rows) / 60
    dataset_b = config["dataset_b"] or config["dataset_a"]
    spec_a = results.dataset_label(config["dataset_a"], config["classes_a"])
    spec_b = results.dataset_label(dataset_b, config["classes_b"])

    out = [f"# Transfer sweep `{config['name']}`", ""]
    out += [
        "**Question.** Do filters learned on dataset A still serve a model that is trained on dataset B when "
        "they are copied and frozen (Yosinski et al. 2014; the Master Key Filters Hypothesis says that depthwise "
        "filters stay general at every depth, while classic conv filters become specific to A in deep layers)? "
        "**Relative accuracy** = top-1 of a run / top-1 of baseB (same model, same seed) on B's test split: "
        "1.0 means as good as the model trained on B from scratch.",
        "",
        f"- **A:** {_dataset_line(output_dir, rows, 'A', spec_a)}",
        f"- **B:** {_dataset_line(output_dir, rows, 'B', spec_b)}",
        "- **Models:** " + "; ".join(f"{a['model']} ({a['kind']} filters, {a['layers']} layers; n = "
                                     f"{', '.join(map(str, a['depths']))})" for a in arms),
    ]
    out += _external_lines(output_dir, definition)
    if config.get("cross_source"):
        out.append(f"- **Cross-architecture source:** {config['cross_source']} (kernel_map="
                   f"{config['cross_kernel_map']}, channel_map={config['cross_channel_map']})")
    if config.get("source_sizes"):
        out.append(f"- **Source sizes (examples per class of A):** {', '.join(map(str, config['source_sizes']))}")
    out += [
        f"- **Seeds:** {', '.join(map(str, seeds))} (at one seed, the runs of a model share their initial "
        "weights and data order: treatments are compared per seed, see Paired differences)",
        *_settings_lines(output_dir, rows, config),
        f"- **Progress:** {len(rows)} of {len(planned)} planned runs have results ({len(done)} finished, "
        f"{len(failed)} failed); summed training time (fit, as `train` reports it) {train_min:.1f} min.",
    ]
    if missing:
        out.append(f"- **No result yet:** {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''} "
                   "(rerun the sweep to finish them; shards may still be running)")
    for r in failed:
        out.append(f"- **Failed:** {r['run_id']}: {r['error']}")

    out += ["", "## Treatments", ""]
    out += _table(["treatment", "meaning"], [(t, TREATMENTS[t].meaning) for t in config["treatments"]])
    out += ["", "\"Layers\" are the model's filter layers of the arm's kind, counted in forward order "
            "(`mk_keras.filter_layers`). Copying takes a layer's kernel and bias; frozen layers are not trained "
            "(`trainable=False`); " + ("the normalisation layer after each frozen layer is copied and frozen too."
                                       if config["train_args"].get("freeze_following_norm") else
                                       "the normalisation layers after them are not copied and train from "
                                       "scratch.")]

    out += ["", "## Base models (top-1 on the test split of their own dataset; mean ± sample std over seeds)", ""]
    base_cols = [t for t in ("baseA", "baseB") if t in config["treatments"]]
    base_lines = []
    for model in dict.fromkeys(r["model"] for r in planned if TREATMENTS[r["treatment"]].is_base):
        cells = []
        for t in base_cols:
            sizes = dict.fromkeys(s["source_size"] for s in summary if s["model"] == model and s["treatment"] == t)
            cells.append("; ".join(
                (f"A: {size}/class: " if size else "") + _fmt(s["top1"], s["top1_std"], 4)
                for size in sizes for s in summary
                if (s["model"], s["treatment"], s["source_size"]) == (model, t, size)) or "–")
        base_lines.append((model, *cells))
    out += _table(["model", *base_cols], base_lines)

    out += ["", "## Relative accuracy (mean ± sample std over seeds)", "",
            "± is the sample standard deviation of the single runs over the seeds (their spread), not an "
            "uncertainty of the mean; confidence intervals of paired differences are in the next section.", ""]
    for arm in arms:
        keys = list(dict.fromkeys((s["treatment"], s["source_size"]) for s in summary
                                  if (s["model"], s["kind"]) == (arm["model"], arm["kind"]) and s["n"] is not None))
        if not keys:
            continue
        ns = sorted({s["n"] for s in summary if (s["model"], s["kind"]) == (arm["model"], arm["kind"])
                     and s["n"] is not None})
        cell = {(s["treatment"], s["source_size"], s["n"]): _fmt(s["relative_accuracy"], s["relative_accuracy_std"])
                for s in summary if (s["model"], s["kind"]) == (arm["model"], arm["kind"])}
        out += [f"### {plots.arm_title(arm)}", ""]
        out += _table(["treatment", *(f"n={n}" for n in ns)],
                      [(plots.line_label(t, size), *(cell.get((t, size, n), "") for n in ns)) for t, size in keys])
        out.append("")

    out += _paired_section(paired, arms)

    if figures:
        out += ["## Figures", "",
                "Points: mean over seeds; error bars: 95 % confidence interval of that mean over the k seeds "
                "(Student t; none with one seed; each title gives k); dots: single seeds. Relative accuracy: "
                "top-1 / top-1 of baseB of the same seed. Paired differences: top-1 of X − top-1 of Y of the same "
                "seed, in percentage points.", ""]
        for title, path in figures:
            out += [f"**{title}**", "", f"![{title}]({os.path.relpath(path, output_dir)})", ""]

    findings = _findings(summary, paired, arms)
    if findings:
        out += ["## Summary (computed from the tables above)", ""]
        if max(s["seeds"] for s in summary) == 1:
            out += ["**One seed per run: no confidence intervals.** Differences of a few per cent can be seed noise; "
                    "run more seeds (`--seeds=0,1,2`).", ""]
        gaps = _gaps(paired, arms)
        if gaps:
            meaning = {"BnB": "AnB − BnB: the cost of A's filters beyond the cost of freezing B's own",
                       "random_frozen": "AnB − random_frozen: what A's filters give over frozen random ones"}
            shown = [meaning[y] for y in meaning if any(p["y"] == y for p in paired)]
            out += ["Paired differences at the deepest n (same seed; mean [95 % CI over k seeds, Student t]; "
                    + "; ".join(shown) + "):", "", *gaps, ""]
        out += ["Each treatment (relative accuracy mean [95 % CI]; Δ top-1 vs baseB of the same seed):", "",
                *findings, ""]

    out += ["## Files", "",
            "- `results.csv`, `results.jsonl`: one row per run (columns: " + ", ".join(results.COLUMNS) + ")",
            "- `runs/<run_id>/`: each run's flags.txt, spec.json (older runs: config.json), metrics.json (per-epoch "
            "history and the run's settings), model.keras",
            "- `sweep.json`: the experiment definition and the planned runs"]
    if os.path.exists(os.path.join(output_dir, "flags.txt")):
        out.append(f"- `flags.txt`: rerun (resumes; finished runs are skipped) with "
                   f"`mk-sweep --flagfile={os.path.join(output_dir, 'flags.txt')}`")
    return "\n".join(out) + "\n"


def write_report(output_dir, definition, rows, summary, paired, figures):
    """Write `output_dir/report.md` atomically; returns its path."""
    path = os.path.join(output_dir, "report.md")
    results.atomic_write_text(path, render(output_dir, definition, rows, summary, paired, figures))
    return path
