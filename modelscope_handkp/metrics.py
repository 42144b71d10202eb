"""Keypoint metrics with EasyCV's (mmpose 0.x) exact definitions.

* ``PCK``: a keypoint is correct when its error is below ``pck_thr`` x max(w, h) of the GT hand
  box; accuracy is computed per keypoint over the visible instances, then averaged over the
  keypoints that were visible at least once.
* ``AUC``: the mean PCK over the 20 pixel thresholds 0, 1.5, ..., 28.5 (``auc_norm`` = 30 px).
* ``EPE``: mean end-point error in pixels over visible keypoints.
* ``NME``: the same mean error with a unit normaliser, as EasyCV computes it for hands.

Distances are stored as float32 and summed in the original's order, and the thresholds are compared
in float32 (the original compares float32 distances with Python-float thresholds, which NumPy does
in float32), so the numbers are identical, also for errors that fall exactly on a threshold.  As in
the original, the AUC normaliser is an integer/float64 array (float64 division) and the PCK normaliser
keeps the dtype of the boxes (float64 for Python lists, float32 for float32 arrays).
"""
from __future__ import annotations

import numpy as np


def _distances(pred, gt, mask, normalize) -> np.ndarray:
    """Normalised distances [K, N] (float32), -1 where the keypoint is not visible."""
    n, k, _ = pred.shape
    mask = mask.copy()
    normalize = np.array(normalize, copy=True)  # its dtype sets the division's precision, as the original
    mask[(normalize == 0).sum(1) > 0, :] = False
    normalize[normalize <= 0] = 1e6
    dist = np.full((n, k), -1, dtype=np.float32)
    diff = (pred - gt) / normalize[:, None, :]
    dist[mask] = np.linalg.norm(diff[mask], axis=-1)  # float64 for float64 normalisers, then stored as float32
    return dist.T


def _pck_from_distances(dist: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Mean PCK for each threshold, from [K, N] distances; keypoints never visible are skipped."""
    valid = dist != -1
    count = valid.sum(axis=1)  # [K]
    # float32 thresholds: the original's ``distances < thr`` (thr a Python float) compares in float32, so a
    # distance equal to float32(thr) is a miss even where float32(thr) < thr (e.g. 0.35, 10.5 px at norm 30)
    thr32 = np.asarray(thresholds, dtype=np.float32)
    hits = ((dist[None] < thr32[:, None, None]) & valid[None]).sum(axis=2)  # [T, K]
    seen = count > 0
    if not seen.any():
        return np.zeros(len(thresholds), dtype=np.float64)
    acc = hits[:, seen] / count[seen]
    return acc.mean(axis=1)


def _mean_valid(dist: np.ndarray) -> float:
    d = dist[dist != -1]
    return float(d.sum()) / max(1, len(d))  # float32 sum, float64 division, as the original


def keypoint_metrics(pred, gt, visible, bbox_xywh, pck_thr: float = 0.2, auc_norm: float = 30.0,
                     auc_steps: int = 20) -> dict:
    """PCK, AUC, EPE and NME of predictions [N, K, 2] against ground truth [N, K, 2].

    ``visible`` [N, K] (> 0 counts), ``bbox_xywh`` [N, 4] GT hand boxes for the PCK normaliser.
    With no visible keypoint at all every metric is 0.0 (never NaN).
    """
    pred = np.asarray(pred, dtype=np.float32)
    gt = np.asarray(gt, dtype=np.float32)
    if pred.size == 0 and gt.size == 0:
        return {'PCK': 0.0, 'AUC': 0.0, 'EPE': 0.0, 'NME': 0.0}
    pred, gt = (a[None] if a.ndim == 2 else a for a in (pred, gt))  # one hand [K, 2]
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != gt.shape:
        raise ValueError(f'pred and gt must both be [N, K, 2] (x, y; or one hand [K, 2]), got {pred.shape} and '
                         f'{gt.shape}; pass keypoints[..., :2] and the visibility separately.')
    n = pred.shape[0]
    if n == 0:
        return {'PCK': 0.0, 'AUC': 0.0, 'EPE': 0.0, 'NME': 0.0}
    mask = np.asarray(visible).reshape(n, -1) > 0
    box = np.asarray(bbox_xywh)
    if box.dtype not in (np.float32, np.float64):
        box = box.astype(np.float64)  # lists / ints: float64, as np.array(item['bbox']) in the original
    box = box.reshape(n, 4)
    side = np.max(box[:, 2:], axis=1)
    bbox_norm = np.stack([side, side], axis=1)
    pck = _pck_from_distances(_distances(pred, gt, mask, bbox_norm), np.array([pck_thr], np.float64))[0]
    # the original tiles np.array([[auc_nor, auc_nor]]) (int64 or float64): the division runs in float64
    px = _distances(pred, gt, mask, np.full((n, 2), auc_norm, np.float64))
    thresholds = np.arange(auc_steps, dtype=np.float64) / auc_steps
    auc = float(np.sum(_pck_from_distances(px, thresholds) / auc_steps))
    unit = _distances(pred, gt, mask, np.ones((n, 2), np.float32))
    epe = _mean_valid(unit)
    return {'PCK': float(pck), 'AUC': auc, 'EPE': epe, 'NME': epe}
