"""The 8 published master-key filters, the a*x̂+b fit, and frozen master-key depthwise layers.

A top-level module (not part of `mk_keras.analysis`) so that training can use it without the analysis
dependencies (scikit-learn, matplotlib); `mk_keras.analysis` re-exports it.

The keys F1..F8 of arXiv 2509.11711, on a k x k grid (k odd; published for k = 7), y = rows (the first kernel
axis, growing downwards), x = columns, both indexed -r..r with r = (k-1)/2. Base kernel: the separable discrete
Gaussian T = T1D(y; sy) (outer) T1D(x; sx), T1D(n; s) = e^(-s²) I_n(s²) (I_n the modified Bessel function of
integer order) normalised to sum 1 over the k taps. Differences along one axis of T:
  d+ forward  out[i] = T[i+1] - T[i], 0 at the last index;  d- backward  out[i] = T[i] - T[i-1], 0 at the first;
  d  central  (T[i+1] - T[i-1]) / 2 inside, forward at the first index and backward at the last.
  F1 = dy+ T, F2 = dx- T, F3 = dy- T, F4 = dx+ T, F5 = dx T, F6 = dy T,
  F7 = T - 0.5 * L5(T) (L5 the five-point Laplacian on the interior, 0 on the border), F8 = T.
Each key is scaled to unit Frobenius norm (not centred: the fit centres them). (sx, sy) per key and fitting
method in `MASTER_KEY_PARAMS` ("B", the default, and "A"). Other odd k use the same formulas on the k x k grid.
"""

import dataclasses

import keras
import numpy as np
from scipy.special import ive

from mk_keras.filters import canonical_kernel, filter_layers, iter_layers, select_indices
from mk_keras.models.layers import MasterKeyDepthwiseConv2D

MASTER_KEY_NAMES = ("F1_dy+T", "F2_dx-T", "F3_dy-T", "F4_dx+T", "F5_dxT", "F6_dyT", "F7_T-0.5lapT", "F8_T")
# (sigma_x, sigma_y) of F1..F8 for the two published fitting methods.
MASTER_KEY_PARAMS = {
    "B": ((0.644, 0.583), (0.586, 0.644), (0.690, 0.674), (0.756, 0.460), (1.107, 0.945), (0.900, 0.889),
          (0.675, 0.675), (0.609, 0.601)),
    "A": ((0.580, 0.558), (0.559, 0.580), (0.617, 0.601), (0.642, 0.424), (1.075, 0.800), (0.771, 1.003),
          (0.675, 0.675), (0.552, 0.545)),
}
SHIFTS = ("kernel", "bias")
# A centred filter with a norm below this is treated as constant (it has no shape to compare).
MIN_NORM = 1e-8


def _gaussian_1d(k, sigma):
    """T1D(n; sigma) = e^(-sigma²) I_n(sigma²) for n = -r..r, normalised to sum 1."""
    r = (k - 1) // 2
    t = ive(np.arange(-r, r + 1), sigma**2)
    return t / t.sum()


def _difference(t, axis, how):
    """Forward ("+"), backward ("-") or central ("c") difference of `t` along `axis` (see the module docstring)."""
    t = np.moveaxis(t, axis, 0)
    out = np.zeros_like(t)
    if how == "+":
        out[:-1] = t[1:] - t[:-1]
    elif how == "-":
        out[1:] = t[1:] - t[:-1]
    else:
        out[1:-1] = (t[2:] - t[:-2]) / 2
        out[0], out[-1] = t[1] - t[0], t[-1] - t[-2]
    return np.moveaxis(out, 0, axis)


def _laplacian5(t):
    out = np.zeros_like(t)
    out[1:-1, 1:-1] = t[2:, 1:-1] + t[:-2, 1:-1] + t[1:-1, 2:] + t[1:-1, :-2] - 4 * t[1:-1, 1:-1]
    return out


