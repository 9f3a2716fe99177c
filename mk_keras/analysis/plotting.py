"""Matplotlib helpers on the Agg canvas (no pyplot state, no display needed)."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FILTER_CMAP = "RdBu_r"


def new_figure(size):
    """A Figure attached to an Agg canvas, so `fig.savefig` works without pyplot."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def display_scaled(filters):
    """Each filter divided by its largest |value| (so in [-1, 1], 0 stays 0); all-zero filters stay 0."""
    filters = np.asarray(filters, dtype=np.float64)
    peak = np.abs(filters).reshape(len(filters), -1).max(axis=1)
    return filters / np.where(peak > 0, peak, 1.0)[:, None, None]


def mosaic(filters, columns, gap=1):
    """Tile (N, kh, kw) filters into one 2-D image, `columns` per row (row-major), `gap` NaN pixels between tiles.

    Unused tiles of the last row are NaN too.
    """
    n, kh, kw = filters.shape
    rows = -(-n // columns)
    out = np.full((rows * (kh + gap) - gap, columns * (kw + gap) - gap), np.nan)
    for i, f in enumerate(filters):
        r, c = divmod(i, columns)
        out[r * (kh + gap) : r * (kh + gap) + kh, c * (kw + gap) : c * (kw + gap) + kw] = f
    return out
