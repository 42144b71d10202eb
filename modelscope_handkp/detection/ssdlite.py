"""Native SSDLite-MobileNetV2 hand detector, number-for-number with mmdet 2.28.

The hub model ships its hand detector as ``detection/detection_model.pth`` plus an mmdet 2.x
config ``detection/config.py``.  This module rebuilds that network in plain PyTorch (no mmcv,
mmdet or torchvision), loads the checkpoint with the same state-dict keys, and reproduces
mmdet's test-time behaviour:

* **preprocessing** — resize to the network input (320x320, aspect *not* kept, OpenCV
  bilinear), RGB, ``(x - mean) / std`` with ImageNet means in 0..255 units;
* **network** — MobileNetV2 backbone (BN eps from the config, ReLU6), ``SSDNeck`` with
  depthwise-separable extra levels, ``SSDHead`` with a depthwise 3x3 + 1x1 conv per level;
* **anchors** — mmdet ``SSDAnchorGenerator``: per level one square anchor of ``min_size``, one of
  ``sqrt(min_size * max_size)``, and ``1/r, r`` aspect ratios; anchor centres at
  ``(i + 0.5) * stride``; order per level: (row, column, anchor);
* **decoding** — ``DeltaXYWHBBoxCoder`` (stds (0.1, 0.1, 0.2, 0.2)), log-size deltas clamped to
  ``|log(16/1000)|``, boxes clamped to the 320x320 input;
* **post-processing** (``test_cfg``) — softmax, class scores ``> score_thr``, per *level* the
  ``nms_pre`` best, boxes divided by the resize factors (back to original pixels; mmdet does not
  clip again afterwards), NMS (IoU ``>=`` threshold suppresses), at most ``max_per_img``.

mmdet's softmax puts the background class *last*: the hand score is ``softmax(logits)[..., 0]``.

Use :func:`build_hand_detector` to create one from a config and a checkpoint.
"""
from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import torch
from torch import nn

from ..checkpoint import CheckpointError, check_state_dict, read_state_dict
from .base import Detections, HandDetector, flatten_head_map
from .mmdet_config import load_mmdet_config
from .nms import batched_nms

__all__ = ['SSDLiteHandDetector', 'build_hand_detector', 'default_model_cfg', 'MobileNetV2',
           'SSDNeck', 'SSDHead', 'ssd_anchors', 'decode_deltas', 'DEFAULT_MEAN', 'DEFAULT_STD',
           'DEFAULT_INPUT_SIZE']

DEFAULT_INPUT_SIZE = (320, 320)  # (width, height), the SSDLite test pipeline's img_scale
DEFAULT_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 units
DEFAULT_STD = (58.395, 57.12, 57.375)
DEFAULT_TEST_CFG = dict(nms_pre=1000, nms=dict(type='nms', iou_threshold=0.45), min_bbox_size=0,
                        score_thr=0.02, max_per_img=200)

SUPPORTED = dict(detector=('SingleStageDetector',), backbone=('MobileNetV2',), neck=('SSDNeck',),
                 bbox_head=('SSDHead',), anchor_generator=('SSDAnchorGenerator',),
                 bbox_coder=('DeltaXYWHBBoxCoder',), norm=('BN', 'SyncBN'),
                 act=('ReLU', 'ReLU6', 'HSwish', 'Swish', 'SiLU'))


def default_model_cfg() -> dict:
    """The mmdet ``model`` dict of the hub model's hand detector (``detection/config.py``),
    without the training-only parts (``init_cfg``, ``train_cfg``)."""
    bn = dict(type='BN', eps=0.001, momentum=0.03)
    channels = [96, 1280, 512, 256, 256, 128]
    return dict(
        type='SingleStageDetector',
        backbone=dict(type='MobileNetV2', out_indices=[4, 7], norm_cfg=dict(bn)),
        neck=dict(type='SSDNeck', in_channels=[96, 1280], out_channels=list(channels),
                  level_strides=[2, 2, 2, 2], level_paddings=[1, 1, 1, 1], l2_norm_scale=None,
                  use_depthwise=True, norm_cfg=dict(bn), act_cfg=dict(type='ReLU6')),
        bbox_head=dict(
            type='SSDHead', in_channels=list(channels), num_classes=1, use_depthwise=True,
            norm_cfg=dict(bn), act_cfg=dict(type='ReLU6'),
            anchor_generator=dict(type='SSDAnchorGenerator', scale_major=False,
                                  strides=[16, 32, 64, 107, 160, 320], ratios=[[2, 3]] * 6,
                                  min_sizes=[48, 100, 150, 202, 253, 304],
                                  max_sizes=[100, 150, 202, 253, 304, 320]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[0.1, 0.1, 0.2, 0.2])),
        test_cfg=copy.deepcopy(DEFAULT_TEST_CFG))


def _unsupported(part: str, found) -> ValueError:
    return ValueError(
        f'unsupported {part} type {found!r}: the native hand detector implements mmdet\'s '
        f'SSDLite family only (detector {SUPPORTED["detector"]}, backbone {SUPPORTED["backbone"]}, '
        f'neck {SUPPORTED["neck"]}, head {SUPPORTED["bbox_head"]}); supported {part} types: '
        f'{SUPPORTED.get(part, ())}.')


