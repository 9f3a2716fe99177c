"""Sweep figures (PNG): relative accuracy vs n (Yosinski Fig. 3 style), reversed freezing (Fig. 4 style) and
retention across models (Fig. 5 style). Each plots the mean over seeds with +- std bars, single seeds as
dots, and baseB (1.0) as a dashed line."""

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


def _baseline(ax):
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1, label="baseB (1.0)")


def _plot_lines(ax, summary, rows, arm, treatments):
    """One line per (treatment, source size) of `arm`: mean +- std vs n, seeds as dots; returns the
    y values drawn."""
    keys, drawn = [], [1.0]
    for s in summary:
        key = (s["treatment"], s["source_size"])
        if (s["model"], s["kind"]) == (arm["model"], arm["kind"]) and s["treatment"] in treatments and key not in keys:
            keys.append(key)
    for i, (treatment, size) in enumerate(keys):
        points = sorted((s["n"], s["relative_accuracy"], s["relative_accuracy_std"]) for s in summary
                        if (s["model"], s["kind"], s["treatment"], s["source_size"]) ==
                        (arm["model"], arm["kind"], treatment, size) and s["relative_accuracy"] is not None)
        if not points:
            continue
        color = _COLORS.get(treatment) if len({k[1] for k in keys}) == 1 else f"C{i}"
        ns, means, stds = zip(*points)
        dodge = 0.08 * (i - (len(keys) - 1) / 2)  # side by side, so that error bars do not hide each other
        ns = [n + dodge for n in ns]
        ax.errorbar(ns, means, yerr=[s or 0.0 for s in stds], color=color, marker=_MARKERS[i % len(_MARKERS)],
                    capsize=3, label=line_label(treatment, size))
        seeds = [(r["n"] + dodge, r["relative_accuracy"]) for r in rows
                 if (r["model"], r["kind"], r["treatment"], r["source_size"]) ==
                 (arm["model"], arm["kind"], treatment, size) and r["relative_accuracy"] is not None]
        ax.scatter(*zip(*seeds), color=color, s=10, alpha=0.45, zorder=3)
        drawn += [m + sign * (sd or 0.0) for m, sd in zip(means, stds) for sign in (-1, 1)] + [v for _, v in seeds]
    return drawn


def _shared_ylim(ax, drawn):
    """One y range for all panels, spanning at least 0.9..1.02 so that small differences look small."""
    low, high = min(min(drawn), 0.9), max(max(drawn), 1.02)
    pad = 0.04 * (high - low)
    ax.set_ylim(low - pad, high + pad)


def _finish(ax, arm, xlabel):
    _baseline(ax)
    ax.set_xticks(range(1, arm["layers"] + 1, max(1, arm["layers"] // 12)))
    ax.set_xlim(0.5, arm["layers"] + 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("relative accuracy (top-1 / baseB)")
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
    drawn = []
    for ax, arm in zip(axes, shown):
        drawn += _plot_lines(ax, summary, rows, arm, treatments)
        _finish(ax, arm, "n: layers 1..n transferred")
    _shared_ylim(axes[0], drawn)
    fig.suptitle("Transfer: relative accuracy vs depth n (mean +- std over seeds)")
    fig.savefig(path, dpi=110)
    return path


def reversed_figure(rows, summary, arms, path):
    """'reversed' (layers n..L frozen) next to AnB (layers 1..n frozen), one panel per arm."""
    shown = [a for a in arms if any((s["model"], s["kind"], s["treatment"]) == (a["model"], a["kind"], "reversed")
                                    for s in summary)]
    if not shown:
        return None
    fig, axes = _new_figure(len(shown))
    drawn = []
    for ax, arm in zip(axes, shown):
        drawn += _plot_lines(ax, summary, rows, arm, ("reversed", "AnB"))
        _finish(ax, arm, "n: reversed = layers n..L frozen, AnB = layers 1..n frozen")
    _shared_ylim(axes[0], drawn)
    fig.suptitle("Reversed freezing: relative accuracy vs n (mean +- std over seeds)")
    fig.savefig(path, dpi=110)
    return path


def retention(summary, arms):
    """[(arm, treatment label, n, mean, std)]: relative accuracy at the deepest n of each arm and transfer
    treatment (except 'reversed', whose deepest n freezes the fewest layers)."""
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
                        deepest["relative_accuracy_std"]))
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
    for arm, label, n, mean, std in bars:
        j = labels.index(label)
        color = f"C{j}" if sized else _COLORS.get(label, f"C{j}")
        x = arm_names.index(f"{arm['model']}\n{arm['kind']}") - 0.4 + width * (j + 0.5)
        ax.bar(x, mean - low, width * 0.9, bottom=low, yerr=std, capsize=3, color=color,
               label=None if label in labelled else label)
        labelled.add(label)
        ax.text(x, mean + (std or 0), f"{mean:.3f}", ha="center", va="bottom", fontsize=7)
        ax.text(x, low, f"n={n}", ha="center", va="bottom", fontsize=7, color="white")
    _baseline(ax)
    ax.set_xticks(range(len(arm_names)), arm_names, fontsize=8)
    ax.set_ylim(low, high)
    ax.set_ylabel("relative accuracy (top-1 / baseB)")
    ax.set_title("Retention: relative accuracy with the deepest n layers transferred", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=110)
    return path


def make_figures(rows, summary, definition, fig_dir):
    """Write the figures that have data into `fig_dir`; returns [(title, path)]."""
    os.makedirs(fig_dir, exist_ok=True)
    arms = definition["arms"]
    made = [
        ("Relative accuracy vs n", relative_accuracy_figure(rows, summary, arms,
                                                            os.path.join(fig_dir, "relative_accuracy.png"))),
        ("Reversed freezing", reversed_figure(rows, summary, arms, os.path.join(fig_dir, "reversed.png"))),
        ("Retention at the deepest n", retention_figure(summary, arms, os.path.join(fig_dir, "retention.png"))),
    ]
    return [(title, path) for title, path in made if path is not None]
