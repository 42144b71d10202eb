"""HRNet backbone (Sun et al., "Deep High-Resolution Representation Learning", 2019).

A readable, configurable implementation whose parameter names are those of the EasyCV /
mmpose-0.x checkpoints (``conv1``, ``bn1``, ``layer1``, ``transition1``, ``stage2`` ...), so
the published HRNet-w18 hand weights load without any key mapping.

The architecture is described by the same ``extra`` dict EasyCV's config uses::

    extra = dict(
        stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(4,), num_channels=(64,)),
        stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(4, 4), num_channels=(18, 36)),
        stage3=dict(num_modules=4, num_branches=3, block='BASIC', num_blocks=(4, 4, 4), num_channels=(18, 36, 72)),
        stage4=dict(num_modules=3, num_branches=4, block='BASIC', num_blocks=(4, 4, 4, 4),
                    num_channels=(18, 36, 72, 144), multiscale_output=True),
        upsample=dict(mode='bilinear', align_corners=False))

Data flow: a stride-4 stem (two 3x3 stride-2 convs), stage 1 (bottlenecks at one resolution),
then stages with 2, 3 and 4 parallel branches at strides 4, 8, 16, 32.  Every module runs its
branches and then *fuses* them: each output branch sums all inputs, brought to its resolution
by upsampling (1x1 conv + BN + upsample) or by strided 3x3 convs.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

BN_MOMENTUM = 0.1

HRNET_W18_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(4, ), num_channels=(64, )),
    stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(4, 4), num_channels=(18, 36)),
    stage3=dict(num_modules=4, num_branches=3, block='BASIC', num_blocks=(4, 4, 4), num_channels=(18, 36, 72)),
    stage4=dict(
        num_modules=3,
        num_branches=4,
        block='BASIC',
        num_blocks=(4, 4, 4, 4),
        num_channels=(18, 36, 72, 144),
        multiscale_output=True),
    upsample=dict(mode='bilinear', align_corners=False),
)


def hrnet_extra(width: int = 18, blocks: int = 4, modules=(1, 1, 4, 3), stem_blocks: int = 4) -> dict:
    """The ``extra`` dict of an HRNet of the given width (w18, w32, w48 or a narrow variant).

    ``blocks`` residual blocks per branch and ``modules`` modules per stage make shallower
    variants (the published model is ``hrnet_extra(18)``).
    """
    widths = [width * 2**i for i in range(4)]
    extra = dict(
        stage1=dict(
            num_modules=modules[0], num_branches=1, block='BOTTLENECK', num_blocks=(stem_blocks, ),
            num_channels=(64, )),
        upsample=dict(mode='bilinear', align_corners=False))
    for s in (2, 3, 4):
        extra[f'stage{s}'] = dict(
            num_modules=modules[s - 1], num_branches=s, block='BASIC', num_blocks=(blocks, ) * s,
            num_channels=tuple(widths[:s]))
    extra['stage4']['multiscale_output'] = True
    return extra


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS = {'BASIC': BasicBlock, 'BOTTLENECK': Bottleneck}


def _make_blocks(block, inplanes: int, planes: int, num_blocks: int, stride: int = 1) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            _bn(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class HRModule(nn.Module):
    """Parallel branches followed by an all-to-all fusion."""

    def __init__(self, block, num_blocks, in_channels, num_channels, multiscale_output=True, upsample=None):
        super().__init__()
        self.num_branches = len(num_channels)
        upsample = upsample or dict(mode='nearest', align_corners=None)
        self.in_channels = list(in_channels)
        self.branches = nn.ModuleList([
            _make_blocks(block, self.in_channels[i], num_channels[i], num_blocks[i])
            for i in range(self.num_branches)
        ])
        self.in_channels = [c * block.expansion for c in num_channels]
        self.fuse_layers = self._make_fuse_layers(multiscale_output, upsample)
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self, multiscale_output, upsample):
        if self.num_branches == 1:
            return None
        ch = self.in_channels
        num_out = self.num_branches if multiscale_output else 1
        fuse_layers = []
        for i in range(num_out):
            row = []
            for j in range(self.num_branches):
                if j > i:  # lower resolution -> 1x1 conv, BN, upsample
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(ch[j], ch[i], 1, bias=False), _bn(ch[i]),
                            nn.Upsample(
                                scale_factor=2**(j - i), mode=upsample['mode'],
                                align_corners=upsample.get('align_corners'))))
                elif j == i:
                    row.append(None)
                else:  # higher resolution -> (i - j) strided 3x3 convs
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = ch[i] if last else ch[j]
                        layers = [_conv3x3(ch[j], cout, stride=2), _bn(cout)]
                        if not last:
                            layers.append(nn.ReLU(inplace=False))
                        steps.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        return nn.ModuleList(fuse_layers)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.num_branches == 1:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            out.append(self.relu(y))
        return out


class HRNet(nn.Module):
    """HRNet backbone; ``forward`` returns the list of branch outputs of the last stage."""

    def __init__(self, extra: dict | None = None, in_channels: int = 3):
        super().__init__()
        self.extra = copy.deepcopy(extra or HRNET_W18_EXTRA)
        upsample = self.extra.get('upsample', dict(mode='nearest', align_corners=None))

        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(64)
        self.relu = nn.ReLU(inplace=True)

        s1 = self.extra['stage1']
        block = BLOCKS[s1['block']]
        self.layer1 = _make_blocks(block, 64, s1['num_channels'][0], s1['num_blocks'][0])
        pre_channels = [s1['num_channels'][0] * block.expansion]

        for s in (2, 3, 4):
            cfg = self.extra[f'stage{s}']
            block = BLOCKS[cfg['block']]
            channels = [c * block.expansion for c in cfg['num_channels']]
            setattr(self, f'transition{s - 1}', self._make_transition(pre_channels, channels))
            stage, pre_channels = self._make_stage(cfg, channels, upsample)
            setattr(self, f'stage{s}', stage)
        self.out_channels = pre_channels

    @staticmethod
    def _make_transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
        layers = []
        for i, cout in enumerate(cur):
            if i < len(pre):
                if cout != pre[i]:
                    layers.append(nn.Sequential(_conv3x3(pre[i], cout), _bn(cout), nn.ReLU(inplace=True)))
                else:
                    layers.append(None)
            else:  # a new, lower-resolution branch grown from the last one
                steps = []
                for j in range(i + 1 - len(pre)):
                    cin = pre[-1]
                    c = cout if j == i - len(pre) else cin
                    steps.append(nn.Sequential(_conv3x3(cin, c, stride=2), _bn(c), nn.ReLU(inplace=True)))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    @staticmethod
    def _make_stage(cfg: dict, in_channels: list[int], upsample: dict):
        block = BLOCKS[cfg['block']]
        multiscale = cfg.get('multiscale_output', True)
        modules = []
        for m in range(cfg['num_modules']):
            last = m == cfg['num_modules'] - 1
            module = HRModule(block, cfg['num_blocks'], in_channels, cfg['num_channels'],
                              multiscale_output=multiscale or not last, upsample=upsample)
            modules.append(module)
            in_channels = module.in_channels
        return nn.Sequential(*modules), in_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for s in (2, 3, 4):
            transition = getattr(self, f'transition{s - 1}')
            # existing branches pass through (or change width); new ones grow from the lowest
            xs = [ys[i] if t is None else t(ys[min(i, len(ys) - 1)]) for i, t in enumerate(transition)]
            ys = getattr(self, f'stage{s}')(xs)
        return ys