# --------------------------------------------------------------------------------------------
# Building blocks (module names follow mmcv's ConvModule so checkpoints load unchanged)
# --------------------------------------------------------------------------------------------
def _norm_eps(norm_cfg: dict | None) -> float | None:
    """BatchNorm eps from an mmcv norm_cfg; ``None`` when the config has no norm layer."""
    if norm_cfg is None:
        return None
    kind = norm_cfg.get('type', 'BN')
    if kind not in SUPPORTED['norm']:
        raise _unsupported('norm', kind)
    return float(norm_cfg.get('eps', 1e-5))


def _activation(act_cfg: dict | None) -> nn.Module:
    if act_cfg is None:
        return nn.Identity()
    kind = act_cfg.get('type', 'ReLU')
    table = {'ReLU': nn.ReLU, 'ReLU6': nn.ReLU6, 'HSwish': nn.Hardswish, 'Swish': nn.SiLU,
             'SiLU': nn.SiLU}
    if kind not in table:
        raise _unsupported('act', kind)
    return table[kind]()


class ConvNormAct(nn.Module):
    """Conv2d -> BatchNorm -> activation, with mmcv ``ConvModule`` parameter names (``conv``,
    ``bn``); the conv has a bias only when there is no norm layer (mmcv's ``bias='auto'``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bn_eps: float | None = 1e-5,
                 act_cfg: dict | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              groups=groups, bias=bn_eps is None)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps) if bn_eps is not None else None
        self.act = _activation(act_cfg)
        self.stride, self.padding, self.kernel_size = stride, padding, kernel_size

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.kernel_size) // self.stride + 1


class DepthwiseSeparableConv(nn.Module):
    """Depthwise kxk ConvNormAct then pointwise 1x1 ConvNormAct (mmcv
    ``DepthwiseSeparableConvModule``: names ``depthwise_conv``, ``pointwise_conv``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bn_eps=1e-5, act_cfg=None):
        super().__init__()
        self.depthwise_conv = ConvNormAct(in_channels, in_channels, kernel_size, stride, padding,
                                          groups=in_channels, bn_eps=bn_eps, act_cfg=act_cfg)
        self.pointwise_conv = ConvNormAct(in_channels, out_channels, 1, bn_eps=bn_eps,
                                          act_cfg=act_cfg)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))

    def out_size(self, size: int) -> int:
        return self.depthwise_conv.out_size(size)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> 3x3 depthwise -> 1x1 linear, residual when shapes
    allow (names ``expand_conv``, ``depthwise_conv``, ``linear_conv`` as in mmdet)."""

    def __init__(self, in_channels, out_channels, mid_channels, stride, bn_eps, act_cfg):
        super().__init__()
        self.expand_conv = (ConvNormAct(in_channels, mid_channels, 1, bn_eps=bn_eps,
                                        act_cfg=act_cfg) if mid_channels != in_channels
                            else None)
        self.depthwise_conv = ConvNormAct(mid_channels, mid_channels, 3, stride, 1,
                                          groups=mid_channels, bn_eps=bn_eps, act_cfg=act_cfg)
        self.linear_conv = ConvNormAct(mid_channels, out_channels, 1, bn_eps=bn_eps, act_cfg=None)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = self.expand_conv(x) if self.expand_conv is not None else x
        out = self.linear_conv(self.depthwise_conv(out))
        return x + out if self.residual else out

    def out_size(self, size: int) -> int:
        return self.depthwise_conv.out_size(size)


def _make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """Round channels to a multiple of ``divisor`` without going below ``min_ratio`` x value."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new_value + divisor if new_value < min_ratio * value else new_value


class MobileNetV2(nn.Module):
    """mmdet's MobileNetV2 backbone.

    Stages, in the order ``out_indices`` counts them: ``layer1`` .. ``layer7`` (index 0..6)
    and the final 1x1 ``conv2`` (index 7); ``conv1`` is the stem.  SSDLite uses (4, 7):
    ``layer5`` (96 channels, stride 16) and ``conv2`` (1280 channels, stride 32).
    """

    # expand ratio, output channels, blocks, stride of the first block
    ARCH = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, widen_factor: float = 1.0, out_indices=(1, 2, 4, 7),
                 norm_cfg: dict | None = None, act_cfg: dict | None = None):
        super().__init__()
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        act_cfg = dict(type='ReLU6') if act_cfg is None else act_cfg
        bn_eps = _norm_eps(norm_cfg)
        self.out_indices = tuple(int(i) for i in out_indices)
        if not set(self.out_indices) <= set(range(8)):
            raise ValueError(f'MobileNetV2 out_indices must be in 0..7; got {self.out_indices}.')
        channels = _make_divisible(32 * widen_factor)
        self.conv1 = ConvNormAct(3, channels, 3, 2, 1, bn_eps=bn_eps, act_cfg=act_cfg)
        self.stage_names = []
        self.stage_channels = []
        for i, (expand, out, blocks, stride) in enumerate(self.ARCH):
            out = _make_divisible(out * widen_factor)
            layer = []
            for b in range(blocks):
                layer.append(InvertedResidual(channels, out, int(round(channels * expand)),
                                              stride if b == 0 else 1, bn_eps, act_cfg))
                channels = out
            self.add_module(f'layer{i + 1}', nn.Sequential(*layer))
            self.stage_names.append(f'layer{i + 1}')
            self.stage_channels.append(out)
        last = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
        self.conv2 = ConvNormAct(channels, last, 1, bn_eps=bn_eps, act_cfg=act_cfg)
        self.stage_names.append('conv2')
        self.stage_channels.append(last)

    @property
    def out_channels(self) -> tuple:
        return tuple(self.stage_channels[i] for i in self.out_indices)

    def forward(self, x):
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def out_sizes(self, size: int) -> list:
        """Spatial size (one dimension) of each output for an input of ``size``."""
        size = self.conv1.out_size(size)
        sizes = []
        for i, name in enumerate(self.stage_names):
            stage = getattr(self, name)
            size = stage[0].out_size(size) if isinstance(stage, nn.Sequential) else \
                stage.out_size(size)
            if i in self.out_indices:
                sizes.append(size)
        return sizes


