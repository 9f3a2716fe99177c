"""Copy the first (or last) n filter layers of one model into another, and freeze them.

Trainability changes take effect at the next `compile()`: call `transfer_filters` / `freeze_filters`
before compiling, or compile again afterwards (Keras 3 snapshots trainable weights at compile time).

Freezing sets `layer.trainable = False`, which freezes the layer's kernel and bias. A
`SeparableConv2D` holds a depthwise and a pointwise kernel in one layer: freezing its depthwise half
freezes the whole layer, and the report lists the pointwise kernel under `also_frozen`.
"""

import dataclasses

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

KERNEL_MAPS = ("center_crop", "zero_pad", "resize", "auto")
CHANNEL_MAPS = ("truncate", "tile", "auto")
# freeze_following_norm values: False, True / "all" (the whole norm layer), "affine" (only its scale/offset).
NORM_FREEZES = (False, True, "all", "affine")
_NORMS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)


@dataclasses.dataclass
class TransferEntry:
    """One copied (or frozen) layer."""

    index: int
    source_layer: str | None
    target_layer: str
    source_shape: tuple | None
    target_shape: tuple
    mapping: str | None = None
    bias_copied: bool = False
    frozen: bool = False
    also_frozen: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TransferReport:
    """What `transfer_filters` / `freeze_filters` did, layer by layer."""

    kind: str
    n: int
    order: str
    freeze: bool
    entries: list

    @property
    def frozen_layers(self):
        """Names of the target layers set to `trainable=False` (following norms included)."""
        names = [e.target_layer for e in self.entries if e.frozen]
        return names + [x for e in self.entries for x in e.also_frozen if not x.endswith("_kernel")]

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        head = f"transfer {self.kind} n={self.n} order={self.order} freeze={self.freeze}"
        rows = [
            f"  [{e.index:3d}] {e.source_layer or '-':<32} -> {e.target_layer:<32} {e.target_shape}"
            f"{' map=' + e.mapping if e.mapping else ''}{' frozen' if e.frozen else ''}"
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


def _following_norm(layer):
    """The normalisation layer fed by `layer` alone, if any (BN after a conv, LN after a ConvNeXt dwconv)."""
    users = [node.operation for node in getattr(layer, "_outbound_nodes", [])]
    return users[0] if len(users) == 1 and isinstance(users[0], _NORMS) else None


def _freeze(entry_layer, report_entry, freeze_following_norm, source_layer=None):
    entry_layer.layer.trainable = False
    report_entry.frozen = True
    if entry_layer.shares_layer:
        report_entry.also_frozen.append("pointwise_kernel")
    if freeze_following_norm:
        norm = _following_norm(entry_layer.layer)
        if norm is not None:
            src_norm = _following_norm(source_layer) if source_layer is not None else None
            if src_norm is not None and [w.shape for w in src_norm.weights] == [w.shape for w in norm.weights]:
                norm.set_weights(src_norm.get_weights())
            norm.trainable = False
            report_entry.also_frozen.append(norm.name)


def freeze_filters(model, n, kind="depthwise", order="first", freeze_following_norm=False):
    """Freeze the first (or last) `n` filter layers of `kind` in place, without copying (random-frozen
    controls, reversed experiments). Returns a `TransferReport`; recompile afterwards."""
    layers = filter_layers(model, kind)
    entries = []
    for i in select_indices(len(layers), n, order):
        entry = TransferEntry(i, None, layers[i].name, None, layers[i].kernel_shape)
        _freeze(layers[i], entry, freeze_following_norm)
        entries.append(entry)
    return TransferReport(kind, n, order, True, entries)


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
):
    """Copy the kernels of the first (or last) `n` `kind` layers of `source` into `target`.

    Args:
      source, target: built Keras models (different objects). Layers are paired by index in forward
        order (`filter_layers`), so source and target may be different architectures.
      n: number of layers, 0..min(available in source, available in target).
      kind: 'depthwise', 'pointwise' or 'conv'.
      order: 'first' (AnB) or 'last' (reversed experiments: layers from the end).
      freeze: `trainable=False` on the copied layers (AnB/BnB); False keeps them trainable (AnB+/BnB+).
      copy_bias: also copy the bias when both layers have one of matching (mapped) shape.
      kernel_map: None (spatial sizes must match), 'center_crop', 'zero_pad', 'resize' (bilinear,
        antialiased), 'auto' (crop when larger, pad when smaller) or `fn(kernel, target_shape)`.
      channel_map: None (channels must match), 'truncate', 'tile' (repeat channels cyclically),
        'auto' (truncate or tile) or `fn(kernel, target_shape)`.
      freeze_following_norm: when freezing, also copy and freeze the normalisation layer that directly
        follows each frozen layer.
    Returns a `TransferReport`. Recompile `target` afterwards (see module docstring).
    """
    if source is target:
        raise ValueError("source and target are the same model object; pass a separately built target")
    if kind not in FILTER_KINDS:
        raise ValueError(f"unknown filter kind {kind!r}; allowed: {', '.join(FILTER_KINDS)}")
    kernel_map = _resolve_map("kernel_map", kernel_map, KERNEL_MAPS)
    channel_map = _resolve_map("channel_map", channel_map, CHANNEL_MAPS)
    src_layers, dst_layers = filter_layers(source, kind), filter_layers(target, kind)
    available = min(len(src_layers), len(dst_layers))
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > available:
        raise ValueError(
            f"n={n} is out of range; allowed: 0..{available} ({kind} layers: source {len(src_layers)}, "
            f"target {len(dst_layers)})"
        )
    src_idx = select_indices(len(src_layers), n, order)
    dst_idx = select_indices(len(dst_layers), n, order)
    # Validate and map every kernel before writing anything, so a bad layer leaves target untouched.
    planned = []
    for i, j in zip(src_idx, dst_idx):
        s, d = src_layers[i], dst_layers[j]
        value = canonical_kernel(keras.ops.convert_to_numpy(s.kernel), s)
        mapped, how = _map_value(value, d.canonical_shape, kernel_map, channel_map, s.name, d.name)
        bias = None
        if copy_bias and not s.shares_layer and not d.shares_layer:
            sb, db = getattr(s.layer, "bias", None), getattr(d.layer, "bias", None)
            if sb is not None and db is not None:
                bias = keras.ops.convert_to_numpy(sb)
                if bias.shape != tuple(db.shape):
                    bias = _map_channels(bias, tuple(db.shape), "auto", [0])
        planned.append((j, s, d, from_canonical_kernel(mapped, d), how, bias))
    entries = []
    for j, s, d, kernel, how, bias in planned:
        d.kernel.assign(kernel.astype(keras.backend.standardize_dtype(d.kernel.dtype)))
        entry = TransferEntry(j, s.name, d.name, s.kernel_shape, d.kernel_shape, how)
        if bias is not None:
            d.layer.bias.assign(bias)
            entry.bias_copied = True
        if freeze:
            _freeze(d, entry, freeze_following_norm, s.layer)
        entries.append(entry)
    return TransferReport(kind, n, order, freeze, entries)


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

