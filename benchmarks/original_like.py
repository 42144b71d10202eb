"""A re-creation of how the original (EasyCV / mmpose 0.x) runs the hand keypoint model.

Benchmark code only — the package never imports it.  It exists so `benchmarks/run.py` can
compare our inference path against something that does the same work the original way:

* one crop at a time: ``cv2.warpAffine`` and ToTensor/Normalize per hand;
* the network in eager PyTorch, BatchNorm as separate layers, NCHW;
* flip test as a *second* forward of the mirrored batch (the original ``TopDown.forward_test``),
  flipped-back heatmaps shifted one pixel right and averaged;
* decoding with per-map / per-keypoint Python loops: one ``cv2.GaussianBlur`` per heatmap,
  one ``_taylor`` (2x2 Hessian inverse with ``np.linalg.inv``) per keypoint, one
  ``transform_preds`` per hand — the structure of mmpose 0.x ``keypoints_from_heatmaps``.

The numbers equal the package's vectorised path (tested in tests/test_backends.py); only the
speed differs.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from modelscope_handkp.transforms import IMAGENET_MEAN, IMAGENET_STD, get_affine_matrix


# ---------------------------------------------------------------------------------------------
# decoding, loop by loop
# ---------------------------------------------------------------------------------------------
def get_max_preds_loop(heatmaps: np.ndarray):
    """Integer argmax (x, y) and peak value of every map; (-1, -1) where the peak is <= 0."""
    n, k, _, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = np.argmax(flat, 2).reshape(n, k, 1)
    maxvals = np.amax(flat, 2).reshape(n, k, 1)
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % w
    preds[:, :, 1] = preds[:, :, 1] // w
    preds = np.where(np.tile(maxvals, (1, 1, 2)) > 0.0, preds, -1)
    return preds, maxvals


def gaussian_blur_loop(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """Blur each map on its own zero-padded canvas and restore its maximum (in place, per map)."""
    border = (kernel - 1) // 2
    n, k, h, w = heatmaps.shape
    for i in range(n):
        for j in range(k):
            peak = np.max(heatmaps[i, j])
            canvas = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
            canvas[border:-border, border:-border] = heatmaps[i, j].copy()
            canvas = cv2.GaussianBlur(canvas, (kernel, kernel), 0)
            heatmaps[i, j] = canvas[border:-border, border:-border].copy()
            heatmaps[i, j] *= peak / np.max(heatmaps[i, j])
    return heatmaps


def taylor_one(log_map: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """One Newton step for one keypoint on its log-heatmap (skipped near borders / singular)."""
    h, w = log_map.shape[:2]
    px, py = int(coord[0]), int(coord[1])
    if 1 < px < w - 2 and 1 < py < h - 2:
        m = log_map
        dx = 0.5 * (m[py][px + 1] - m[py][px - 1])
        dy = 0.5 * (m[py + 1][px] - m[py - 1][px])
        dxx = 0.25 * (m[py][px + 2] - 2 * m[py][px] + m[py][px - 2])
        dxy = 0.25 * (m[py + 1][px + 1] - m[py - 1][px + 1] - m[py + 1][px - 1] + m[py - 1][px - 1])
        dyy = 0.25 * (m[py + 2][px] - 2 * m[py][px] + m[py - 2][px])
        if dxx * dyy - dxy**2 != 0:
            hessian = np.array([[dxx, dxy], [dxy, dyy]])
            grad = np.array([[dx], [dy]])
            step = -np.linalg.inv(hessian) @ grad
            coord += np.squeeze(np.array(step.T), axis=0)
    return coord


def transform_preds_one(coords: np.ndarray, center, scale, output_size) -> np.ndarray:
    """Heatmap coordinates of one hand -> image pixels (no rotation, as the original)."""
    size = np.asarray(scale) * 200.0
    sx, sy = size[0] / output_size[0], size[1] / output_size[1]
    out = np.ones_like(coords)
    out[:, 0] = coords[:, 0] * sx + center[0] - size[0] * 0.5
    out[:, 1] = coords[:, 1] * sy + center[1] - size[1] * 0.5
    return out


def keypoints_from_heatmaps_loop(heatmaps: np.ndarray, centers, scales, post_process='unbiased',
                                 kernel: int = 11):
    """(coords [N, K, 2], scores [N, K, 1]) the loop way; ``heatmaps`` is not modified."""
    heatmaps = heatmaps.copy()
    n, k, h, w = heatmaps.shape
    preds, maxvals = get_max_preds_loop(heatmaps)
    if post_process == 'unbiased':
        log_maps = np.log(np.maximum(gaussian_blur_loop(heatmaps, kernel), 1e-10))
        for i in range(n):
            for j in range(k):
                preds[i][j] = taylor_one(log_maps[i][j], preds[i][j])
    elif post_process is not None:
        for i in range(n):
            for j in range(k):
                m = heatmaps[i][j]
                px, py = int(preds[i][j][0]), int(preds[i][j][1])
                if 1 < px < w - 1 and 1 < py < h - 1:
                    diff = np.array([m[py][px + 1] - m[py][px - 1], m[py + 1][px] - m[py - 1][px]])
                    preds[i][j] += np.sign(diff) * .25
    for i in range(n):
        preds[i] = transform_preds_one(preds[i], centers[i], scales[i], [w, h])
    return preds, maxvals


# ---------------------------------------------------------------------------------------------
# the whole top-down step, the original way
# ---------------------------------------------------------------------------------------------
def crop_one(image_rgb: np.ndarray, center, scale, image_size=(256, 256)) -> torch.Tensor:
    """One normalised crop [3, H, W] (warpAffine, ToTensor, Normalize)."""
    m = get_affine_matrix(center, scale, 0.0, image_size)
    crop = cv2.warpAffine(image_rgb, m, (int(image_size[0]), int(image_size[1])), flags=cv2.INTER_LINEAR)
    t = torch.from_numpy(crop.transpose(2, 0, 1).copy()).float() / 255.0
    mean = torch.from_numpy(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.from_numpy(IMAGENET_STD).view(3, 1, 1)
    return (t - mean) / std


@torch.no_grad()
def heatmaps_two_forwards(model, crops: torch.Tensor, flip_test: bool = True, shift: bool = True) -> np.ndarray:
    """The original ``forward_test``: a forward, then (flip test) a second forward of the mirror."""
    out = model(crops).numpy()
    if flip_test:
        flipped = model(crops.flip(3)).numpy()[..., ::-1]
        if shift:
            flipped = np.concatenate([flipped[..., :1], flipped[..., :-1]], axis=-1)
        out = (out + flipped) * 0.5
    return out


def predict_original_like(model, image_rgb: np.ndarray, centers, scales, flip_test: bool = True,
                          post_process='unbiased', kernel: int = 11):
    """Image + hand boxes (as centers/scales) -> (coords, scores) with the original's structure."""
    size = tuple(model.input_size)
    crops = torch.stack([crop_one(image_rgb, c, s, size) for c, s in zip(centers, scales)])
    heatmaps = heatmaps_two_forwards(model, crops, flip_test, getattr(model, 'shift_heatmap', True))
    return keypoints_from_heatmaps_loop(heatmaps, centers, scales, post_process, kernel)


if __name__ == '__main__':  # a module of benchmarks/run.py, not a command: say so instead of exiting silently
    print(__doc__.strip())
    print('\nNothing to run here: python benchmarks/run.py times this module against the package.')
