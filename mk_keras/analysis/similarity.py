"""Per-layer similarity of two models' filters, against a random-initialisation baseline."""

import csv
import dataclasses

import numpy as np

from mk_keras.analysis.kernels import layer_filters, normalize_filters, random_layer_filters, sample_filters
from mk_keras.analysis.plotting import new_figure


def filter_similarity(a, b):
    """Mean over the filters of `a` of the best |cosine| to any filter of `b`, both centred: in [0, 1].

    `a`, `b`: (N, kh, kw) and (M, kh, kw). Constant filters are left out; NaN when either side has none.
    """
    xa, _ = normalize_filters(a)
    xb, _ = normalize_filters(b)
    if not len(xa) or not len(xb):
        return float("nan")
    return float(np.clip(np.abs(xa @ xb.T).max(axis=1), 0.0, 1.0).mean())


@dataclasses.dataclass
class LayerSimilarity:
    """One row of `compare_models`: layer `index` of both models, filters compared, score and baseline."""

    index: int
    layer_a: str
    layer_b: str
    filters_a: int
    filters_b: int
    similarity: float
    baseline: float


def compare_models(model_a, model_b, kind="depthwise", max_filters=1024, seed=0):
    """Per-layer `filter_similarity` of `model_a` to `model_b`, layers paired by index in forward order.

    The baseline is the same measure from `model_a` to a random initialisation of `model_b`'s filters
    (`random_layer_filters(model_b, kind, seed)`: each layer's own initializer). At most `max_filters` filters
    per layer and model are used, sampled with `seed` (the same subset each time a model is sampled), so a
    model compared with itself scores 1. Paired layers must have the same kernel size.
    """
    filters_a = layer_filters(model_a, kind)
    filters_b = layer_filters(model_b, kind)
    filters_r = random_layer_filters(model_b, kind, seed)
    rows = []
    for i, ((la, fa), (lb, fb), (_, fr)) in enumerate(zip(filters_a, filters_b, filters_r)):
        if fa.shape[1:] != fb.shape[1:]:
            raise ValueError(
                f"layer {i}: {la.name!r} has {fa.shape[1]}x{fa.shape[2]} filters, {lb.name!r} "
                f"{fb.shape[1]}x{fb.shape[2]}; compare models with the same kernel sizes"
            )
        fa = sample_filters(fa, max_filters, seed, i)
        fb = sample_filters(fb, max_filters, seed, i)
        fr = sample_filters(fr, max_filters, seed, i)
        rows.append(
            LayerSimilarity(i, la.name, lb.name, len(fa), len(fb), filter_similarity(fa, fb), filter_similarity(fa, fr))
        )
    return rows


def write_similarity_csv(rows, path):
    """One line per layer, columns as `LayerSimilarity`."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in dataclasses.fields(LayerSimilarity)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in rows)


def plot_similarity(rows, label_a, label_b, kind, path):
    """Similarity and random baseline against layer index, saved as a PNG."""
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    index = [r.index for r in rows]
    ax.plot(index, [r.similarity for r in rows], "o-", label=f"{label_a} vs {label_b}")
    ax.plot(index, [r.baseline for r in rows], "s--", color="gray", label=f"{label_a} vs random init")
    ax.set_xlabel(f"{kind} layer index")
    ax.set_ylabel("mean best |cosine| (centred filters)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{kind} filter similarity per layer")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120, bbox_inches="tight")
