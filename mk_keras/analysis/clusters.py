"""Unsupervised filter types: sign-invariant k-means (or an autoencoder + k-means) on centred, unit-norm filters."""

import csv
import dataclasses

import keras
import matplotlib
import numpy as np
from sklearn.cluster import KMeans

from mk_keras.analysis.kernels import layer_filters, normalize_filters, sample_filters
from mk_keras.master_keys import MASTER_KEY_NAMES, fit_master_keys
from mk_keras.analysis.plotting import FILTER_CMAP, display_scaled, new_figure

CLUSTER_METHODS = ("kmeans", "autoencoder")


@dataclasses.dataclass
class ClusterResult:
    """Filter types. Per filter: `labels` (type, 0 = most common), `signs` (±1 alignment), `distances`
    |s*x̂ - ĉ| to its unit-norm centroid ĉ (0..2; sqrt(2 - 2 cos)). `centroids`: (k, kh, kw), unit norm."""

    centroids: np.ndarray
    labels: np.ndarray
    signs: np.ndarray
    distances: np.ndarray

    def share_within(self, max_distance):
        """Fraction of filters whose distance to their centroid is at most `max_distance`."""
        return float(np.mean(self.distances <= max_distance))


def _check_k(k, n):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k={k!r} must be a positive integer")
    if k > n:
        raise ValueError(f"k={k} exceeds the {n} non-constant filters to cluster")


def _sign_invariant_kmeans(x, k, seed, max_rounds=50):
    """k-means where each unit vector may be flipped: alternate sklearn KMeans and choosing, per filter,
    the sign and centroid with the least squared distance, until no sign changes."""
    signs = np.sign(x[np.arange(len(x)), np.argmax(np.abs(x), axis=1)])
    km = KMeans(k, n_init=10, random_state=seed).fit(x * signs[:, None])
    for _ in range(max_rounds):
        dots = x @ km.cluster_centers_.T
        cost = (km.cluster_centers_**2).sum(axis=1)[None, :] - 2 * np.abs(dots)
        best = np.argmin(cost, axis=1)
        new_signs = np.where(dots[np.arange(len(x)), best] < 0, -1.0, 1.0)
        if np.array_equal(new_signs, signs):
            break
        signs = new_signs
        km = KMeans(k, init=km.cluster_centers_, n_init=1, random_state=seed).fit(x * signs[:, None])
    return km.labels_, signs


def _autoencoder_codes(x, latent_dim, epochs, seed):
    """Latent codes of a small dense autoencoder (d -> 64 -> latent -> 64 -> d, MSE, Adam) trained on `x`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((x.shape[1],))
    code = keras.layers.Dense(latent_dim, name="code")(keras.layers.Dense(64, activation="relu")(inputs))
    outputs = keras.layers.Dense(x.shape[1])(keras.layers.Dense(64, activation="relu")(code))
    autoencoder = keras.Model(inputs, outputs)
    autoencoder.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    autoencoder.fit(x, x, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    return keras.Model(inputs, code).predict(x, batch_size=1024, verbose=0)


def cluster_filters(filters, k, method="kmeans", seed=0, latent_dim=8, epochs=50):
    """Cluster (N, kh, kw) filters into `k` types, ignoring scale, offset and sign.

    Filters are centred and scaled to unit norm (constant ones are rejected: pass them filtered), then
    clustered by sign-invariant k-means (scikit-learn KMeans, n_init=10, with sign re-alignment rounds).
    `method="autoencoder"` keeps those signs, encodes the aligned filters with a small dense autoencoder
    (`latent_dim`, `epochs`) and runs k-means on the codes, as in the ICLR-24 precursor.
    Centroids are the normalised mean of each type's aligned members; types are numbered by size.
    """
    if method not in CLUSTER_METHODS:
        raise ValueError(f"method={method!r}; allowed: {', '.join(CLUSTER_METHODS)}")
    x, keep = normalize_filters(filters)
    if not keep.all():
        raise ValueError(f"{int((~keep).sum())} of {len(keep)} filters are constant; leave them out before clustering")
    _check_k(k, len(x))
    labels, signs = _sign_invariant_kmeans(x, k, seed)
    aligned = x * signs[:, None]
    if method == "autoencoder":
        codes = _autoencoder_codes(aligned, latent_dim, epochs, seed)
        labels = KMeans(k, n_init=10, random_state=seed).fit(codes).labels_
    counts = np.bincount(labels, minlength=k)
    if not counts.all():
        raise ValueError(f"k={k} is more than the {int((counts > 0).sum())} distinct filter types found")
    order = np.argsort(-counts, kind="stable")
    labels = np.argsort(order)[labels]
    centroids = np.stack([aligned[labels == j].mean(axis=0) for j in range(k)])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    distances = np.linalg.norm(aligned - centroids[labels], axis=1)
    return ClusterResult(centroids.reshape((k,) + np.shape(filters)[1:]), labels, signs, distances)


@dataclasses.dataclass
class FilterPool:
    """Filters of several models pooled for clustering; per filter its model label, layer index and name."""

    filters: np.ndarray
    model: np.ndarray
    layer_index: np.ndarray
    layer_name: np.ndarray


def pool_filters(models, kind="depthwise", max_filters=None, seed=0):
    """Pool the non-constant filters of every layer of `models` = `[(label, keras.Model)]` (at most
    `max_filters` per layer, sampled with `seed`); all filters must share one kernel size."""
    parts, shapes = [], set()
    for m, (label, model) in enumerate(models):
        for entry, filters in layer_filters(model, kind):
            filters = sample_filters(filters, max_filters, seed, m, entry.index)
            filters = filters[normalize_filters(filters)[1]]
            if len(filters):
                shapes.add(filters.shape[1:])
                parts.append((filters, label, entry.index, entry.name))
    if not parts:
        raise ValueError(f"the models have only constant {kind} filters; nothing to cluster")
    if len(shapes) > 1:
        raise ValueError(f"cannot pool filters of different sizes {sorted(shapes)}; cluster them separately")
    return FilterPool(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([[p[1]] * len(p[0]) for p in parts]),
        np.concatenate([[p[2]] * len(p[0]) for p in parts]).astype(int),
        np.concatenate([[p[3]] * len(p[0]) for p in parts]),
    )


def layer_proportions(pool, labels, k):
    """`[(model, layer index, layer name, count, proportions (k,))]` in pool order."""
    out = []
    keys = dict.fromkeys(zip(pool.model, pool.layer_index, pool.layer_name))
    for model, index, name in keys:
        mask = (pool.model == model) & (pool.layer_index == index)
        out.append((model, int(index), name, int(mask.sum()), np.bincount(labels[mask], minlength=k) / mask.sum()))
    return out


def write_proportions_csv(proportions, k, path):
    """Columns: model, layer_index, layer_name, filters, type_0 .. type_{k-1} (fractions of the layer)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "layer_index", "layer_name", "filters", *(f"type_{j}" for j in range(k))])
        for model, index, name, count, share in proportions:
            writer.writerow([model, index, name, count, *(f"{s:.6f}" for s in share)])


