"""The top-down hand keypoint model: HRNet backbone + heatmap head, flip test, loss."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .head import HeatmapHead
from .hrnet import HRNet

SUPPORTED_BACKBONES = ('HRNet', )
SUPPORTED_HEADS = ('TopdownHeatmapSimpleHead', )


def flip_back_heatmaps(flipped: torch.Tensor, shift: bool = True) -> torch.Tensor:
    """Heatmaps of a horizontally flipped input, mapped back to the original frame.

    Hands have no left/right keypoint pairs, so only the width axis is flipped.  With
    ``shift`` the maps move right by one pixel (column 0 is kept), the correction EasyCV applies
    for the half-pixel misalignment of flipped heatmaps.  The result is a new tensor: the shift
    never reads memory it has already written.
    """
    back = flipped.flip(-1)
    if shift:
        back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
    return back


def _check_sizes(input_size, heatmap_size) -> None:
    """HRNet halves the crop five times (stem 4x, then the branches to 1/32) and upsamples its branches
    back by powers of 2, so the crop sides must be multiples of 32; the heatmaps are 1/4 of the crop."""
    ok = (len(input_size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 32 == 0
                                        for v in input_size))
    if not ok:
        raise ValueError(f'image_size {list(input_size)} is not supported: the HRNet crop must be [width, height], '
                         'each a positive multiple of 32 (e.g. [128, 128], [192, 192], [256, 256]).')
    want = (input_size[0] // 4, input_size[1] // 4)
    if tuple(heatmap_size) != want:
        raise ValueError(f'heatmap_size {list(heatmap_size)} does not match image_size {list(input_size)}: the '
                         f'network predicts heatmaps of a quarter of the crop, {list(want)}; set heatmap_size to '
                         'that (or leave it out).')


def as_hand_network(model):
    """The :class:`TopDownHandModel` of ``model``: itself, or the network inside the ModelScope wrapper
    (:class:`~modelscope_handkp.modelscope_model.HandKeypointsModel`, what ``Model.from_pretrained`` returns,
    whose ``forward`` gives a dict and whose ``cfg`` is the whole configuration.json); other modules as
    they are."""
    inner = model.__dict__.get('hand_model') if isinstance(model, nn.Module) else None
    return inner if isinstance(inner, TopDownHandModel) else model


class TopDownHandModel(nn.Module):
    """Normalised RGB crops [N, 3, H, W] -> heatmaps [N, K, H/4, W/4]."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        backbone_cfg = dict(self.cfg.get('backbone', {}))
        head_cfg = dict(self.cfg.get('keypoint_head', {}))
        btype = backbone_cfg.get('type', 'HRNet')
        htype = head_cfg.get('type', 'TopdownHeatmapSimpleHead')
        if btype not in SUPPORTED_BACKBONES:
            raise ValueError(f'Unsupported keypoint backbone type {btype!r}; this package implements '
                             f'{SUPPORTED_BACKBONES}.')
        if htype not in SUPPORTED_HEADS:
            raise ValueError(f'Unsupported keypoint head type {htype!r}; this package implements '
                             f'{SUPPORTED_HEADS}.')
        if head_cfg.get('num_deconv_layers', 0) not in (0, None):
            raise ValueError('keypoint_head.num_deconv_layers > 0 is not supported (the hand models use 0).')
        if head_cfg.get('input_transform', 'resize_concat') != 'resize_concat':
            raise ValueError(f"keypoint_head.input_transform {head_cfg.get('input_transform')!r} is not "
                             "supported; only 'resize_concat'.")
        self.backbone = HRNet(backbone_cfg.get('extra'), in_channels=backbone_cfg.get('in_channels', 3))
        in_index = list(head_cfg.get('in_index', range(len(self.backbone.out_channels))))
        self.in_index = in_index
        extra = head_cfg.get('extra', {}) or {}
        kernels = list(extra.get('num_conv_kernels', (1, )))
        head_in = head_cfg.get('in_channels', [self.backbone.out_channels[i] for i in in_index])
        self.keypoint_head = HeatmapHead(
            in_channels=head_in,
            out_channels=head_cfg.get('out_channels', 21),
            num_conv_layers=extra.get('num_conv_layers', 1),
            conv_kernel=kernels[0] if kernels else 1,
            final_conv_kernel=extra.get('final_conv_kernel', 1),
            align_corners=head_cfg.get('align_corners', False))
        self.num_keypoints = head_cfg.get('out_channels', 21)
        test_cfg = self.cfg.get('test_cfg', {}) or {}
        self.flip_test = bool(test_cfg.get('flip_test', True))
        self.shift_heatmap = bool(test_cfg.get('shift_heatmap', True))
        self.input_size = tuple(self.cfg.get('image_size', (256, 256)))
        self.heatmap_size = tuple(self.cfg.get('heatmap_size', (self.input_size[0] // 4, self.input_size[1] // 4)))
        _check_sizes(self.input_size, self.heatmap_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        return self.keypoint_head([features[i] for i in self.in_index])

    def forward_heatmaps(self, images: torch.Tensor, flip_test: bool = False) -> torch.Tensor:
        """Heatmaps for normalised crops; with ``flip_test`` the batch and its mirror image go
        through the network in ONE forward pass and the two results are averaged."""
        if not flip_test:
            return self(images)
        n = images.shape[0]
        both = self(torch.cat([images, images.flip(-1)], dim=0))
        return 0.5 * (both[:n] + flip_back_heatmaps(both[n:], shift=self.shift_heatmap))

    @staticmethod
    def loss(heatmaps: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
        """JointsMSELoss with target weights (the mean over keypoints of per-keypoint MSE)."""
        w = target_weight.reshape(target_weight.shape[0], target_weight.shape[1], 1, 1)
        return torch.mean(((heatmaps - target) * w)**2)

    def forward_train(self, img: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> dict:
        return {'loss': self.loss(self(img), target, target_weight)}
