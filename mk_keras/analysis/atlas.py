"""Filter atlas: filters sampled from the first, middle and last layers of several models, one row per layer."""

import numpy as np

from mk_keras.analysis.kernels import layer_filters
from mk_keras.analysis.plotting import FILTER_CMAP, display_scaled, mosaic, new_figure


def atlas_layer_indices(num_layers):
    """Indices of the first, middle ((L-1)//2) and last of `num_layers` layers, without repeats."""
    return sorted({0, (num_layers - 1) // 2, num_layers - 1})


def atlas_rows(models, per_row=16, kind="depthwise", seed=0):
    """`[(row label, filters (per_row or fewer, kh, kw))]` for `models` = `[(label, keras.Model)]`.

    Filters are drawn at random without replacement (NumPy generator seeded with (seed, model, layer)),
    kept in channel order, and not rescaled here.
    """
    if isinstance(per_row, bool) or not isinstance(per_row, (int, np.integer)) or per_row < 1:
        raise ValueError(f"per_row={per_row!r} must be a positive integer")
    rows = []
    for m, (label, model) in enumerate(models):
        layers = layer_filters(model, kind)
        for i in atlas_layer_indices(len(layers)):
            entry, filters = layers[i]
            rng = np.random.default_rng([seed, m, i])
            pick = np.sort(rng.choice(len(filters), min(per_row, len(filters)), replace=False))
            rows.append((f"{label}\n{entry.name} (#{i})", filters[pick]))
    return rows


def plot_atlas(rows, kind, path):
    """Save the rows as a PNG grid; each filter scaled to max |w| = 1 (red positive, blue negative)."""
    columns = max(len(f) for _, f in rows)
    fig = new_figure((max(6.0, 0.45 * columns + 2.5), 0.75 * len(rows) + 1.0))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, filters) in zip(axes, rows):
        image = ax.imshow(mosaic(display_scaled(filters), columns), cmap=FILTER_CMAP, vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{kind} filters of the first, middle and last layers (each scaled to max |w| = 1)")
    fig.colorbar(image, ax=list(axes), shrink=0.6, label="w / max|w|")
    fig.savefig(path, dpi=120, bbox_inches="tight")
