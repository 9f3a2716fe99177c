"""Sweep figures (PNG): relative accuracy vs n (Yosinski Fig. 3 style), reversed freezing (Fig. 4 style),
retention across models (Fig. 5 style) and paired differences (AnB − BnB, AnB − random_frozen) vs n. Each
plots the mean over seeds with error bars = 95 % Student-t confidence interval of the mean over the seeds
(none with one seed; the title says so and gives the number of seeds), single seeds as dots, and the
reference (baseB = 1.0, or a difference of 0) as a dashed line."""

import math
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mk_keras.experiments.treatments import TREATMENTS

_COLORS = {name: f"C{i}" for i, name in enumerate(t for t in TREATMENTS if not TREATMENTS[t].is_base)}
_MARKERS = "osD^v<>p"


def line_label(treatment, size):
    return treatment + (f" (A: {size}/class)" if size else "")


def arm_title(arm):
    return f"{arm['model']}: {arm['kind']} filters ({arm['layers']} layers)"


def _new_figure(panels, width=4.6, height=3.6):
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def bars_note(seed_counts):
    """What the error bars are, for seed counts `seed_counts` of the points drawn."""
    counts = sorted(set(seed_counts))
    if not counts or counts[-1] < 2:
        return "1 seed: no error bars (no CI)"
    k = str(counts[-1]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"error bars: 95 % CI over {k} seeds (Student t)"


def _baseline(ax):
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1, label="baseB (1.0)")


def _plot_lines(ax, summary, rows, arm, treatments):
    """One line per (treatment, source size) of `arm`: mean +- CI half-width vs n, seeds as dots; returns the
    y values drawn and the seed counts of the points."""
    keys, drawn, counts = [], [1.0], []
    for s in summary:
        key = (s["treatment"], s["source_size"])
        if (s["model"], s["kind"]) == (arm["model"], arm["kind"]) and s["treatment"] in treatments and key not in keys:
            keys.append(key)
    for i, (treatment, size) in enumerate(keys):
        points = sorted((s["n"], s["relative_accuracy"], s["relative_accuracy_ci"], s["relative_accuracy_seeds"])
                        for s in summary
                        if (s["model"], s["kind"], s["treatment"], s["source_size"]) ==
                        (arm["model"], arm["kind"], treatment, size) and s["relative_accuracy"] is not None)
        if not points:
            continue
        color = _COLORS.get(treatment) if len({k[1] for k in keys}) == 1 else f"C{i}"
        ns, means, cis, ks = zip(*points)
        counts += ks
        dodge = 0.08 * (i - (len(keys) - 1) / 2)  # side by side, so that error bars do not hide each other
        ns = [n + dodge for n in ns]
        ax.errorbar(ns, means, yerr=[c or 0.0 for c in cis], color=color, marker=_MARKERS[i % len(_MARKERS)],
                    capsize=3, label=line_label(treatment, size))
        seeds = [(r["n"] + dodge, r["relative_accuracy"]) for r in rows
                 if (r["model"], r["kind"], r["treatment"], r["source_size"]) ==
                 (arm["model"], arm["kind"], treatment, size) and r["relative_accuracy"] is not None]
        ax.scatter(*zip(*seeds), color=color, s=10, alpha=0.45, zorder=3)
        drawn += [m + sign * (c or 0.0) for m, c in zip(means, cis) for sign in (-1, 1)] + [v for _, v in seeds]
    return drawn, counts


def _shared_ylim(ax, drawn, low=0.9, high=1.02):
    """One y range for all panels, spanning at least low..high so that small differences look small."""
    low, high = min(min(drawn), low), max(max(drawn), high)
    pad = 0.04 * (high - low)
    ax.set_ylim(low - pad, high + pad)