def master_keys(kernel_size=7, method="B"):
    """The 8 master keys F1..F8 as a float32 array (8, k, k), each of unit Frobenius norm (not centred).

    `method`: "B" (default) or "A", the published (sigma_x, sigma_y) sets of `MASTER_KEY_PARAMS`. Axis 0 of
    each key is y (rows), axis 1 is x (columns).
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) or kernel_size < 3 or (
        kernel_size % 2 == 0
    ):
        raise ValueError(f"kernel_size={kernel_size!r} must be an odd integer >= 3")
    if method not in MASTER_KEY_PARAMS:
        raise ValueError(f"method={method!r}; allowed: {', '.join(MASTER_KEY_PARAMS)}")
    keys = []
    for i, (sx, sy) in enumerate(MASTER_KEY_PARAMS[method]):
        t = np.outer(_gaussian_1d(kernel_size, sy), _gaussian_1d(kernel_size, sx))
        key = [
            lambda: _difference(t, 0, "+"), lambda: _difference(t, 1, "-"), lambda: _difference(t, 0, "-"),
            lambda: _difference(t, 1, "+"), lambda: _difference(t, 1, "c"), lambda: _difference(t, 0, "c"),
            lambda: t - 0.5 * _laplacian5(t), lambda: t,
        ][i]()
        keys.append(key / np.linalg.norm(key))
    return np.stack(keys).astype(np.float32)


def normalize_filters(filters):
    """Centre each filter (subtract its mean) and scale it to unit L2 norm: x̂ = (y - mean y) / |y - mean y|.

    `filters`: (N, kh, kw). Returns `(x̂ as (M, kh*kw), keep)`, `keep` the boolean mask of the M filters
    that are not constant (centred norm >= MIN_NORM).
    """
    flat = np.asarray(filters, dtype=np.float64).reshape(len(filters), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    keep = norms >= MIN_NORM
    return centred[keep] / norms[keep, None], keep


@dataclasses.dataclass
class MasterKeyFit:
    """Per filter: best key `index`, scale `a` = <x̂, y>, shift `b` = mean(y), `cosine` = |a| / |y - b|."""

    index: np.ndarray
    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray

    def reconstruct(self, keys):
        """a * x̂[index] + b as (N, kh, kw); `keys` the array the fit used."""
        unit, _ = normalize_filters(keys)
        unit = unit.reshape(np.shape(keys))
        return self.a[:, None, None] * unit[self.index] + self.b[:, None, None]


def fit_master_keys(filters, keys=None):
    """Fit every filter y (N, k, k) as a*x̂+b: a=<x̂, y>, b=mean(y), x̂ the key maximising |a|.

    `keys` defaults to `master_keys(k)` (method B); the fit centres them. A constant filter gets index 0, a = 0,
    cosine 0.
    """
    filters = np.asarray(filters, dtype=np.float64)
    if filters.ndim != 3 or filters.shape[1] != filters.shape[2]:
        raise ValueError(f"filters must have shape (N, k, k), got {filters.shape}")
    keys = master_keys(filters.shape[1]) if keys is None else np.asarray(keys)
    unit, keep = normalize_filters(keys)
    if not keep.all() or keys.shape[1:] != filters.shape[1:]:
        raise ValueError(f"keys must be non-constant filters of shape (K, {filters.shape[1]}, {filters.shape[2]})")
    flat = filters.reshape(len(filters), -1)
    b = flat.mean(axis=1)
    dots = flat @ unit.T
    index = np.argmax(np.abs(dots), axis=1)
    a = dots[np.arange(len(flat)), index]
    norms = np.linalg.norm(flat - b[:, None], axis=1)
    cosine = np.divide(np.abs(a), norms, out=np.zeros_like(a), where=norms > 0)
    return MasterKeyFit(index, a, b, cosine)


@dataclasses.dataclass
class MasterKeyEntry:
    """One depthwise layer given master keys: the key index per channel and, with a reference, the fit."""

    index: int
    layer: str
    reference_layer: str | None
    key_index: list
    mean_cosine: float | None = None

    @property
    def key_counts(self):
        """How many channels got each of the 8 keys."""
        return np.bincount(self.key_index, minlength=len(MASTER_KEY_NAMES)).tolist()


@dataclasses.dataclass
class MasterKeyReport:
    """What `assign_master_keys` did, layer by layer."""

    n: int
    order: str
    shift: str
    reference: str | None
    entries: list
    method: str = "B"

    @property
    def frozen_layers(self):
        """Names of the layers whose kernels are now frozen master keys (every selected layer)."""
        return [e.layer for e in self.entries]

    def to_dict(self):
        return {**dataclasses.asdict(self), "key_names": list(MASTER_KEY_NAMES)}

    def __str__(self):
        head = (f"master keys (method {self.method}) n={self.n} order={self.order} shift={self.shift} "
                f"reference={self.reference or '-'}")
        rows = [
            f"  [{e.index:3d}] {e.layer:<32} keys {e.key_counts}"
            + (f" fit |cos| {e.mean_cosine:.3f} from {e.reference_layer}" if e.reference_layer else "")
            for e in self.entries
        ]
        return "\n".join([head, *rows])


def assign_master_keys(model, n, reference=None, order="first", shift="kernel", method="B"):
    """Give the first (or last) `n` depthwise layers of `model` frozen master keys with a learnable shift.

    Channel c of each selected layer gets the kernel s*F (s = ±1, F a key of `master_keys(k, method)`: the
    published key at unit norm), frozen:
      - with a `reference` model (e.g. trained), fitted to the reference's filter y of the same depthwise
        layer index (same kernel shape required): F = the key whose centred form x̂ maximises |a|, a = <x̂, y>,
        s = sign(a);
      - without, round-robin over channels (channel c gets key c mod 8), s = +1.
    The learnable shift:
      - shift="kernel": returns a copy of `model` in which each selected `DepthwiseConv2D` is a
        `MasterKeyDepthwiseConv2D` applying kernel + shift[c] (a value added to every tap, the b of a*x̂+b).
        Without a reference it starts at 0 (the layer applies the published key); with one at
        b*|F_c|/|a| - s*mean(F) (|F_c| the norm of the centred key), so the layer applies (a*x̂ + b)*|F_c|/|a|:
        the fit, i.e. y for an exact fit, up to a positive scale (the conv is linear; the scale folds into later
        layers). Everything else, trainable flags included, is copied. Compile the returned model.
      - shift="bias": in place (returns `model` itself): the kernel variable is set to the keys and made
        non-trainable (`kernel.trainable = False`; not kept by `.keras` save/load), the layer's bias stays
        trainable as a per-channel output shift (a layer without bias gets none). Any depthwise layer type.
    Call inside the strategy scope, before compiling. Returns `(model, MasterKeyReport)`.
    """
    if shift not in SHIFTS:
        raise ValueError(f"shift={shift!r}; allowed: {', '.join(SHIFTS)}")
    if method not in MASTER_KEY_PARAMS:
        raise ValueError(f"method={method!r}; allowed: {', '.join(MASTER_KEY_PARAMS)}")
    layers = filter_layers(model, "depthwise")
    if not layers:
        raise ValueError(f"model {model.name!r} has no depthwise layers for master keys")
    selected = [layers[i] for i in select_indices(len(layers), n, order)]
    for entry in selected:
        if shift == "kernel" and type(entry.layer) is not keras.layers.DepthwiseConv2D:
            raise ValueError(
                f"layer {entry.name!r} is a {type(entry.layer).__name__}; shift='kernel' replaces plain "
                "DepthwiseConv2D layers only (use shift='bias')"
            )
    ref_layers = None
    if reference is not None:
        ref_all = filter_layers(reference, "depthwise")
        if n > len(ref_all):
            raise ValueError(f"n={n} exceeds the {len(ref_all)} depthwise layers of reference {reference.name!r}")
        ref_layers = [ref_all[i] for i in select_indices(len(ref_all), n, order)]
    plans = {}
    entries = []
    for pos, entry in enumerate(selected):
        target = entry.canonical_shape
        kh, kw, channels, mult = target
        if kh != kw:
            raise ValueError(f"layer {entry.name!r} has a non-square kernel {kh}x{kw}; master keys need k x k")
        keys = master_keys(kh, method).astype(np.float64)
        flat = keys.reshape(len(keys), -1)
        key_means = flat.mean(axis=1)
        centred_norms = np.linalg.norm(flat - key_means[:, None], axis=1)
        if ref_layers is None:
            key_index = np.arange(channels * mult) % len(keys)
            signs, shifts, ref_name, mean_cos = np.ones(channels * mult), np.zeros(channels * mult), None, None
        else:
            ref = ref_layers[pos]
            value = canonical_kernel(keras.ops.convert_to_numpy(ref.kernel), ref)
            if value.shape != target:
                raise ValueError(
                    f"reference layer {ref.name!r} {value.shape} does not match target layer {entry.name!r} {target}"
                )
            fit = fit_master_keys(value.reshape(kh, kw, -1).transpose(2, 0, 1), keys)
            key_index, signs = fit.index, np.where(fit.a < 0, -1.0, 1.0)
            scale = np.divide(centred_norms[key_index], np.abs(fit.a), out=np.zeros_like(fit.a), where=fit.a != 0)
            shifts = np.where(fit.a != 0, fit.b * scale - signs * key_means[key_index], 0.0)
            ref_name, mean_cos = ref.name, float(fit.cosine.mean())
        kernel = (signs[:, None, None] * keys[key_index]).transpose(1, 2, 0).reshape(entry.kernel_shape)
        plans[id(entry.layer)] = (kernel, shifts)
        entries.append(MasterKeyEntry(entry.index, entry.name, ref_name, key_index.tolist(), mean_cos))
    report = MasterKeyReport(n, order, shift, reference.name if reference is not None else None, entries, method)
    if shift == "bias":
        for entry in selected:
            entry.kernel.assign(plans[id(entry.layer)][0].astype(keras.backend.standardize_dtype(entry.kernel.dtype)))
            entry.kernel.trainable = False
        return model, report

    def clone(layer):
        if id(layer) in plans:
            return MasterKeyDepthwiseConv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old_layer, new_layer in zip(iter_layers(model), iter_layers(new), strict=True):
        weights = old_layer.get_weights()
        if id(old_layer) in plans:
            kernel, shifts = plans[id(old_layer)]
            weights = [kernel.astype(weights[0].dtype), *weights[1:], shifts.astype(weights[0].dtype)]
        new_layer.set_weights(weights)
    return new, report
