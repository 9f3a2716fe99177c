"""Filter atlas (the paper's Fig. 1): random filters of the first, middle and last layers of models side by side.

Each filter is its own square tile, separated from its neighbours by a gap; each layer's filters fill several
rows of tiles (one block per model and layer). Every filter is shown scaled by its own largest |value|, so
w / max|w| lies in [-1, 1] on a diverging colormap (blue negative, white 0, red positive) and its shape, not
its magnitude, is compared; the CSV keeps each filter's max|w|.
"""

import csv
import dataclasses

import matplotlib
import numpy as np

from mk_keras.analysis.kernels import layer_filters
from mk_keras.analysis.plotting import FILTER_CMAP, display_scaled, mosaic, new_figure

GAP = 1  # kernel pixels between tiles
GAP_COLOR = "0.45"  # mid grey: not on the RdBu_r scale, so a gap never reads as a weight
CSV_FIELDS = ("model", "layer_index", "layer", "num_layers", "kernel", "channel", "tile_row", "tile_col", "max_abs")


@dataclasses.dataclass(frozen=True)
class AtlasBlock:
    """The filters drawn from one layer of one model.

    model_index: the model's position (its column); channels: indices of the drawn filters in `layer_filters`
    order (the output channel of a depthwise layer, c_in * C_out + c_out for kind="conv"), ascending;
    filters: their raw values (n, kh, kw); per_row: tiles per row.
    """

    model: str
    model_index: int
    layer_index: int
    layer: str
    num_layers: int
    channels: np.ndarray
    filters: np.ndarray
    per_row: int

    @property
    def kernel(self):
        """Kernel size as text, e.g. '7x7'."""
        return "x".join(map(str, self.filters.shape[1:]))

    @property
    def label(self):
        """Block title: model, layer name, its index among the model's filter layers, kernel size."""
        return f"{self.model}\n{self.layer} (#{self.layer_index} of #0-#{self.num_layers - 1}), {self.kernel}"

    def tile(self, j):
        """(row, column) of the j-th drawn filter: row-major, `per_row` tiles per row."""
        return divmod(j, self.per_row)

    def image(self):
        """2-D array of the tiles: each filter / its max|w| at its `tile`, NaN in the gaps and unused tiles."""
        return mosaic(display_scaled(self.filters), min(self.per_row, len(self.filters)), GAP)


def atlas_layer_indices(num_layers):
    """Indices of the first, middle ((L-1)//2) and last of `num_layers` layers, without repeats."""
    return sorted({0, (num_layers - 1) // 2, num_layers - 1})


def atlas_rows(models, per_layer=32, per_row=8, kind="depthwise", seed=0):
    """`[AtlasBlock]` for `models` = `[(label, keras.Model)]`: first, middle, last layer of each model, in order.

    per_layer filters (all if fewer) are drawn at random without replacement from each layer, by a NumPy
    generator seeded with (seed, model position, layer index), and kept in channel order.
    """
    for name, value in (("per_layer", per_layer), ("per_row", per_row)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    blocks = []
    for m, (label, model) in enumerate(models):
        layers = layer_filters(model, kind)
        for i in atlas_layer_indices(len(layers)):
            entry, filters = layers[i]
            rng = np.random.default_rng([seed, m, i])
            channels = np.sort(rng.choice(len(filters), min(per_layer, len(filters)), replace=False))
            blocks.append(AtlasBlock(label, m, i, entry.name, len(layers), channels, filters[channels], per_row))
    return blocks


def plot_atlas(blocks, path, title=None, notes=()):
    """Save the blocks as a PNG (models as columns, their layers top to bottom); returns `[block.image()]`.

    A kernel pixel has about the same size everywhere, so 3x3 and 7x7 filters keep their relative size.
    notes: lines printed under the figure (e.g. where each model came from).
    """
    if not blocks:
        raise ValueError("plot_atlas needs at least one block (see atlas_rows)")
    models = list(dict.fromkeys(b.model_index for b in blocks))
    columns = [[b for b in blocks if b.model_index == m] for m in models]
    images = {id(b): b.image() for b in blocks}
    n_rows = max(len(c) for c in columns)
    widths = [max(images[id(b)].shape[1] for b in c) for c in columns]
    heights = [max(images[id(c[r])].shape[0] for c in columns if r < len(c)) for r in range(n_rows)]
    pixel = 0.07  # inches per kernel pixel
    fig = new_figure((max(4.0, pixel * sum(widths) + 1.6 * len(models)),
                      pixel * sum(heights) + 0.7 * n_rows + 0.8 + 0.15 * len(notes)))
    grid = fig.add_gridspec(n_rows, len(models), width_ratios=widths, height_ratios=heights)
    cmap = matplotlib.colormaps[FILTER_CMAP].with_extremes(bad=GAP_COLOR)
    for c, column in enumerate(columns):
        for r, block in enumerate(column):
            ax = fig.add_subplot(grid[r, c])
            shown = ax.imshow(images[id(block)], cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(block.label, fontsize=7)
    fig.set_layout_engine("constrained")
    fig.colorbar(shown, ax=fig.axes, shrink=0.5, label="w / max|w| (per filter)")
    fig.suptitle(title or "first, middle and last layers: random filters, each scaled to max |w| = 1", fontsize=9)
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=6)
    fig.savefig(path, dpi=150)
    return [images[id(b)] for b in blocks]


def write_atlas_csv(blocks, path):
    """One CSV row per drawn filter: `CSV_FIELDS` (tile_row/tile_col: its tile in the block, max_abs: max|w|)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for b in blocks:
            for j, (channel, filt) in enumerate(zip(b.channels, b.filters)):
                row, col = b.tile(j)
                writer.writerow([b.model, b.layer_index, b.layer, b.num_layers, b.kernel, int(channel), row, col,
                                 f"{np.abs(filt).max():.6g}"])