def centroid_summary(result, max_distance):
    """JSON-ready summary: sizes, share within `max_distance`, and each centroid's best master key."""
    kh, kw = result.centroids.shape[1:]
    fit = fit_master_keys(result.centroids) if kh == kw and kh % 2 and kh >= 3 else None
    types = []
    for j in range(len(result.centroids)):
        member = result.labels == j
        types.append({
            "type": j,
            "filters": int(member.sum()),
            "share_within": float(np.mean(result.distances[member] <= max_distance)),
            "nearest_master_key": MASTER_KEY_NAMES[fit.index[j]] if fit else None,
            "master_key_abs_cosine": float(fit.cosine[j]) if fit else None,
        })
    return {
        "filters": int(len(result.labels)),
        "k": int(len(result.centroids)),
        "max_distance": float(max_distance),
        "share_within": result.share_within(max_distance),
        "types": types,
    }


def plot_centroids(result, max_distance, path):
    """The k centroids as a row of tiles, titled with their size and share within `max_distance`."""
    k = len(result.centroids)
    columns = min(k, 8)
    rows = -(-k // columns)
    fig = new_figure((1.4 * columns + 1.0, 1.6 * rows + 0.8))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for j, ax in enumerate(axes):
        ax.set_axis_off()
        if j < k:
            member = result.labels == j
            image = ax.imshow(display_scaled(result.centroids[j : j + 1])[0], cmap=FILTER_CMAP, vmin=-1, vmax=1)
            within = np.mean(result.distances[member] <= max_distance)
            ax.set_title(f"type {j}\nn={member.sum()}, {100 * within:.0f}% ≤ {max_distance:g}", fontsize=8)
    fig.suptitle(
        f"Filter type centroids ({len(result.labels)} filters; {100 * result.share_within(max_distance):.1f}% "
        f"within distance {max_distance:g})"
    )
    fig.colorbar(image, ax=list(axes), shrink=0.6, label="w / max|w|")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_proportions(proportions, k, path):
    """Stacked bars of type proportions per layer, one panel per model."""
    models = list(dict.fromkeys(p[0] for p in proportions))
    fig = new_figure((max(6.0, 0.35 * max(sum(p[0] == m for p in proportions) for m in models) + 3), 3 * len(models)))
    axes = fig.subplots(len(models), 1, squeeze=False)[:, 0]
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "turbo"]
    colors = [cmap(j if k <= 10 else j / (k - 1)) for j in range(k)]
    for ax, model in zip(axes, models):
        rows = [p for p in proportions if p[0] == model]
        index = [p[1] for p in rows]
        bottom = np.zeros(len(rows))
        for j in range(k):
            share = np.array([p[4][j] for p in rows])
            ax.bar(index, share, bottom=bottom, color=colors[j], label=f"type {j}")
            bottom += share
        ax.set_title(f"{model}: filter types per layer")
        ax.set_xlabel("layer index")
        ax.set_ylabel("share of the layer's filters")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, ncol=min(k, 4), loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.savefig(path, dpi=120, bbox_inches="tight")
