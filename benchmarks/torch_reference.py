"""PyTorch ConvNeXt V1 matching `mk_keras.models.convnext.ConvNeXt` layer for layer (benchmark only).

Same widths, depths, kernel size, stem (k x k / k), LayerNorm (eps 1e-6) placement, exact GELU, layer scale,
2x2/2 downsampling, global-average-pool -> LayerNorm -> Linear head, and the in-model input normalisation
(raw [0, 255] pixels -> ImageNet mean/std). The block follows the official ConvNeXt code: a grouped
`Conv2d` depthwise conv on NCHW, then channels-last `Linear` pointwise convs (permute in, permute out).
Stem and downsampling LayerNorms normalise over channels of NCHW tensors (permute + `F.layer_norm`, as timm's
`LayerNorm2d`). Trainable parameter counts equal the Keras model's.
"""

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    """dwconv -> LN -> pwconv1 (4x) -> GELU -> pwconv2 -> layer scale, plus the shortcut."""

    def __init__(self, dim, kernel_size=7, layer_scale_init=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()  # exact (erf), as keras.activations.gelu's default
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init))) if layer_scale_init else None

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt V1 on raw-pixel NCHW input, logits out."""

    def __init__(self, depths, widths, num_classes=1000, in_channels=3, stem_stride=4, kernel_size=7,
                 layer_scale_init=1e-6):
        super().__init__()
        if in_channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = (0.5,) * in_channels, (0.25,) * in_channels
        self.register_buffer("mean", 255.0 * torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", 255.0 * torch.tensor(std).view(1, -1, 1, 1))
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], stem_stride, stride=stem_stride), LayerNorm2d(widths[0], eps=1e-6)
        )
        self.stages = nn.ModuleList()
        for s, (depth, width) in enumerate(zip(depths, widths)):
            down = [] if s == 0 else [LayerNorm2d(widths[s - 1], eps=1e-6), nn.Conv2d(widths[s - 1], width, 2, 2)]
            blocks = [Block(width, kernel_size, layer_scale_init) for _ in range(depth)]
            self.stages.append(nn.Sequential(*down, *blocks))
        self.head_norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.head = nn.Linear(widths[-1], num_classes)
        self.apply(_init_weights)

    def forward(self, x):
        x = self.stem((x - self.mean) / self.std)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.head_norm(x.mean(dim=(2, 3))))

    def depthwise_convs(self):
        """The depthwise convolutions in forward order (one per block, as `filter_layers(m, 'depthwise')`)."""
        return [m.dwconv for stage in self.stages for m in stage if isinstance(m, Block)]


def _init_weights(module):
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def freeze_depthwise(model, n):
    """Freeze the weight and bias of the first `n` depthwise convs (as `mk_keras.freeze_filters`)."""
    for conv in model.depthwise_convs()[:n]:
        conv.requires_grad_(False)


def make_optimizer(model, lr, weight_decay=0.05, fused=None):
    """AdamW with weight decay on >=2-D trainable weights only (mk_keras' recipe excludes 0-/1-D ones)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=fused)
