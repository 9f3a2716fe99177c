"""Copy the first (or last) n filter layers of one model into another, and freeze them.

Trainability changes take effect at the next `compile()`: call `transfer_filters` / `freeze_filters`
before compiling, or compile again afterwards (Keras 3 snapshots trainable weights at compile time).

What freezing freezes (the report's `frozen_variables` lists every variable path):

- a layer holding one kernel (`Conv2D`, `DepthwiseConv2D`, `Dense`): the whole layer (`layer.trainable =
  False`), i.e. its kernel and bias; stored in `.keras` files;
- a `SeparableConv2D` holds a depthwise and a pointwise kernel: only the transferred kernel variable
  (`variable.trainable = False`), the other half and the bias keep training;
- `freeze_following_norm` ("all" or True): the whole normalisation layer right after each frozen layer.
  A frozen `BatchNormalization` runs in inference mode in Keras 3: it normalises with its moving
  mean/variance (copied from the source; in `freeze_filters`, mean 0 and variance 1 at initialisation, which
  switches normalisation off) and never updates them. "affine" freezes only its scale/offset (gamma/beta
  variables): the layer keeps normalising with batch statistics in training and updating its moving ones.

Variable-level freezes (SeparableConv2D halves, "affine") are not stored in `.keras` files or model
configs: rebuild with `transfer_filters` to train again; `mk_keras.export` reads them from the run's
`transfer_report.json`.

The report records the sha256 of the C-order bytes of each source kernel (and bias) before mapping and of
each target kernel (and bias) as assigned (`freeze_filters`: as frozen), so an export can prove that the
frozen filters it holds are the transferred ones.

Controls (`kernel_transform`, recorded in the report with its seed): `transfer_filters(...,
kernel_transform="shuffle", transform_seed=s)` permutes the spatial positions of every copied (and mapped)
filter, each 2-D filter (one per channel, or per input/output channel pair of a conv) with its own permutation
drawn from `numpy.random.default_rng((s, target index))`: the same values per filter, their arrangement
destroyed. `freeze_filters(..., kernel_transform="delta")` sets each depthwise filter to the identity (1 at the
centre tap, 0 elsewhere: no spatial filtering) before freezing it.
"""

import dataclasses
import hashlib

import keras
import numpy as np

from mk_keras.filters import (
    FILTER_KINDS,
    ORDERS,
    canonical_kernel,
    filter_layers,
    from_canonical_kernel,
    select_indices,
)

__all__ = ["CHANNEL_MAPS", "KERNEL_MAPS", "NORM_FREEZES", "ORDERS", "TransferEntry", "TransferReport",
           "array_sha256", "delta_kernel", "freeze_filters", "shuffle_kernel", "transfer_filters"]

KERNEL_MAPS = ("center_crop", "zero_pad", "resize", "auto")
CHANNEL_MAPS = ("truncate", "tile", "auto")
# freeze_following_norm: False; True or "all" (the whole norm layer); "affine" (only its gamma/beta).
NORM_FREEZES = (False, True, "all", "affine")
_NORMS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)


