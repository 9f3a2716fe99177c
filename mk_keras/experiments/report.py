"""report.md of a sweep: what was compared, progress, base accuracies, relative-accuracy tables (mean +- std
over seeds), the figures, and a summary computed from the tables."""

import inspect
import os

from mk_keras.experiments import plots, results
from mk_keras.experiments.treatments import TREATMENTS
from mk_keras.training import train


def _fmt(mean, std, digits=3):
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


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


def _settings(train_args):
    """The `train_args` that differ from `train`'s defaults, as 'k=v, ...'."""
    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()}
    shown = {k: v for k, v in train_args.items() if k != "verbose" and k in defaults and v != defaults[k]
             and not (isinstance(v, list) and tuple(v) == defaults[k])}
    text = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
    return (text + "; the rest" if text else "all") + " as the defaults of `mk_keras.training.train`"


def _frozen_share(entry):
    """'; 22,800 of 590,812 weights frozen (3.9%)' for a summary entry, or '' without counts."""
    frozen, trainable = entry.get("frozen_params"), entry.get("trainable_params")
    if not frozen or trainable is None:
        return ""
    total = frozen + trainable
    return f"; {frozen:,} of {total:,} weights frozen ({100 * frozen / total:.1f}%)"


def _findings(summary, arms):
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
                share = _frozen_share(deep)
                lines.append(
                    f"- {arm['model']} ({arm['kind']}), {plots.line_label(treatment, size)}: relative accuracy "
                    f"{low['relative_accuracy']:.3f} (n={low['n']}) to {high['relative_accuracy']:.3f} "
                    f"(n={high['n']}) over n = {', '.join(str(s['n']) for s in sorted(pts, key=lambda s: s['n']))} "
                    f"({what}); at the deepest n={deep['n']}: "
                    f"{_fmt(deep['relative_accuracy'], deep['relative_accuracy_std'])} ({deep['seeds']} seed"
                    f"{'s' if deep['seeds'] != 1 else ''}{share})."
                )
    return lines


def _gaps(summary, arms):
    """'AnB - BnB' of relative accuracy at the deepest n both have, per arm: the loss due to A's filters
    beyond what freezing B's own filters costs (Yosinski et al.'s specificity)."""
    out = []
    for arm in arms:
        pts = {(s["treatment"], s["n"]): s["relative_accuracy"] for s in summary
               if (s["model"], s["kind"]) == (arm["model"], arm["kind"]) and s["source_size"] is None
               and s["relative_accuracy"] is not None}
        shared = [n for (t, n) in pts if t == "AnB" and ("BnB", n) in pts]
        if shared:
            n = max(shared)
            out.append(f"{arm['model']} ({arm['kind']}) n={n}: {pts[('AnB', n)] - pts[('BnB', n)]:+.3f}")
    return out


def render(output_dir, definition, rows, summary, figures):
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
    if config.get("cross_source"):
        out.append(f"- **Cross-architecture source:** {config['cross_source']} (kernel_map="
                   f"{config['cross_kernel_map']}, channel_map={config['cross_channel_map']})")
    if config.get("source_sizes"):
        out.append(f"- **Source sizes (examples per class of A):** {', '.join(map(str, config['source_sizes']))}")
    out += [
        f"- **Seeds:** {', '.join(map(str, seeds))} (± = sample standard deviation over seeds)",
        f"- **Training, every run:** {_settings(config['train_args'])}",
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

    out += ["", "## Base models (top-1 on the test split of their own dataset)", ""]
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

    out += ["", "## Relative accuracy (mean ± std over seeds)", ""]
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

    if figures:
        out += ["## Figures", ""]
        for title, path in figures:
            out += [f"**{title}**", "", f"![{title}]({os.path.relpath(path, output_dir)})", ""]

    findings = _findings(summary, arms)
    if findings:
        out += ["## Summary (computed from the tables above)", "", *findings, ""]
        if max(s["seeds"] for s in summary) == 1:
            out += ["One seed per run: differences of a few per cent can be seed noise; run more seeds "
                    "(`--seeds=0,1,2`) for ± estimates.", ""]
        bars = plots.retention(summary, arms)
        if bars:
            out += ["Retention at the deepest n: " + "; ".join(
                f"{arm['model']} ({arm['kind']}) {label} n={n}: {_fmt(mean, std)}" for arm, label, n, mean, std in bars)
                + ".", ""]
        gaps = _gaps(summary, arms)
        if gaps:
            out += ["AnB − BnB at the deepest n (the cost of A's filters beyond the cost of freezing B's own): "
                    + "; ".join(gaps) + ".", ""]

    out += ["## Files", "",
            "- `results.csv`, `results.jsonl`: one row per run (columns: " + ", ".join(results.COLUMNS) + ")",
            "- `runs/<run_id>/`: each run's flags.txt, config.json, metrics.json (per-epoch history), model.keras",
            "- `sweep.json`: the experiment definition and the planned runs"]
    if os.path.exists(os.path.join(output_dir, "flags.txt")):
        out.append(f"- `flags.txt`: rerun (resumes; finished runs are skipped) with "
                   f"`mk-sweep --flagfile={os.path.join(output_dir, 'flags.txt')}`")
    return "\n".join(out) + "\n"


def write_report(output_dir, definition, rows, summary, figures):
    """Write `output_dir/report.md` atomically; returns its path."""
    path = os.path.join(output_dir, "report.md")
    results.atomic_write_text(path, render(output_dir, definition, rows, summary, figures))
    return path
