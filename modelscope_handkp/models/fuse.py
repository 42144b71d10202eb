"""Fold BatchNorm layers into the convolutions that feed them, for fast inference.

In eval mode a ``BatchNorm2d`` is a per-channel affine map ``y = a * x + b`` with
``a = gamma / sqrt(var + eps)`` and ``b = beta - a * mean``.  When its only input is the output
of a ``Conv2d`` (and that output goes nowhere else) the two collapse into one convolution with
weights ``W * a`` (per output channel) and bias ``a * (bias - mean) + beta``.  HRNet-w18 has
~300 such pairs; folding them removes a full read/write pass over every feature map per BN.

:func:`fold_batchnorm` works on a *copy* of the model and keeps its module tree and attributes
(``input_size``, ``forward_heatmaps``, ...): folded BNs become ``nn.Identity``.  Which BN follows
which conv is read from a ``torch.fx`` trace of the model (so the rule "the conv output feeds
only the BN" is checked, not assumed); when a model cannot be traced, consecutive
``Conv2d -> BatchNorm2d`` pairs inside ``nn.Sequential`` containers are folded instead.  Modules
with shared weights (called at several places, or registered under several names) and BNs without
running statistics are left as they are.

The result is eval-only: calling ``.train()`` on it raises, because a folded model has no
batch statistics left to train.
"""
from __future__ import annotations

import copy
import logging
import types

import torch
from torch import nn

__all__ = ['fold_batchnorm', 'fold_conv_bn', 'conv_bn_pairs', 'is_folded']

logger = logging.getLogger(__name__)

_FOLDED_ATTR = '_handkp_bn_folded'


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` equal to ``bn(conv(x))`` in eval mode (computed in float64, stored in
    the conv's dtype)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError('cannot fold a BatchNorm2d without running statistics (track_running_stats=False)')
    dtype = conv.weight.dtype
    w = conv.weight.detach().to(torch.float64)
    mean = bn.running_mean.detach().to(torch.float64)
    var = bn.running_var.detach().to(torch.float64)
    gamma = bn.weight.detach().to(torch.float64) if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().to(torch.float64) if bn.bias is not None else torch.zeros_like(mean)
    bias = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros_like(mean)
    a = gamma / torch.sqrt(var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device, dtype=dtype)
    fused.weight.copy_((w * a.reshape(-1, 1, 1, 1)).to(dtype))
    fused.bias.copy_((a * (bias - mean) + beta).to(dtype))
    fused.requires_grad_(False)
    return fused


def _pairs_from_fx(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where the BN's only input is a conv output used nowhere else."""
    import torch.fx

    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}  # call sites per module: a module called twice (shared weights) cannot be folded
    for node in graph.nodes:
        if node.op == 'call_module':
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    shared = _shared_modules(model)
    pairs = []
    for node in graph.nodes:
        if node.op != 'call_module' or not _foldable_bn(modules.get(node.target)):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == 'call_module'
                and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1
                and calls[str(src.target)] == 1 and calls[str(node.target)] == 1
                and not {str(src.target), str(node.target)} & shared):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _foldable_bn(mod) -> bool:
    """A BatchNorm2d with running statistics (without them eval mode normalises by batch statistics)."""
    return isinstance(mod, nn.BatchNorm2d) and mod.running_mean is not None and mod.running_var is not None


def _shared_modules(model: nn.Module) -> set[str]:
    """Names of modules registered under more than one name (one object, shared weights)."""
    names: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        names.setdefault(id(mod), []).append(name)
    return {n for group in names.values() if len(group) > 1 for n in group}


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    """Consecutive Conv2d -> BatchNorm2d children of every nn.Sequential."""
    shared = _shared_modules(model)
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        children = list(mod.named_children())
        for (n1, m1), (n2, m2) in zip(children, children[1:]):
            prefix = f'{name}.' if name else ''
            if (isinstance(m1, nn.Conv2d) and _foldable_bn(m2)
                    and not {prefix + n1, prefix + n2} & shared):
                pairs.append((prefix + n1, prefix + n2))
    return pairs


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (conv, bn) module names of ``model`` that can be folded."""
    try:
        return _pairs_from_fx(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure falls back to the structural rule
        logger.info('torch.fx cannot trace %s (%s); folding Conv2d->BatchNorm2d pairs inside '
                    'nn.Sequential only', type(model).__name__, e)
        return _pairs_from_sequentials(model)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _eval_only_train(self, mode: bool = True):
    if mode:
        raise RuntimeError('this model has its BatchNorm layers folded into the convolutions (inference '
                           'only); train the original model instead of the one from fold_batchnorm().')
    return nn.Module.train(self, False)


def is_folded(model: nn.Module) -> bool:
    return bool(getattr(model, _FOLDED_ATTR, False))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-only copy of ``model`` with every foldable ``Conv2d -> BatchNorm2d`` pair fused.

    The original model is not modified.  Outputs equal the original's eval-mode outputs up to
    float32 rounding (relative differences ~1e-6).
    """
    folded = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(folded)
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        _set_module(folded, conv_name, fold_conv_bn(conv, bn))
        _set_module(folded, bn_name, nn.Identity())
    folded.requires_grad_(False)
    setattr(folded, _FOLDED_ATTR, True)
    folded.num_folded_bn = len(pairs)
    folded.train = types.MethodType(_eval_only_train, folded)
    return folded