def _finish(ax, arm, xlabel, ylabel="relative accuracy (top-1 / baseB)"):
    if ylabel.startswith("relative"):
        _baseline(ax)
    else:
        ax.axhline(0.0, color="0.4", linestyle="--", linewidth=1, label="no difference")
    ax.set_xticks(range(1, arm["layers"] + 1, max(1, arm["layers"] // 12)))
    ax.set_xlim(0.5, arm["layers"] + 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.yaxis.set_tick_params(labelleft=True)
    ax.set_title(arm_title(arm), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def relative_accuracy_figure(rows, summary, arms, path):
    """Relative accuracy vs n for every transfer treatment except 'reversed', one panel per arm."""
    treatments = [t for t in TREATMENTS if not TREATMENTS[t].is_base and t != "reversed"]
    shown = [a for a in arms if any((s["model"], s["kind"], s["treatment"]) == (a["model"], a["kind"], t)
                                    for s in summary for t in treatments)]
    if not shown:
        return None
    fig, axes = _new_figure(len(shown))
    drawn, counts = [], []
    for ax, arm in zip(axes, shown):
        d, c = _plot_lines(ax, summary, rows, arm, treatments)
        drawn, counts = drawn + d, counts + c
        _finish(ax, arm, "n: layers 1..n transferred")
    _shared_ylim(axes[0], drawn)
    fig.suptitle(f"Transfer: relative accuracy vs depth n\nmean over seeds, dots: single seeds\n{bars_note(counts)}",
                 fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def reversed_figure(rows, summary, arms, path):
    """'reversed' (layers n..L frozen) next to AnB (layers 1..n frozen), one panel per arm."""
    shown = [a for a in arms if any((s["model"], s["kind"], s["treatment"]) == (a["model"], a["kind"], "reversed")
                                    for s in summary)]
    if not shown:
        return None
    fig, axes = _new_figure(len(shown))
    drawn, counts = [], []
    for ax, arm in zip(axes, shown):
        d, c = _plot_lines(ax, summary, rows, arm, ("reversed", "AnB"))
        drawn, counts = drawn + d, counts + c
        _finish(ax, arm, "n: reversed = layers n..L frozen, AnB = layers 1..n frozen")
    _shared_ylim(axes[0], drawn)
    fig.suptitle(f"Reversed freezing: relative accuracy vs n\nmean over seeds, dots: single seeds\n"
                 f"{bars_note(counts)}", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def retention(summary, arms):
    """[(arm, treatment label, n, mean, CI half-width, seeds)]: relative accuracy at the deepest n of each arm
    and transfer treatment (except 'reversed', whose deepest n freezes the fewest layers)."""
    out = []
    for arm in arms:
        keys = []
        for s in summary:
            key = (s["treatment"], s["source_size"])
            if (s["model"], s["kind"]) == (arm["model"], arm["kind"]) and s["n"] is not None \
                    and s["treatment"] != "reversed" and s["relative_accuracy"] is not None and key not in keys:
                keys.append(key)
        for treatment, size in keys:
            deepest = max((s for s in summary if (s["model"], s["kind"], s["treatment"], s["source_size"]) ==
                           (arm["model"], arm["kind"], treatment, size) and s["relative_accuracy"] is not None),
                          key=lambda s: s["n"])
            out.append((arm, line_label(treatment, size), deepest["n"], deepest["relative_accuracy"],
                        deepest["relative_accuracy_ci"], deepest["relative_accuracy_seeds"]))
    return out


def retention_figure(summary, arms, path):
    """Bars: relative accuracy at the deepest n, grouped by model (arm), one bar per treatment, each labelled
    with its value and n. The y axis starts near the lowest bar (never above 0.9) so that differences show."""
    bars = retention(summary, arms)
    if not bars:
        return None
    arm_names = list(dict.fromkeys(f"{b[0]['model']}\n{b[0]['kind']}" for b in bars))
    labels = list(dict.fromkeys(b[1] for b in bars))
    width = 0.8 / len(labels)
    fig = Figure(figsize=(max(7.0, 1.4 * len(arm_names) * max(1, len(labels) / 2) + 2), 4.2),
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    low = min(0.9, min(b[3] - (b[4] or 0) for b in bars) - 0.03)
    high = max(1.03, max(b[3] + (b[4] or 0) for b in bars) + 0.03)
    labelled, sized = set(), any(" (A: " in label for label in labels)
    for arm, label, n, mean, ci, _ in bars:
        j = labels.index(label)
        color = f"C{j}" if sized else _COLORS.get(label, f"C{j}")
        x = arm_names.index(f"{arm['model']}\n{arm['kind']}") - 0.4 + width * (j + 0.5)
        ax.bar(x, mean - low, width * 0.9, bottom=low, yerr=ci, capsize=3, color=color,
               label=None if label in labelled else label)
        labelled.add(label)
        ax.text(x, mean + (ci or 0), f"{mean:.3f}", ha="center", va="bottom", fontsize=7)
        ax.text(x, low, f"n={n}", ha="center", va="bottom", fontsize=7, color="white")
    _baseline(ax)
    ax.set_xticks(range(len(arm_names)), arm_names, fontsize=8)
    ax.set_ylim(low, high)
    ax.set_ylabel("relative accuracy (top-1 / baseB)")
    ax.set_title("Retention: relative accuracy with the deepest n layers transferred\n(mean over seeds; "
                 f"{bars_note([b[5] for b in bars])})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=110)
    return path


def paired_figure(paired, arms, path):
    """Paired top-1 differences (percentage points) vs n of AnB − BnB and AnB − random_frozen, one panel per
    arm: mean over seeds, 95 % CI bars, single seeds as dots, 0 as a dashed line."""
    shown = [a for a in arms if any((p["model"], p["kind"]) == (a["model"], a["kind"]) and p["y"] != "baseB"
                                    for p in paired)]
    if not shown:
        return None
    fig, axes = _new_figure(len(shown))
    drawn, counts = [0.0], []
    for ax, arm in zip(axes, shown):
        entries = [p for p in paired if (p["model"], p["kind"]) == (arm["model"], arm["kind"]) and p["y"] != "baseB"]
        lines = list(dict.fromkeys((p["x"], p["source_size"], p["y"]) for p in entries))
        for i, (x, size, y) in enumerate(lines):
            points = sorted((p for p in entries if (p["x"], p["source_size"], p["y"]) == (x, size, y)),
                            key=lambda p: p["n"])
            dodge = 0.08 * (i - (len(lines) - 1) / 2)
            ns = [p["n"] + dodge for p in points]
            means = [p["top1_pp_mean"] for p in points]
            cis = [p["top1_pp_ci"] or 0.0 for p in points]
            ax.errorbar(ns, means, yerr=cis, color=f"C{i}", marker=_MARKERS[i % len(_MARKERS)], capsize=3,
                        label=f"{line_label(x, size)} − {y}")
            dots = [(n, v) for n, p in zip(ns, points) for v in p["top1_pp"]]
            ax.scatter(*zip(*dots), color=f"C{i}", s=10, alpha=0.45, zorder=3)
            drawn += [m + sign * c for m, c in zip(means, cis) for sign in (-1, 1)] + [v for _, v in dots]
            counts += [p["k"] for p in points]
        _finish(ax, arm, "n: layers 1..n transferred", ylabel="Δ top-1, percentage points (same seed)")
    _shared_ylim(axes[0], drawn, low=-1.0, high=1.0)
    fig.suptitle(f"Paired top-1 differences (same seed) vs depth n\nmean over seeds, dots: single seeds\n"
                 f"{bars_note(counts)}", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def make_figures(rows, summary, paired, definition, fig_dir):
    """Write the figures that have data into `fig_dir`; returns [(title, path)]."""
    os.makedirs(fig_dir, exist_ok=True)
    arms = definition["arms"]
    made = [
        ("Relative accuracy vs n", relative_accuracy_figure(rows, summary, arms,
                                                            os.path.join(fig_dir, "relative_accuracy.png"))),
        ("Reversed freezing", reversed_figure(rows, summary, arms, os.path.join(fig_dir, "reversed.png"))),
        ("Retention at the deepest n", retention_figure(summary, arms, os.path.join(fig_dir, "retention.png"))),
        ("Paired differences vs n", paired_figure(paired, arms, os.path.join(fig_dir, "paired_differences.png"))),
    ]
    return [(title, path) for title, path in made if path is not None]
