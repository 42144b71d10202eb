"""Greedy non-maximum suppression in PyTorch (NumPy arrays accepted), no compiled ops.

Semantics follow mmcv 1.x ``nms`` (used by mmdet 2.x):

* boxes are (x1, y1, x2, y2) floats, areas ``(x2 - x1) * (y2 - y1)`` (no ``+1`` offset);
* boxes are visited in descending score order; a box is dropped when its IoU with an
  already kept box is ``>= iou_threshold``;
* IoU is computed in the boxes' dtype (float32 for detector outputs), as
  ``inter / (area_i + area_j - inter)``.

:func:`batched_nms` runs NMS independently per category with the usual coordinate-offset
trick (each category's boxes are moved to a disjoint region), like mmcv's ``batched_nms``
(identical results for a single category);
with ``class_agnostic=True`` it is plain :func:`nms`.

The greedy loop runs once per *kept* box; each iteration is one vectorised IoU of the kept box
against all remaining candidates, so the cost is O(kept x candidates) time and O(candidates)
memory.  ``max_keep`` stops early once enough boxes are kept (same result as truncating).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ['nms', 'batched_nms', 'box_iou']


def _as_tensor(x, dtype=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    return torch.from_numpy(np.ascontiguousarray(x)) if dtype is None else \
        torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


def box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of one box [4] (or [1, 4]) against boxes [M, 4] -> [M] (mmcv's formula)."""
    box = box.reshape(4)
    inter_w = (torch.minimum(box[2], boxes[:, 2]) - torch.maximum(box[0], boxes[:, 0])).clamp_(min=0)
    inter_h = (torch.minimum(box[3], boxes[:, 3]) - torch.maximum(box[1], boxes[:, 1])).clamp_(min=0)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


def _greedy(boxes: torch.Tensor, order: torch.Tensor, iou_threshold: float,
            max_keep: int | None) -> torch.Tensor:
    """Indices (into ``boxes``) kept by greedy NMS visiting ``order`` (best first)."""
    sorted_boxes = boxes[order]
    remaining = torch.arange(order.numel(), device=boxes.device)
    kept = []
    limit = order.numel() if max_keep is None or max_keep < 0 else int(max_keep)
    while remaining.numel() > 0 and len(kept) < limit:
        best = remaining[0]
        kept.append(best)
        rest = remaining[1:]
        if rest.numel() == 0:
            break
        iou = box_iou(sorted_boxes[best], sorted_boxes[rest])
        # ``~(iou >= thr)`` rather than ``iou < thr`` keeps NaN IoUs (degenerate boxes), as mmcv.
        remaining = rest[~(iou >= iou_threshold)]
    if not kept:
        return order.new_zeros((0,))
    return order[torch.stack(kept)]


def _return_like(keep: torch.Tensor, like):
    return keep if isinstance(like, torch.Tensor) else keep.cpu().numpy().astype(np.int64)


def nms(boxes, scores, iou_threshold: float, max_keep: int | None = None):
    """Class-agnostic greedy NMS.

    Args:
        boxes: [M, 4] (x1, y1, x2, y2), torch tensor or NumPy array.
        scores: [M].
        iou_threshold: drop boxes whose IoU with a kept box is ``>=`` this.
        max_keep: keep at most this many (best first); ``None`` or negative = all.

    Returns:
        int64 indices of the kept boxes, highest score first (same kind as ``boxes``).
        Equal scores keep their input order (stable sort); NaN scores count as the lowest.
    """
    b = _as_tensor(boxes)
    s = _as_tensor(scores).reshape(-1)
    if b.ndim != 2 or b.shape[-1] != 4 or b.shape[0] != s.shape[0]:
        raise ValueError(f'nms expects boxes [M, 4] and scores [M]; got {tuple(b.shape)} and '
                         f'{tuple(s.shape)}.')
    if b.shape[0] == 0:
        return _return_like(torch.zeros((0,), dtype=torch.int64), boxes)
    # NaN scores rank last (torch's sort would put them first, so that a NaN-scored box would be
    # kept and suppress the real best box); NumPy's argsort of -scores does the same.
    key = torch.where(torch.isnan(s), torch.full_like(s, float('-inf')), s) if s.is_floating_point() else s
    order = torch.sort(key, descending=True, stable=True).indices
    return _return_like(_greedy(b, order, float(iou_threshold), max_keep), boxes)


def batched_nms(boxes, scores, labels, iou_threshold: float, max_keep: int | None = None,
                class_agnostic: bool = False):
    """Per-category greedy NMS in one pass (mmcv ``batched_nms`` semantics).

    ``labels`` [M] are integer categories; boxes of different categories never suppress
    each other (unless ``class_agnostic``).  Returns kept indices, highest score first.
    """
    b = _as_tensor(boxes)
    if class_agnostic or b.shape[0] == 0:
        return nms(boxes, scores, iou_threshold, max_keep)
    lab = _as_tensor(labels).reshape(-1).to(device=b.device)
    if lab.shape[0] != b.shape[0]:
        raise ValueError(f'batched_nms: {b.shape[0]} boxes but {lab.shape[0]} labels.')
    # Move every category to its own region so that IoU across categories is zero (mmcv
    # uses ``max + 1`` as the span, which assumes coordinates >= -1; ``max - min + 1`` does not).
    offsets = lab.to(b.dtype) * (b.max() - b.min() + 1)
    shifted = b + offsets[:, None]
    keep = nms(shifted, _as_tensor(scores), iou_threshold, max_keep)
    return _return_like(keep, boxes)
