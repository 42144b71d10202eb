"""Heatmap head: resize-concat of the HRNet branches, 1x1 conv + BN + ReLU, 1x1 conv to K maps.

Parameter names follow EasyCV/mmpose-0.x ``TopdownHeatmapSimpleHead`` with
``input_transform='resize_concat'`` and no deconvolution layers (``final_layer.0`` conv,
``final_layer.1`` BN, ``final_layer.3`` output conv), so ``keypoint_head.*`` checkpoint keys
load as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HeatmapHead(nn.Module):

    def __init__(self, in_channels=(18, 36, 72, 144), out_channels: int = 21, num_conv_layers: int = 1,
                 conv_kernel: int = 1, final_conv_kernel: int = 1, align_corners: bool = False):
        super().__init__()
        self.in_channels = list(in_channels)
        self.align_corners = align_corners
        channels = sum(self.in_channels)
        layers = []
        for _ in range(num_conv_layers):
            layers += [
                nn.Conv2d(channels, channels, conv_kernel, padding=(conv_kernel - 1) // 2),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(channels, out_channels, final_conv_kernel, padding=(final_conv_kernel - 1) // 2))
        self.final_layer = nn.Sequential(*layers)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        x = torch.cat([features[0]] + [
            F.interpolate(f, size=size, mode='bilinear', align_corners=self.align_corners) for f in features[1:]
        ], dim=1)
        return self.final_layer(x)
