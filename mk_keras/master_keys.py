"""The 8 analytic master-key filters, the a*x̂+b fit, and frozen master-key depthwise layers.

A top-level module (not part of `mk_keras.analysis`) so that training can use it without the analysis
dependencies (scikit-learn, matplotlib); `mk_keras.analysis` re-exports it.

Keys (grid coordinates x = column, y = row, both -r..r with r = (k-1)/2, x to the right, y down;
G_s(x, y) = exp(-(x² + y²) / (2 s²))), with the lengths of `MASTER_KEY_PARAMS` given for k = 7 and scaled by k/7:

  0 gaussian          G_sg                             sg = 2.0
  1 dx, 2 dy          -x/sd² G_sd,  -y/sd² G_sd        sd = 1.0 (centred first derivatives)
  3 +x, 4 -x          G_so(x ∓ d, y) - G_so(x, y)      so = 1.5, d = 2.0 (one-sided Gaussian differences)
  5 +y, 6 -y          G_so(x, y ∓ d) - G_so(x, y)
  7 centre_surround   G_sc - γ ∇²G_sc                  sc = 0.8, γ = sc² (positive centre, negative surround)

Each key is returned as x̂: centred (zero mean) and unit L2 norm, the form the fit y ≈ a*x̂ + b uses. The
parameters were chosen to make the 8 keys distinct after centring (largest |cosine| between two keys 0.54 at
7x7; `python -c "import mk_keras as a, numpy as np; k = a.master_keys().reshape(8, -1);
print(np.abs(k @ k.T - np.eye(8)).max())"`).
"""

import dataclasses

import keras
import numpy as np

from mk_keras.filters import canonical_kernel, filter_layers, iter_layers, select_indices
from mk_keras.models.layers import MasterKeyDepthwiseConv2D

MASTER_KEY_NAMES = ("gaussian", "dx", "dy", "one_sided_+x", "one_sided_-x", "one_sided_+y", "one_sided_-y",
                    "centre_surround")
SHIFTS = ("kernel", "bias")
MASTER_KEY_PARAMS = {
    "gaussian_sigma": 2.0,
    "derivative_sigma": 1.0,
    "one_sided_sigma": 1.5,
    "one_sided_offset": 2.0,
    "centre_surround_sigma": 0.8,
    "centre_surround_gamma": 0.64,
}
# A centred filter with a norm below this is treated as constant (it has no shape to compare).
MIN_NORM = 1e-8


def master_keys(kernel_size=7):
    """The 8 master keys as a float32 array (8, k, k), each centred and unit-norm, in `MASTER_KEY_NAMES` order."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) or kernel_size < 3 or (
        kernel_size % 2 == 0
    ):
        raise ValueError(f"kernel_size={kernel_size!r} must be an odd integer >= 3")
    scale = kernel_size / 7
    p = {name: value * scale for name, value in MASTER_KEY_PARAMS.items()}
    p["centre_surround_gamma"] = MASTER_KEY_PARAMS["centre_surround_gamma"] * scale**2
    r = (kernel_size - 1) / 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1]

    def gauss(s, dx=0.0, dy=0.0):
        return np.exp(-((x - dx) ** 2 + (y - dy) ** 2) / (2 * s**2))

    sd, so, d, sc = p["derivative_sigma"], p["one_sided_sigma"], p["one_sided_offset"], p["centre_surround_sigma"]
    laplacian = ((x**2 + y**2) / sc**4 - 2 / sc**2) * gauss(sc)
    keys = [
        gauss(p["gaussian_sigma"]),
        -x / sd**2 * gauss(sd),
        -y / sd**2 * gauss(sd),
        gauss(so, d, 0) - gauss(so),
        gauss(so, -d, 0) - gauss(so),
        gauss(so, 0, d) - gauss(so),
        gauss(so, 0, -d) - gauss(so),
        gauss(sc) - p["centre_surround_gamma"] * laplacian,
    ]
    unit, _ = normalize_filters(np.stack(keys))
    return unit.reshape(8, kernel_size, kernel_size).astype(np.float32)


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

    `keys` defaults to `master_keys(k)`. A constant filter gets index 0, a = 0, cosine 0.
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

    @property
    def frozen_layers(self):
        """Names of the layers whose kernels are now frozen master keys (every selected layer)."""
        return [e.layer for e in self.entries]

    def to_dict(self):
        return {**dataclasses.asdict(self), "key_names": list(MASTER_KEY_NAMES)}

    def __str__(self):
        head = f"master keys n={self.n} order={self.order} shift={self.shift} reference={self.reference or '-'}"
        rows = [
            f"  [{e.index:3d}] {e.layer:<32} keys {e.key_counts}"
            + (f" fit |cos| {e.mean_cosine:.3f} from {e.reference_layer}" if e.reference_layer else "")
            for e in self.entries
        ]
        return "\n".join([head, *rows])


def assign_master_keys(model, n, reference=None, order="first", shift="kernel"):
    """Give the first (or last) `n` depthwise layers of `model` frozen master keys with a learnable shift.

    Channel c of each selected layer gets the kernel s*x̂ (s = ±1, x̂ a master key), frozen:
      - with a `reference` model (e.g. trained), fitted to the reference's filter y of the same depthwise
        layer index (same kernel shape required): x̂ = the key maximising |a|, a = <x̂, y>, s = sign(a);
      - without, round-robin over channels (channel c gets key c mod 8), s = +1.
    The scale |a| is dropped: the conv is linear, so it folds into later layers. The learnable shift:
      - shift="kernel": returns a copy of `model` in which each selected `DepthwiseConv2D` is a
        `MasterKeyDepthwiseConv2D` applying kernel + shift[c] (b added to every tap, the fit's form);
        shift = mean(y)/|a| with a reference (the layer applies y/|a|), else 0. Everything else, trainable
        flags included, is copied. Compile the returned model.
      - shift="bias": in place (returns `model` itself): the kernel variable is set to the keys and made
        non-trainable (`kernel.trainable = False`; not kept by `.keras` save/load), the layer's bias stays
        trainable as a per-channel output shift (a layer without bias gets none). Any depthwise layer type.
    Call inside the strategy scope, before compiling. Returns `(model, MasterKeyReport)`.
    """
    if shift not in SHIFTS:
        raise ValueError(f"shift={shift!r}; allowed: {', '.join(SHIFTS)}")
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
        keys = master_keys(kh)
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
            fit = fit_master_keys(value.reshape(kh, kw, -1).transpose(2, 0, 1))
            key_index, signs = fit.index, np.where(fit.a < 0, -1.0, 1.0)
            shifts = np.divide(fit.b, np.abs(fit.a), out=np.zeros_like(fit.b), where=fit.a != 0)
            ref_name, mean_cos = ref.name, float(fit.cosine.mean())
        kernel = (signs[:, None, None] * keys[key_index]).transpose(1, 2, 0).reshape(entry.kernel_shape)
        plans[id(entry.layer)] = (kernel, shifts)
        entries.append(MasterKeyEntry(entry.index, entry.name, ref_name, key_index.tolist(), mean_cos))
    report = MasterKeyReport(n, order, shift, reference.name if reference is not None else None, entries)
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
