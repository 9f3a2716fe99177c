"""A PyTorch HorNet (7x7 gnConv) with the state-dict names of the official code (github raoyongming/HorNet,
`hornet.py`), written for the conversion and parameter-count tests: NCHW, channels-first LayerNorm over dim 1,
gnConv with `proj_in`, one depthwise `dwconv` over the concatenated gates, `pws`, `proj_out`, layer scales
`gamma1`/`gamma2`. Input: normalised images (N, 3, H, W). Initialisation is torch's default (the tests perturb it).
"""

import torch
from torch import nn


class ChannelsFirstLayerNorm(nn.Module):
    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GnConv(nn.Module):
    def __init__(self, dim, order, scale):
        super().__init__()
        self.dims = [dim // 2 ** i for i in reversed(range(order))]
        self.scale = scale
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        self.dwconv = nn.Conv2d(sum(self.dims), sum(self.dims), 7, padding=3, groups=sum(self.dims))
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))

    def forward(self, x):
        p, q = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        gates = torch.split(self.dwconv(q) * self.scale, self.dims, dim=1)
        p = p * gates[0]
        for pw, gate in zip(self.pws, gates[1:]):
            p = pw(p) * gate
        return self.proj_out(p)


class Block(nn.Module):
    def __init__(self, dim, order, scale):
        super().__init__()
        self.norm1 = ChannelsFirstLayerNorm(dim)
        self.gnconv = GnConv(dim, order, scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma1 = nn.Parameter(1e-6 * torch.ones(dim))
        self.gamma2 = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        x = x + self.gamma1[:, None, None] * self.gnconv(self.norm1(x))
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + (self.gamma2 * y).permute(0, 3, 1, 2)


class HorNetReference(nn.Module):
    def __init__(self, depths, widths, num_classes=1000, orders=(2, 3, 4, 5), scale=1.0 / 3.0, stem_stride=4):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, widths[0], stem_stride, stride=stem_stride),
                           ChannelsFirstLayerNorm(widths[0]))]
            + [nn.Sequential(ChannelsFirstLayerNorm(widths[i]), nn.Conv2d(widths[i], widths[i + 1], 2, stride=2))
               for i in range(len(widths) - 1)]
        )
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(w, o, scale) for _ in range(d)]) for d, w, o in zip(depths, widths, orders)
        )
        self.norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.head(self.norm(x.mean((-2, -1))))