class SSDNeck(nn.Module):
    """mmdet's ``SSDNeck``: passes the backbone maps through and appends extra levels, each a
    1x1 ConvNormAct to half the channels then a (depthwise-separable) strided 3x3."""

    def __init__(self, in_channels, out_channels, level_strides, level_paddings,
                 l2_norm_scale=None, last_kernel_size=3, use_depthwise=False,
                 norm_cfg=None, act_cfg=None):
        super().__init__()
        if l2_norm_scale is not None:
            raise ValueError('SSDNeck with l2_norm_scale (the VGG SSD300/512 variant) is not '
                             'supported; the SSDLite hand detector uses l2_norm_scale=None.')
        in_channels, out_channels = list(in_channels), list(out_channels)
        if out_channels[:len(in_channels)] != in_channels:
            raise ValueError(f'SSDNeck out_channels {out_channels} must start with in_channels '
                             f'{in_channels}.')
        extra = out_channels[len(in_channels):]
        if not (len(extra) == len(level_strides) == len(level_paddings)):
            raise ValueError('SSDNeck: level_strides and level_paddings need one entry per extra '
                             f'level ({len(extra)}).')
        act_cfg = dict(type='ReLU') if act_cfg is None else act_cfg
        bn_eps = _norm_eps(norm_cfg)
        self.extra_layers = nn.ModuleList()
        for i, (out, stride, padding) in enumerate(zip(extra, level_strides, level_paddings)):
            kernel = last_kernel_size if i == len(extra) - 1 else 3
            prev = out_channels[len(in_channels) - 1 + i]
            second = (DepthwiseSeparableConv(out // 2, out, kernel, stride, padding, bn_eps, act_cfg)
                      if use_depthwise else
                      ConvNormAct(out // 2, out, kernel, stride, padding, bn_eps=bn_eps,
                                  act_cfg=act_cfg))
            self.extra_layers.append(nn.Sequential(
                ConvNormAct(prev, out // 2, 1, bn_eps=bn_eps, act_cfg=act_cfg), second))

    def forward(self, feats):
        outs = list(feats)
        x = outs[-1]
        for layer in self.extra_layers:
            x = layer(x)
            outs.append(x)
        return outs

    def out_sizes(self, in_sizes: list) -> list:
        sizes = list(in_sizes)
        for layer in self.extra_layers:
            sizes.append(layer[1].out_size(sizes[-1]))
        return sizes


class SSDHead(nn.Module):
    """mmdet's ``SSDHead`` network part: per level a classification and a regression branch.

    SSDLite (``use_depthwise=True``): depthwise 3x3 ConvNormAct then a 1x1 conv with bias.
    Classic SSD: one 3x3 conv with bias.  Outputs per level: [N, A*(C+1), H, W] and
    [N, A*4, H, W].
    """

    def __init__(self, in_channels, num_classes, num_anchors, use_depthwise=False,
                 stacked_convs=0, feat_channels=256, norm_cfg=None, act_cfg=None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.cls_out_channels = self.num_classes + 1  # background is the last class
        bn_eps = _norm_eps(norm_cfg)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for channels, anchors in zip(in_channels, num_anchors):
            branches = []
            for out_ch in (anchors * self.cls_out_channels, anchors * 4):
                layers, ch = [], channels
                for _ in range(stacked_convs):
                    layers.append(DepthwiseSeparableConv(ch, feat_channels, 3, 1, 1, bn_eps, act_cfg)
                                  if use_depthwise else
                                  ConvNormAct(ch, feat_channels, 3, 1, 1, bn_eps=bn_eps,
                                              act_cfg=act_cfg))
                    ch = feat_channels
                if use_depthwise:
                    layers.append(ConvNormAct(ch, ch, 3, 1, 1, groups=ch, bn_eps=bn_eps,
                                              act_cfg=act_cfg))
                    layers.append(nn.Conv2d(ch, out_ch, 1))
                else:
                    layers.append(nn.Conv2d(ch, out_ch, 3, padding=1))
                branches.append(nn.Sequential(*layers))
            self.cls_convs.append(branches[0])
            self.reg_convs.append(branches[1])

    def forward(self, feats):
        return ([conv(f) for f, conv in zip(feats, self.cls_convs)],
                [conv(f) for f, conv in zip(feats, self.reg_convs)])


# --------------------------------------------------------------------------------------------
# Anchors and box decoding
# --------------------------------------------------------------------------------------------
def _ssd_base_anchors(stride, min_size, max_size, ratios, scale_major) -> torch.Tensor:
    """Anchors of one location at the origin cell, in mmdet's order: [A, 4] float32.

    Computed in float32 with mmdet's operation order so that values match bit for bit.
    """
    ratio_list = [1.0]
    for r in ratios:
        ratio_list += [1.0 / r, float(r)]
    ratios_t = torch.tensor(ratio_list, dtype=torch.float32)
    scales_t = torch.tensor([1.0, math.sqrt(max_size / min_size)], dtype=torch.float32)
    h_ratios = torch.sqrt(ratios_t)
    w_ratios = 1 / h_ratios
    if scale_major:
        ws = (min_size * w_ratios[:, None] * scales_t[None, :]).reshape(-1)
        hs = (min_size * h_ratios[:, None] * scales_t[None, :]).reshape(-1)
    else:  # SSD: (scale, ratio) grid, scale outer
        ws = (min_size * scales_t[:, None] * w_ratios[None, :]).reshape(-1)
        hs = (min_size * scales_t[:, None] * h_ratios[None, :]).reshape(-1)
    cx, cy = stride[0] / 2.0, stride[1] / 2.0
    base = torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)
    # mmdet keeps the ratio-1 anchors of both scales first: [s0 r1, s1 r1, s0 r=1/2, s0 r=2, ...]
    n = len(ratio_list)
    order = [0, n] + list(range(1, n))
    return base[order]


def ssd_anchors(feat_sizes, strides, min_sizes, max_sizes, ratios, scale_major=False) -> torch.Tensor:
    """All anchors [A, 4] float32 (x1, y1, x2, y2, input pixels), level by level, each level in
    (row, column, anchor) order — mmdet ``SSDAnchorGenerator.grid_priors`` concatenated.

    ``feat_sizes``: [(h, w)] per level; ``strides``: int or (sx, sy) per level.
    """
    levels = []
    for (fh, fw), stride, lo, hi, rs in zip(feat_sizes, strides, min_sizes, max_sizes, ratios):
        stride = (stride, stride) if np.isscalar(stride) else tuple(stride)
        base = _ssd_base_anchors(stride, lo, hi, rs, scale_major)
        sx = (torch.arange(fw) * stride[0]).to(torch.float32)
        sy = (torch.arange(fh) * stride[1]).to(torch.float32)
        yy, xx = torch.meshgrid(sy, sx, indexing='ij')
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
        levels.append((shifts + base[None]).reshape(-1, 4))
    return torch.cat(levels, dim=0)


def decode_deltas(anchors: torch.Tensor, deltas: torch.Tensor, means=(0.0, 0.0, 0.0, 0.0),
                  stds=(1.0, 1.0, 1.0, 1.0), max_shape=None, wh_ratio_clip=16 / 1000,
                  clip_border=True) -> torch.Tensor:
    """mmdet ``delta2bbox``: anchors [A, 4] and deltas [..., A, 4] -> boxes [..., A, 4].

    ``max_shape`` = (height, width) to clamp x to [0, width] and y to [0, height].
    """
    deltas = deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)
    centers = (anchors[:, :2] + anchors[:, 2:]) * 0.5
    sizes = anchors[:, 2:] - anchors[:, :2]
    max_ratio = abs(math.log(wh_ratio_clip))
    new_centers = centers + sizes * deltas[..., :2]
    new_sizes = sizes * deltas[..., 2:].clamp(min=-max_ratio, max=max_ratio).exp()
    boxes = torch.cat([new_centers - new_sizes * 0.5, new_centers + new_sizes * 0.5], dim=-1)
    if clip_border and max_shape is not None:
        h, w = max_shape[0], max_shape[1]
        upper = boxes.new_tensor([w, h, w, h])
        boxes = torch.minimum(boxes.clamp(min=0), upper)
    return boxes


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------
def _as_rgb_uint8(image) -> np.ndarray:
    """Validate one image and return it as a contiguous RGB uint8 [H, W, 3] array.

    Accepts RGB (H, W, 3), grayscale (H, W) or (H, W, 1), RGBA (H, W, 4; alpha dropped) and
    anything ``np.asarray`` turns into one of these (e.g. a PIL image).  16-bit and float ([0, 1] or
    0..255) pixels are converted as the palm detector and the pipeline convert them
    (:func:`~modelscope_handkp.transforms.ensure_rgb_uint8`).
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        from ..transforms import ensure_rgb_uint8
        try:
            arr = ensure_rgb_uint8(arr)
        except TypeError as e:
            raise ValueError(f'expected an RGB uint8 image; got dtype {arr.dtype}. Pass uint8 pixels (or uint16, '
                             'or float in [0, 1] or 0..255).') from e
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f'expected an image of shape (H, W, 3) RGB, (H, W) gray or (H, W, 4) '
                         f'RGBA; got shape {arr.shape}.')
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f'image has no pixels (shape {arr.shape}).')
    return np.ascontiguousarray(arr)


def _is_batch(images) -> bool:
    if isinstance(images, (list, tuple)):
        return True
    return isinstance(images, np.ndarray) and images.ndim == 4


class SSDLiteHandDetector(nn.Module, HandDetector):
    """SSDLite-MobileNetV2 hand detector (mmdet 2.x layout: ``backbone``, ``neck``, ``bbox_head``).

    Build it with :func:`build_hand_detector`.  Main methods:

    * :meth:`detect` — RGB uint8 image(s) -> float32 [M, 5] (x1, y1, x2, y2, score) in original
      image pixels, best first (a list of arrays for a list of images, one batched forward);
    * :meth:`detect_hands` — one image -> :class:`~.base.Detections` using :attr:`score_thr`;
    * :meth:`preprocess`, :meth:`forward_raw`, :meth:`anchors`, :meth:`postprocess` — the steps.

    Attributes ``score_thr``, ``nms_iou``, ``max_det``, ``nms_pre`` hold the defaults used by
    :meth:`detect_hands` (from the config's ``test_cfg``); change them freely.
    """

    def __init__(self, model_cfg: dict, input_size=DEFAULT_INPUT_SIZE, mean=DEFAULT_MEAN,
                 std=DEFAULT_STD, to_rgb: bool = True):
        nn.Module.__init__(self)
        model_cfg = _check_model_cfg(model_cfg)
        b, n, h = model_cfg['backbone'], model_cfg['neck'], model_cfg['bbox_head']
        self.model_cfg = model_cfg
        self.backbone = MobileNetV2(widen_factor=b.get('widen_factor', 1.0),
                                    out_indices=b.get('out_indices', (1, 2, 4, 7)),
                                    norm_cfg=b.get('norm_cfg'), act_cfg=b.get('act_cfg'))
        if tuple(n['in_channels']) != self.backbone.out_channels:
            raise ValueError(f'neck in_channels {tuple(n["in_channels"])} do not match the '
                             f'backbone outputs {self.backbone.out_channels}.')
        self.neck = SSDNeck(n['in_channels'], n['out_channels'], n['level_strides'],
                            n['level_paddings'], l2_norm_scale=n.get('l2_norm_scale'),
                            last_kernel_size=n.get('last_kernel_size', 3),
                            use_depthwise=n.get('use_depthwise', False),
                            norm_cfg=n.get('norm_cfg'), act_cfg=n.get('act_cfg'))
        ag = h['anchor_generator']
        self.anchor_cfg = dict(strides=list(ag['strides']), ratios=[list(r) for r in ag['ratios']],
                               min_sizes=list(ag['min_sizes']), max_sizes=list(ag['max_sizes']),
                               scale_major=bool(ag.get('scale_major', True)))
        num_anchors = [2 + 2 * len(r) for r in self.anchor_cfg['ratios']]
        if len(h['in_channels']) != len(num_anchors) or \
                tuple(h['in_channels']) != tuple(n['out_channels']):
            raise ValueError(f'bbox_head in_channels {tuple(h["in_channels"])} must equal the neck '
                             f'out_channels {tuple(n["out_channels"])}, one anchor level each.')
        self.bbox_head = SSDHead(h['in_channels'], h.get('num_classes', 80), num_anchors,
                                 use_depthwise=h.get('use_depthwise', False),
                                 stacked_convs=h.get('stacked_convs', 0),
                                 feat_channels=h.get('feat_channels', 256),
                                 norm_cfg=h.get('norm_cfg'), act_cfg=h.get('act_cfg'))
        coder = h.get('bbox_coder', {})
        self.coder_cfg = dict(means=tuple(coder.get('target_means', (0.0,) * 4)),
                              stds=tuple(coder.get('target_stds', (1.0,) * 4)),
                              clip_border=bool(coder.get('clip_border', True)))
        test_cfg = {**DEFAULT_TEST_CFG, **(model_cfg.get('test_cfg') or {})}
        self.score_thr = float(test_cfg['score_thr'])
        self.nms_iou = float((test_cfg.get('nms') or {}).get('iou_threshold', 0.45))
        self.max_det = int(test_cfg['max_per_img'])
        self.nms_pre = int(test_cfg.get('nms_pre', -1))
        self.input_size = (int(input_size[0]), int(input_size[1]))  # (w, h)
        self.to_rgb = bool(to_rgb)
        self.register_buffer('pixel_mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('pixel_std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self._anchor_cache: dict = {}
        self.eval()

    # -- network --------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.bbox_head.num_classes

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, input_tensor: torch.Tensor):
        """[N, 3, H, W] normalised input -> (cls_logits [N, A, C+1], bbox_deltas [N, A, 4])."""
        feats = self.neck(self.backbone(input_tensor))
        cls_maps, reg_maps = self.bbox_head(feats)
        # (N, A*K, H, W) -> (N, H, W, A*K) -> (N, H*W*A, K): the (row, column, anchor) order
        cls = torch.cat([flatten_head_map(m, self.bbox_head.cls_out_channels) for m in cls_maps], dim=1)
        reg = torch.cat([flatten_head_map(m, 4) for m in reg_maps], dim=1)
        return cls, reg

    def forward_raw(self, input_tensor: torch.Tensor):
        """Head outputs for a preprocessed batch: (cls_logits [N, A, C+1], bbox_deltas [N, A, 4]),
        level by level, each level flattened (H, W, anchors) — the order of :meth:`anchors`."""
        return self.forward(input_tensor.to(self.device, torch.float32))

    def feature_sizes(self, input_hw=None) -> list:
        """[(h, w)] of every head level for an input of ``input_hw`` (default: input_size)."""
        h, w = input_hw if input_hw is not None else (self.input_size[1], self.input_size[0])
        hs = self.neck.out_sizes(self.backbone.out_sizes(int(h)))
        ws = self.neck.out_sizes(self.backbone.out_sizes(int(w)))
        return list(zip(hs, ws))

    def anchors(self, input_hw=None) -> torch.Tensor:
        """float32 [A, 4] anchors (x1, y1, x2, y2) in input pixels (default input 320x320)."""
        sizes = tuple(self.feature_sizes(input_hw))
        if sizes not in self._anchor_cache:
            c = self.anchor_cfg
            self._anchor_cache[sizes] = ssd_anchors(sizes, c['strides'], c['min_sizes'],
                                                    c['max_sizes'], c['ratios'], c['scale_major'])
        return self._anchor_cache[sizes].to(self.device)

    def level_slices(self, input_hw=None) -> list:
        """Per level the ``slice`` of its anchors in the flattened [A] axis."""
        bounds = np.cumsum([0] + [h * w * (2 + 2 * len(r)) for (h, w), r in
                                  zip(self.feature_sizes(input_hw), self.anchor_cfg['ratios'])])
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    # -- preprocessing ---------------------------------------------------------------------------
    def _resize_batch(self, images) -> tuple:
        """RGB uint8 images -> (uint8 [N, h, w, 3] resized, float32 [N, 4] scale factors)."""
        w_in, h_in = self.input_size
        arrays = [_as_rgb_uint8(im) for im in images]
        resized = np.stack([cv2.resize(a, (w_in, h_in), interpolation=cv2.INTER_LINEAR)
                            for a in arrays])
        # mmcv imresize: w_scale = new_w / w, h_scale = new_h / h, stored as float32 (w, h, w, h)
        scales = np.array([[w_in / a.shape[1], h_in / a.shape[0]] * 2 for a in arrays],
                          dtype=np.float32)
        return resized, scales

    def _normalise(self, resized: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).to(torch.float32)
        if not self.to_rgb:  # the network was trained on BGR
            x = x.flip(1)
        return (x - self.pixel_mean) / self.pixel_std

    def preprocess(self, images) -> torch.Tensor:
        """RGB uint8 image (or list of them) -> normalised float32 [N, 3, 320, 320] tensor,
        exactly mmdet's test pipeline (resize without keeping aspect, bilinear; mean/std)."""
        images = list(images) if _is_batch(images) else [images]
        resized, _ = self._resize_batch(images)
        return self._normalise(resized)

    # -- post-processing -------------------------------------------------------------------------
    def postprocess(self, cls_logits: torch.Tensor, bbox_deltas: torch.Tensor, scale_factors,
                    score_thr: float = 0.02, nms_iou: float = 0.45, max_det: int = 200,
                    nms_pre: int | None = None, input_hw=None) -> list:
        """Head outputs of a batch -> per image (float32 [M, 5] boxes+score, int64 [M] labels).

        mmdet 2.28 ``_get_bboxes_single`` semantics: per level keep class scores ``> score_thr``
        and of those the ``nms_pre`` best; decode against the anchors, clamped to the input;
        divide by ``scale_factors`` [N, 4] (w, h, w, h) to get original pixels; per-class NMS;
        keep ``max_det``.
        """
        nms_pre = self.nms_pre if nms_pre is None else int(nms_pre)
        if input_hw is None:  # the network input the predictions were made on
            input_hw = (self.input_size[1], self.input_size[0])
        anchors = self.anchors(input_hw).to(bbox_deltas.device)
        if anchors.shape[0] != cls_logits.shape[1]:
            raise ValueError(f'{cls_logits.shape[1]} predictions but {anchors.shape[0]} anchors '
                             f'for input {input_hw}; pass input_hw.')
        num_imgs, num_cls = cls_logits.shape[0], self.num_classes
        scores = cls_logits.float().softmax(-1)[..., :num_cls]  # background is last
        boxes = decode_deltas(anchors, bbox_deltas.float(), self.coder_cfg['means'],
                              self.coder_cfg['stds'], max_shape=input_hw,
                              clip_border=self.coder_cfg['clip_border'])
        # Per level, vectorised over the batch: top-k among (anchor, class) pairs above threshold.
        cand_score, cand_anchor, cand_label = [], [], []
        for sl in self.level_slices(input_hw):
            s = scores[:, sl].reshape(num_imgs, -1)
            k = s.shape[1] if nms_pre <= 0 else min(nms_pre, s.shape[1])
            masked = torch.where(s > score_thr, s, torch.full_like(s, float('-inf')))
            top, idx = masked.topk(k, dim=1, sorted=True)
            cand_score.append(top)
            cand_anchor.append(sl.start + torch.div(idx, num_cls, rounding_mode='floor'))
            cand_label.append(idx % num_cls)
        cand_score = torch.cat(cand_score, 1)
        cand_anchor = torch.cat(cand_anchor, 1)
        cand_label = torch.cat(cand_label, 1)
        factors = torch.as_tensor(np.asarray(scale_factors, np.float32).reshape(num_imgs, 4),
                                  device=boxes.device)
        results = []
        for i in range(num_imgs):
            valid = cand_score[i] > score_thr
            sc = cand_score[i][valid]
            bx = boxes[i][cand_anchor[i][valid]] / factors[i]
            lb = cand_label[i][valid]
            keep = batched_nms(bx, sc, lb, nms_iou, max_keep=max_det)
            dets = torch.cat([bx[keep], sc[keep, None]], dim=1)
            results.append((dets.cpu().numpy().astype(np.float32).reshape(-1, 5),
                            lb[keep].cpu().numpy().astype(np.int64)))
        return results

    # -- public detection API --------------------------------------------------------------------
    @torch.inference_mode()
    def detect_with_labels(self, images, score_thr: float = 0.02, nms_iou: float = 0.45,
                           max_det: int = 200) -> list:
        """Like :meth:`detect` for a list of images, returning (dets [M, 5], labels [M]) each."""
        images = list(images)
        if not images:
            return []
        resized, scales = self._resize_batch(images)
        cls_logits, bbox_deltas = self.forward(self._normalise(resized))
        return self.postprocess(cls_logits, bbox_deltas, scales, score_thr, nms_iou, max_det,
                                input_hw=(self.input_size[1], self.input_size[0]))

    def detect(self, images, score_thr: float | None = None, nms_iou: float | None = None,
               max_det: int | None = None):
        """Detect hands.

        Args:
            images: one RGB uint8 image (H, W, 3) — grayscale (H, W)/(H, W, 1), RGBA, 16-bit and
                float ([0, 1] or 0..255) pixels are accepted — or a list of them / an [N, H, W, C]
                array (one batched forward).
            score_thr: keep hand scores strictly above this (``None``: :attr:`score_thr`, the
                config's ``test_cfg.score_thr``).
            nms_iou: NMS IoU threshold (``None``: :attr:`nms_iou`).
            max_det: at most this many boxes per image (``None``: :attr:`max_det`).

        Returns:
            float32 [M, 5] (x1, y1, x2, y2, score) in original image pixels, best first; [0, 5]
            when nothing passes the threshold.  A list of such arrays for a batch input.
        """
        # None: the detector's own defaults (from the config's test_cfg; HandDetector convention)
        score_thr = self.score_thr if score_thr is None else float(score_thr)
        nms_iou = self.nms_iou if nms_iou is None else float(nms_iou)
        max_det = self.max_det if max_det is None else int(max_det)
        batch = _is_batch(images)
        out = self.detect_with_labels(list(images) if batch else [images], score_thr, nms_iou,
                                      max_det)
        dets = [d for d, _ in out]
        return dets if batch else dets[0]

    def detect_hands(self, image_rgb, score_thr: float | None = None) -> Detections:
        """One RGB image -> :class:`Detections`, with :attr:`score_thr` when not given.  A list of
        images (or an [N, H, W, C] array) gives a list of :class:`Detections` (as the palm detector)."""
        thr = self.score_thr if score_thr is None else float(score_thr)
        dets = self.detect(image_rgb, score_thr=thr, nms_iou=self.nms_iou, max_det=self.max_det)
        if isinstance(dets, list):
            return [Detections(d[:, :4], d[:, 4]) for d in dets]
        return Detections(dets[:, :4], dets[:, 4])


# --------------------------------------------------------------------------------------------
# Config checks and building
# --------------------------------------------------------------------------------------------
def _check_model_cfg(cfg: dict) -> dict:
    """Raise a clear ValueError unless ``cfg`` describes the supported SSDLite family."""
    if not isinstance(cfg, dict):
        raise TypeError(f'model config must be a dict; got {type(cfg).__name__}.')
    kind = cfg.get('type')
    if kind not in SUPPORTED['detector']:
        raise _unsupported('detector', kind)
    for part in ('backbone', 'neck', 'bbox_head'):
        sub = cfg.get(part)
        if not isinstance(sub, dict):
            raise ValueError(f'model config has no `{part}` dict; an mmdet SSDLite config needs '
                             'backbone, neck and bbox_head.')
        if sub.get('type') not in SUPPORTED[part]:
            raise _unsupported(part, sub.get('type'))
        conv_cfg = sub.get('conv_cfg')
        if conv_cfg is not None and conv_cfg.get('type', 'Conv2d') not in ('Conv2d', 'Conv'):
            raise ValueError(f'{part}: conv_cfg {conv_cfg} is not supported (plain Conv2d only).')
    head = cfg['bbox_head']
    ag = head.get('anchor_generator') or {}
    if ag.get('type') not in SUPPORTED['anchor_generator']:
        raise _unsupported('anchor_generator', ag.get('type'))
    if ag.get('min_sizes') is None or ag.get('max_sizes') is None:
        raise ValueError('SSDAnchorGenerator without explicit min_sizes/max_sizes (the '
                         'basesize_ratio_range form) is not supported; give min_sizes and '
                         'max_sizes as the SSDLite config does.')
    n_levels = len(ag['strides'])
    if not (len(ag['ratios']) == len(ag['min_sizes']) == len(ag['max_sizes']) == n_levels):
        raise ValueError('SSDAnchorGenerator: strides, ratios, min_sizes and max_sizes need one '
                         'entry per level.')
    coder = head.get('bbox_coder') or {'type': 'DeltaXYWHBBoxCoder'}
    if coder.get('type') not in SUPPORTED['bbox_coder']:
        raise _unsupported('bbox_coder', coder.get('type'))
    if coder.get('add_ctr_clamp'):
        raise ValueError('DeltaXYWHBBoxCoder add_ctr_clamp=True is not supported.')
    if head.get('loss_cls', {}).get('use_sigmoid', False):
        raise ValueError('SSDHead with a sigmoid classifier is not supported (SSD uses softmax).')
    nms_cfg = (cfg.get('test_cfg') or {}).get('nms') or {}
    if nms_cfg.get('type', 'nms') != 'nms':
        raise ValueError(f'test_cfg.nms type {nms_cfg.get("type")!r} is not supported; only '
                         "plain 'nms'.")
    return cfg


def _pipeline_settings(whole_cfg: dict) -> dict:
    """Input size and normalisation from an mmdet ``test_pipeline`` (defaults otherwise)."""
    settings = dict(input_size=DEFAULT_INPUT_SIZE, mean=DEFAULT_MEAN, std=DEFAULT_STD, to_rgb=True)
    pipeline = whole_cfg.get('test_pipeline')
    if pipeline is None:
        pipeline = ((whole_cfg.get('data') or {}).get('test') or {}).get('pipeline')
    steps = []

    def walk(items):
        for step in items or []:
            if isinstance(step, dict):
                steps.append(step)
                walk(step.get('transforms'))

    walk(pipeline)
    for step in steps:
        kind = step.get('type')
        if kind in ('MultiScaleFlipAug', 'Resize') and step.get('img_scale') is not None:
            scale = step['img_scale']
            if isinstance(scale, list) and scale and isinstance(scale[0], (list, tuple)):
                if len(scale) != 1:
                    raise ValueError(f'multi-scale test ({scale}) is not supported.')
                scale = scale[0]
            settings['input_size'] = (int(scale[0]), int(scale[1]))
        if kind == 'Resize' and step.get('keep_ratio', True):  # mmdet's default is True
            raise ValueError('Resize with keep_ratio=True is not supported (SSDLite resizes to '
                             'a fixed size without keeping the aspect ratio).')
        if kind == 'Normalize':
            settings.update(mean=tuple(step['mean']), std=tuple(step['std']),
                            to_rgb=bool(step.get('to_rgb', True)))
    return settings


def _load_weights(detector: nn.Module, checkpoint) -> None:
    """Strictly load a checkpoint path / dict (``torch.load(weights_only=True)``)."""
    state = read_state_dict(checkpoint)
    try:
        check_state_dict(detector, state)
    except CheckpointError as exc:
        raise CheckpointError(f'{exc} (hand detector: the config and detection_model.pth must '
                              'belong together)') from None
    detector.load_state_dict(state, strict=True)


def build_hand_detector(config, checkpoint=None, device='cpu') -> SSDLiteHandDetector:
    """Build the SSDLite hand detector.

    Args:
        config: the mmdet ``model`` dict, a whole mmdet config dict (with ``model`` and
            optionally ``test_pipeline``), or a path to ``config.py`` / ``.json`` (read without
            executing anything, see :mod:`.mmdet_config`) or to a folder holding one.
        checkpoint: path to an mmdet checkpoint (``{'state_dict': ..., 'meta': ...}``) or a
            bare state dict file, or an already loaded dict; loaded strictly.  ``None`` leaves
            random weights.
        device: torch device for the network.

    Raises:
        ValueError: for an architecture other than mmdet's SSDLite family (naming the type
            found and the supported ones).
        modelscope_handkp.checkpoint.CheckpointError: a checkpoint that cannot be read or does
            not fit (lists missing / unexpected / wrongly shaped keys).
    """
    whole = load_mmdet_config(config)
    model_cfg = whole['model'] if isinstance(whole.get('model'), dict) else whole
    if 'type' not in model_cfg:
        raise ValueError('config has no model `type`; expected an mmdet model dict (type='
                         "'SingleStageDetector', backbone=..., neck=..., bbox_head=...).")
    detector = SSDLiteHandDetector(model_cfg, **_pipeline_settings(whole))
    if checkpoint is not None:
        _load_weights(detector, checkpoint)
    return detector.to(device).eval()
