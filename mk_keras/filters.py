"""Filter addressing: which layers of any Keras model hold depthwise, pointwise or regular conv kernels.

Counting convention: one index per layer of the kind, in forward (topological) order, descending into
nested models and Sequentials. For ConvNeXt that is one depthwise index per block.

- depthwise: `DepthwiseConv2D`, the depthwise half of `SeparableConv2D`, and `Conv2D` with
  `groups == input channels > 1` (keras.applications ConvNeXt).
- pointwise: 1x1 `Conv2D` with `groups == 1`, the pointwise half of `SeparableConv2D`, and `Dense`
  layers applied to 4-D (NHWC) tensors (ConvNeXt's pwconv layers).
- conv: regular `Conv2D` (`groups == 1`) with a spatial kernel larger than 1x1 (ResNet 3x3/7x7, AlexNet).
"""

import dataclasses
import re

import keras

FILTER_KINDS = ("depthwise", "pointwise", "conv")
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
    def shares_layer(self):
        """True when the kernel shares its layer with another kernel (SeparableConv2D)."""
        return isinstance(self.layer, keras.layers.SeparableConv2D)


def _iter_layers(model):
    """Layers in forward order, nested models expanded in place."""
    for layer in model.layers:
        if isinstance(layer, (keras.Model, keras.Sequential)) or hasattr(layer, "layers") and layer.layers:
            yield from _iter_layers(layer)
        else:
            yield layer


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
    for layer in _iter_layers(model):
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
