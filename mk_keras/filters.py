"""Filter addressing: which layers of any Keras model hold depthwise, pointwise or regular conv kernels.

Counting convention: one index per layer of the kind, in forward (topological) order, descending into
nested models and Sequentials. For ConvNeXt that is one depthwise index per block.

- depthwise: `DepthwiseConv2D`, the depthwise half of `SeparableConv2D`, and `Conv2D` with
  `groups == input channels > 1` (keras.applications ConvNeXt).
- pointwise: 1x1 `Conv2D` with `groups == 1`, the pointwise half of `SeparableConv2D`, and `Dense`
  layers applied to 4-D (NHWC) tensors (ConvNeXt's pwconv layers).
- conv: regular `Conv2D` (`groups == 1`) with a spatial kernel larger than 1x1 (ResNet 3x3/7x7, AlexNet).

Shared helpers: `iter_layers` (leaf layers in forward order), `canonical_kernel` / `from_canonical_kernel`
(depthwise kernels as (kh, kw, C, multiplier) whatever layer holds them) and `select_indices` (which n of the
available layers, first or last).
"""

import dataclasses
import re

import keras
import numpy as np

FILTER_KINDS = ("depthwise", "pointwise", "conv")
ORDERS = ("first", "last")
_STAGE_BLOCK = re.compile(r"stage(\d+)_block(\d+)")


@dataclasses.dataclass(frozen=True)
class FilterLayer:
    """One addressable filter layer: `index` in forward order, the layer and which kernel attribute."""

    index: int
    name: str
    layer: keras.layers.Layer
    attr: str  # "kernel", "depthwise_kernel" or "pointwise_kernel"
    kernel_shape: tuple
    stage: int | None = None
    block: int | None = None

    @property
    def kernel(self):
        """The kernel variable (Keras 3 `Variable`)."""
        return getattr(self.layer, self.attr)

    @property
    def canonical_shape(self):
        """`kernel_shape` in the canonical layout (see `canonical_kernel`)."""
        return _canonical_shape(self)

    @property
    def shares_layer(self):
        """True when the kernel shares its layer with another kernel (SeparableConv2D)."""
        return isinstance(self.layer, keras.layers.SeparableConv2D)


def iter_layers(model):
    """The leaf layers of `model` in forward (topological) order; nested models, Sequentials and other layers
    with sub-`layers` are expanded in place (the container itself is not yielded)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) or getattr(layer, "layers", None):
            yield from iter_layers(layer)
        else:
            yield layer


def _is_grouped_depthwise(filter_layer):
    layer = filter_layer.layer
    return (filter_layer.attr == "kernel" and isinstance(layer, keras.layers.Conv2D)
            and not isinstance(layer, keras.layers.DepthwiseConv2D) and layer.groups > 1)


def _canonical_shape(filter_layer):
    if _is_grouped_depthwise(filter_layer):
        kh, kw, _, out = filter_layer.kernel_shape
        groups = filter_layer.layer.groups
        return (kh, kw, groups, out // groups)
    return tuple(filter_layer.kernel_shape)


def canonical_kernel(value, filter_layer):
    """`value` (an array of `filter_layer.kernel_shape`) in the canonical layout: depthwise kernels as
    (kh, kw, C, multiplier) whichever layer holds them (a grouped `Conv2D` stores (kh, kw, 1, C * multiplier));
    other kernels unchanged. Inverse: `from_canonical_kernel`."""
    return np.asarray(value).reshape(_canonical_shape(filter_layer))


def from_canonical_kernel(value, filter_layer):
    """A canonical-layout array (see `canonical_kernel`) back in `filter_layer`'s own kernel layout."""
    return np.asarray(value).reshape(filter_layer.kernel_shape)


def select_indices(available, n, order):
    """The indices of the first (`order="first"`) or last (`"last"`) `n` of `available` layers, ascending.

    Raises ValueError for an unknown order or an `n` that is not an int in 0..available.
    """
    if order not in ORDERS:
        raise ValueError(f"order={order!r}; allowed: {', '.join(ORDERS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= available:
        raise ValueError(f"n={n!r} is out of range; allowed: 0..{available} layers")
    return list(range(n)) if order == "first" else list(range(available - n, available))


def _input_rank(layer):
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):
        return None


def _kernels_of_kind(layer, kind):
    """The kernel attributes of `layer` that hold filters of `kind` (usually zero or one)."""
    if not layer.built:
        return []
    if isinstance(layer, keras.layers.SeparableConv2D):
        return {"depthwise": ["depthwise_kernel"], "pointwise": ["pointwise_kernel"]}.get(kind, [])
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return ["kernel"] if kind == "depthwise" else []
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin_per_group, _ = layer.kernel.shape
        groups = layer.groups
        if groups > 1 and cin_per_group == 1:
            found = "depthwise"
        elif groups == 1 and (kh, kw) == (1, 1):
            found = "pointwise"
        elif groups == 1:
            found = "conv"
        else:
            found = None
        return ["kernel"] if found == kind else []
    if isinstance(layer, keras.layers.Dense) and kind == "pointwise" and _input_rank(layer) == 4:
        return ["kernel"]
    return []


def filter_layers(model, kind="depthwise"):
    """The layers of `model` holding `kind` kernels, in forward order, as `FilterLayer` records.

    Works on any built Keras model, not only mk_keras builders; `stage`/`block` are parsed from
    `stage{s}_block{b}` layer names when present.
    """
    if kind not in FILTER_KINDS:
        raise ValueError(f"unknown filter kind {kind!r}; allowed: {', '.join(FILTER_KINDS)}")
    if not isinstance(model, keras.Model):
        raise ValueError(f"expected a keras.Model, got {type(model).__name__}")
    found = []
    for layer in iter_layers(model):
        for attr in _kernels_of_kind(layer, kind):
            match = _STAGE_BLOCK.search(layer.name)
            found.append(
                FilterLayer(
                    index=len(found),
                    name=layer.name,
                    layer=layer,
                    attr=attr,
                    kernel_shape=tuple(getattr(layer, attr).shape),
                    stage=int(match.group(1)) if match else None,
                    block=int(match.group(2)) if match else None,
                )
            )
    return found


def count_filter_layers(model):
    """{kind: number of layers} for every kind in FILTER_KINDS."""
    return {kind: len(filter_layers(model, kind)) for kind in FILTER_KINDS}