def array_sha256(array):
    """sha256 (hex) of an array's C-order bytes, e.g. `array_sha256(keras.ops.convert_to_numpy(variable))`."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _value_sha256(variable):
    return array_sha256(keras.ops.convert_to_numpy(variable))


@dataclasses.dataclass
class TransferEntry:
    """One copied (or frozen in place) filter layer; `*_sha256` are `array_sha256` of the variable values."""

    index: int  # target filter index (`filter_layers(target, kind)`)
    source_index: int | None
    source_layer: str | None
    target_layer: str
    source_shape: tuple | None
    target_shape: tuple
    variable: str  # the target kernel's variable path
    mapping: str | None = None
    source_sha256: str | None = None  # source kernel, before mapping
    kernel_sha256: str | None = None  # target kernel as assigned (freeze_filters: as frozen)
    bias_copied: bool = False
    source_bias_sha256: str | None = None
    bias_sha256: str | None = None
    frozen: bool = False  # the target kernel is frozen
    norm_layer: str | None = None  # the normalisation layer after the target layer, when frozen with it
    norm_copied: bool = False
    frozen_layers: list = dataclasses.field(default_factory=list)  # set trainable=False: every variable frozen
    frozen_variables: list = dataclasses.field(default_factory=list)  # every variable path this entry froze


@dataclasses.dataclass
class TransferReport:
    """What `transfer_filters` / `freeze_filters` did, layer by layer."""

    kind: str
    n: int
    order: str
    freeze: bool
    freeze_following_norm: object
    entries: list
    kernel_transform: str | None = None  # "shuffle" (copied kernels permuted) or "delta" (identity kernels)
    transform_seed: int | None = None  # the seed of the "shuffle" permutations

    @property
    def frozen_layers(self):
        """Target layers with at least one frozen variable (following norms included), in entry order."""
        names = []
        for e in self.entries:
            names += [e.target_layer] if e.frozen else []
            names += [e.norm_layer] if e.norm_layer else []
        return list(dict.fromkeys(names))

    @property
    def fully_frozen_layers(self):
        """Target layers set to `trainable=False` (all their variables frozen)."""
        return list(dict.fromkeys(name for e in self.entries for name in e.frozen_layers))

    @property
    def frozen_variables(self):
        """Paths of every frozen variable."""
        return list(dict.fromkeys(path for e in self.entries for path in e.frozen_variables))

    def to_dict(self):
        """The fields, plus `frozen_layers`, `fully_frozen_layers` and `frozen_variables`."""
        return {**dataclasses.asdict(self), "frozen_layers": self.frozen_layers,
                "fully_frozen_layers": self.fully_frozen_layers, "frozen_variables": self.frozen_variables}

    def __str__(self):
        head = (f"transfer {self.kind} n={self.n} order={self.order} freeze={self.freeze} "
                f"freeze_following_norm={self.freeze_following_norm}"
                + (f" kernel_transform={self.kernel_transform}" if self.kernel_transform else "")
                + (f" seed={self.transform_seed}" if self.transform_seed is not None else ""))
        rows = [
            f"  [{e.index:3d}] {e.source_layer or '-':<32} -> {e.target_layer:<32} {e.target_shape}"
            f"{' map=' + e.mapping if e.mapping else ''}"
            f"{' frozen: ' + ', '.join(e.frozen_variables) if e.frozen_variables else ''}"
            for e in self.entries
        ]
        return "\n".join([head, *rows])


def _map_spatial(value, shape, how):
    """Crop, pad or resize the two leading (spatial) axes of `value` to `shape[:2]`."""
    (sh, sw), (th, tw) = value.shape[:2], shape[:2]
    if (sh, sw) == (th, tw):
        return value
    if how == "resize":
        flat = value.reshape(sh, sw, -1).transpose(2, 0, 1)[..., None]
        out = keras.ops.image.resize(flat, (th, tw), interpolation="bilinear", antialias=True)
        out = keras.ops.convert_to_numpy(out)[..., 0].transpose(1, 2, 0)
        return out.reshape((th, tw) + value.shape[2:]).astype(value.dtype)
    if how == "center_crop" and (th > sh or tw > sw) or how == "zero_pad" and (th < sh or tw < sw):
        raise ValueError(f"kernel_map={how!r} cannot map spatial size {(sh, sw)} to {(th, tw)}")
    out = value
    for axis, (s, t) in enumerate(((sh, th), (sw, tw))):
        if t < s:
            start = (s - t) // 2
            out = np.take(out, range(start, start + t), axis=axis)
        elif t > s:
            pad = [(0, 0)] * out.ndim
            pad[axis] = ((t - s) // 2, t - s - (t - s) // 2)
            out = np.pad(out, pad)
    return out


def _map_channels(value, shape, how, axes):
    out = value
    for axis in axes:
        s, t = out.shape[axis], shape[axis]
        if s == t:
            continue
        if how == "truncate" and t > s:
            raise ValueError(f"channel_map='truncate' cannot grow {s} channels to {t}")
        if how == "tile" and t < s:
            raise ValueError(f"channel_map='tile' cannot shrink {s} channels to {t}")
        out = np.take(out, [i % s for i in range(t)], axis=axis)
    return out


def _map_value(value, target_shape, kernel_map, channel_map, src, dst):
    if value.shape == tuple(target_shape):
        return value, None
    spatial = 2 if value.ndim == 4 else 0
    if spatial and value.shape[:2] != tuple(target_shape[:2]) and kernel_map is None or (
        value.shape[spatial:] != tuple(target_shape[spatial:]) and channel_map is None
    ):
        raise ValueError(
            f"shape mismatch: source layer {src!r} {value.shape} vs target layer {dst!r} {tuple(target_shape)}; "
            f"pass kernel_map ({', '.join(KERNEL_MAPS)}) and/or channel_map ({', '.join(CHANNEL_MAPS)})"
        )
    applied = []
    if spatial and value.shape[:2] != tuple(target_shape[:2]):
        if callable(kernel_map):
            value = np.asarray(kernel_map(value, tuple(target_shape)))
        else:
            value = _map_spatial(value, target_shape, kernel_map)
        applied.append(f"kernel:{getattr(kernel_map, '__name__', kernel_map)}")
    if value.shape[spatial:] != tuple(target_shape[spatial:]):
        if callable(channel_map):
            value = np.asarray(channel_map(value, tuple(target_shape)))
        else:
            value = _map_channels(value, target_shape, channel_map, range(spatial, value.ndim))
        applied.append(f"channel:{getattr(channel_map, '__name__', channel_map)}")
    if value.shape != tuple(target_shape):
        raise ValueError(f"mapping gave shape {value.shape}, expected {tuple(target_shape)} for {dst!r}")
    return value, "+".join(applied)


def shuffle_kernel(kernel, rng):
    """`kernel` (kh, kw, ...) with the kh*kw spatial positions of each 2-D filter `kernel[:, :, i, j]` permuted
    independently (`rng` a `numpy.random.Generator`)."""
    kh, kw = kernel.shape[:2]
    flat = kernel.reshape(kh * kw, -1)
    order = rng.permuted(np.broadcast_to(np.arange(kh * kw)[:, None], flat.shape), axis=0)
    return np.take_along_axis(flat, order, axis=0).reshape(kernel.shape)


def delta_kernel(shape, dtype="float32"):
    """Identity filters of canonical depthwise `shape` (kh, kw, channels, multiplier): 1 at the centre tap."""
    kh, kw = shape[:2]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel_transform='delta' needs odd kernel sizes (a centre tap); got {kh}x{kw}")
    out = np.zeros(shape, dtype)
    out[kh // 2, kw // 2] = 1
    return out


def _following_norm(filter_layer):
    """The normalisation layer fed by `filter_layer`'s layer alone, if any (BN after a conv, LN after a ConvNeXt
    dwconv); None for the depthwise half of a SeparableConv2D (its pointwise half comes first)."""
    if filter_layer.attr == "depthwise_kernel":
        return None
    users = [node.operation for node in getattr(filter_layer.layer, "_outbound_nodes", [])]
    return users[0] if len(users) == 1 and isinstance(users[0], _NORMS) else None


def _norm_mode(freeze_following_norm, freeze):
    """None, "all" or "affine" from a `freeze_following_norm` value."""
    if freeze_following_norm not in NORM_FREEZES:
        raise ValueError(f"freeze_following_norm={freeze_following_norm!r}; allowed: "
                         f"{', '.join(map(repr, NORM_FREEZES))}")
    if not freeze_following_norm:
        return None
    if not freeze:
        raise ValueError(f"freeze_following_norm={freeze_following_norm!r} needs freeze=True (nothing is frozen "
                         "with freeze=False)")
    return "affine" if freeze_following_norm == "affine" else "all"


def _check_input_scaling(source, target):
    """Frozen moving statistics only fit inputs scaled as the source's were: refuse models whose input
    normalisation layers differ (e.g. a converted keras.applications ResNet50, "caffe", into a default
    resnet50, "imagenet")."""
    from mk_keras.models.conventions import input_scaling

    a, b = input_scaling(source), input_scaling(target)
    if a is None or b is None:
        return
    if len(a) != len(b) or not all(x.shape == y.shape and np.allclose(x, y) for x, y in zip(a, b)):
        raise ValueError(f"freeze_following_norm='all' copies moving statistics of inputs scaled as {source.name!r} "
                         f"scales them, but {target.name!r} normalises its inputs differently (preprocess_rescale/"
                         "_normalize layers); build the target with the source's preprocessing "
                         "(mk_keras.convert.<family>.build_overrides) or use freeze_following_norm='affine'")


def _describe_norm(norm):
    if norm is None:
        return "no normalisation layer"
    return f"{type(norm).__name__} {norm.name!r} {[tuple(w.shape) for w in norm.weights]}"


def _check_norms(src, dst):
    """The target's following norm and the source's to copy into it; raises when they do not match."""
    dst_norm = _following_norm(dst)
    if dst_norm is None:
        return None, None
    src_norm = _following_norm(src)
    if src_norm is None or type(src_norm) is not type(dst_norm) or (
        [tuple(w.shape) for w in src_norm.weights] != [tuple(w.shape) for w in dst_norm.weights]
    ):
        raise ValueError(
            f"freeze_following_norm cannot copy the norm after source layer {src.name!r} "
            f"({_describe_norm(src_norm)}) into the norm after target layer {dst.name!r} ({_describe_norm(dst_norm)}); "
            "pass freeze_following_norm=False"
        )
    return src_norm, dst_norm


def _freeze(filter_layer, entry, norm, norm_mode):
    """Freeze the kernel of `filter_layer` (its whole layer unless it shares it) and `norm` per `norm_mode`."""
    layers = [] if filter_layer.shares_layer else [filter_layer.layer]
    variables = [filter_layer.kernel] if filter_layer.shares_layer else []
    if norm is not None and norm_mode == "all":
        layers.append(norm)
    elif norm is not None:
        affine = [v for v in (getattr(norm, "gamma", None), getattr(norm, "beta", None)) if v is not None]
        variables += affine
        norm = norm if affine else None
    for layer in layers:
        layer.trainable = False
    for variable in variables:
        variable.trainable = False
    entry.frozen = True
    entry.norm_layer = norm.name if norm is not None else None
    entry.frozen_layers = [layer.name for layer in layers]
    entry.frozen_variables = [v.path for layer in layers for v in layer.weights] + [v.path for v in variables]


def freeze_filters(model, n, kind="depthwise", order="first", freeze_following_norm=False, kernel_transform=None):
    """Freeze the first (or last) `n` filter layers of `kind` in place, without copying (random-frozen
    controls, reversed experiments); `freeze_following_norm` as in `transfer_filters` (the norm is frozen
    as it is, not copied). `kernel_transform="delta"` (depthwise only) first sets every selected kernel to the
    identity filter (`delta_kernel`); the bias keeps its value. Returns a `TransferReport`; recompile
    afterwards."""
    norm_mode = _norm_mode(freeze_following_norm, True)
    if kernel_transform not in (None, "delta"):
        raise ValueError(f"kernel_transform={kernel_transform!r} for freeze_filters; allowed: None, 'delta'")
    if kernel_transform == "delta" and kind != "depthwise":
        raise ValueError(f"kernel_transform='delta' with kind={kind!r}; allowed: depthwise (the identity filter of "
                         "one channel)")
    layers = filter_layers(model, kind)
    selected = [layers[i] for i in select_indices(len(layers), n, order)]
    deltas = [delta_kernel(fl.canonical_shape) for fl in selected] if kernel_transform else None
    entries = []
    for pos, fl in enumerate(selected):
        if deltas is not None:
            kernel = from_canonical_kernel(deltas[pos], fl)
            fl.kernel.assign(kernel.astype(keras.backend.standardize_dtype(fl.kernel.dtype)))
        entry = TransferEntry(fl.index, None, None, fl.name, None, fl.kernel_shape, fl.kernel.path,
                              mapping=kernel_transform, kernel_sha256=_value_sha256(fl.kernel))
        _freeze(fl, entry, _following_norm(fl) if norm_mode else None, norm_mode)
        entries.append(entry)
    return TransferReport(kind, n, order, True, freeze_following_norm, entries, kernel_transform)


def transfer_filters(
    source,
    target,
    n,
    kind="depthwise",
    order="first",
    freeze=True,
    copy_bias=True,
    kernel_map=None,
    channel_map=None,
    freeze_following_norm=False,
    kernel_transform=None,
    transform_seed=None,
):
    """Copy the kernels of the first (or last) `n` `kind` layers of `source` into `target`.

    Args:
      source, target: built Keras models (different objects). Layers are paired by index in forward
        order (`filter_layers`), so source and target may be different architectures.
      n: number of layers, 0..min(available in source, available in target).
      kind: 'depthwise', 'pointwise' or 'conv'.
      order: 'first' (AnB) or 'last' (reversed experiments: layers from the end).
      freeze: freeze the copied kernels (AnB/BnB; see the module docstring for what else freezes);
        False keeps them trainable (AnB+/BnB+).
      copy_bias: also copy the bias when both layers have one of matching (mapped) shape.
      kernel_map: None (spatial sizes must match), 'center_crop', 'zero_pad', 'resize' (bilinear,
        antialiased), 'auto' (crop when larger, pad when smaller) or `fn(kernel, target_shape)`.
      channel_map: None (channels must match), 'truncate', 'tile' (repeat channels cyclically),
        'auto' (truncate or tile) or `fn(kernel, target_shape)`.
      freeze_following_norm: one of `NORM_FREEZES`, with `freeze`: copy the normalisation layer right after
        each source layer into the one after its target layer and freeze it: True/"all" the whole layer
        (a frozen BatchNormalization then normalises with its moving statistics), "affine" only its
        gamma/beta. The two norms must have the same type and weight shapes.
      kernel_transform: None, or "shuffle" (the `shuffled` control): after mapping, permute the spatial positions
        of each copied 2-D filter (`shuffle_kernel`) with `numpy.random.default_rng((transform_seed, target
        index))`; `transform_seed` (an integer) is required and recorded. Bias and norms are copied unchanged.
    Returns a `TransferReport`. Everything is validated before `target` changes. Recompile `target`
    afterwards (see module docstring).
    """
    if source is target:
        raise ValueError("source and target are the same model object; pass a separately built target")
    if kind not in FILTER_KINDS:
        raise ValueError(f"unknown filter kind {kind!r}; allowed: {', '.join(FILTER_KINDS)}")
    kernel_map = _resolve_map("kernel_map", kernel_map, KERNEL_MAPS)
    channel_map = _resolve_map("channel_map", channel_map, CHANNEL_MAPS)
    norm_mode = _norm_mode(freeze_following_norm, freeze)
    if norm_mode == "all":
        _check_input_scaling(source, target)
    if kernel_transform not in (None, "shuffle"):
        raise ValueError(f"kernel_transform={kernel_transform!r} for transfer_filters; allowed: None, 'shuffle'")
    if kernel_transform and (isinstance(transform_seed, bool) or not isinstance(transform_seed, (int, np.integer))):
        raise ValueError(f"kernel_transform='shuffle' needs an integer transform_seed, got {transform_seed!r}")
    src_layers, dst_layers = filter_layers(source, kind), filter_layers(target, kind)
    available = min(len(src_layers), len(dst_layers))
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > available:
        raise ValueError(
            f"n={n} is out of range; allowed: 0..{available} ({kind} layers: source {len(src_layers)}, "
            f"target {len(dst_layers)})"
        )
    src_idx = select_indices(len(src_layers), n, order)
    dst_idx = select_indices(len(dst_layers), n, order)
    # Validate and map every kernel (and norm) before writing anything, so a bad layer leaves target untouched.
    planned = []
    for i, j in zip(src_idx, dst_idx):
        s, d = src_layers[i], dst_layers[j]
        raw = keras.ops.convert_to_numpy(s.kernel)
        mapped, how = _map_value(canonical_kernel(raw, s), d.canonical_shape, kernel_map, channel_map, s.name, d.name)
        if kernel_transform:
            if mapped.ndim != 4 or mapped.shape[0] * mapped.shape[1] < 2:
                raise ValueError(f"kernel_transform='shuffle' needs spatial kernels; layer {d.name!r} has a kernel "
                                 f"of shape {mapped.shape} (no spatial positions to permute)")
            mapped = shuffle_kernel(mapped, np.random.default_rng((int(transform_seed), j)))
            how = "+".join(filter(None, (how, "shuffle")))
        entry = TransferEntry(j, i, s.name, d.name, s.kernel_shape, d.kernel_shape, d.kernel.path, how,
                              source_sha256=array_sha256(raw))
        bias = None
        if copy_bias and not s.shares_layer and not d.shares_layer:
            sb, db = getattr(s.layer, "bias", None), getattr(d.layer, "bias", None)
            if sb is not None and db is not None:
                bias = keras.ops.convert_to_numpy(sb)
                entry.source_bias_sha256 = array_sha256(bias)
                if bias.shape != tuple(db.shape):
                    bias = _map_channels(bias, tuple(db.shape), "auto", [0])
        norms = _check_norms(s, d) if norm_mode else (None, None)
        planned.append((entry, d, from_canonical_kernel(mapped, d), bias, norms))
    for entry, d, kernel, bias, (src_norm, dst_norm) in planned:
        d.kernel.assign(kernel.astype(keras.backend.standardize_dtype(d.kernel.dtype)))
        entry.kernel_sha256 = _value_sha256(d.kernel)
        if bias is not None:
            d.layer.bias.assign(bias.astype(keras.backend.standardize_dtype(d.layer.bias.dtype)))
            entry.bias_copied = True
            entry.bias_sha256 = _value_sha256(d.layer.bias)
        if dst_norm is not None:
            dst_norm.set_weights(src_norm.get_weights())
            entry.norm_copied = True
        if freeze:
            _freeze(d, entry, dst_norm, norm_mode)
    return TransferReport(kind, n, order, freeze, freeze_following_norm, [e for e, *_ in planned], kernel_transform,
                          int(transform_seed) if kernel_transform else None)


def _resolve_map(name, value, allowed):
    if value is not None and not callable(value) and value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: None, a callable, or one of {', '.join(allowed)}")
    if value == "auto":
        return _AUTO[name]
    return value


def _auto_kernel(value, shape):
    return _map_spatial(
        _map_spatial(value, (min(value.shape[0], shape[0]), min(value.shape[1], shape[1])), "center_crop"),
        shape,
        "zero_pad",
    )


def _auto_channels(value, shape):
    return _map_channels(value, shape, "auto", range(2 if value.ndim == 4 else 0, value.ndim))


_auto_kernel.__name__ = "auto"
_auto_channels.__name__ = "auto"
_AUTO = {"kernel_map": _auto_kernel, "channel_map": _auto_channels}

