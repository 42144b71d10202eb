"""Heatmap codec: keypoints <-> Gaussian heatmaps, as one symmetric object.

``encode`` makes training targets (MSRA Gaussians, integer-centred as EasyCV/mmpose 0.x, or
sub-pixel "unbiased" Gaussians) and target weights; ``decode`` turns predicted heatmaps back
into image coordinates with one of three post-processing modes:

* ``'unbiased'`` — DARK (Zhang et al., "Distribution-Aware Coordinate Representation for
  Human Pose Estimation", CVPR 2020): argmax, max-preserving Gaussian blur of kernel ``k``,
  log, then one second-order Taylor (Newton) step around the argmax.
* ``'default'`` — argmax plus a quarter-pixel shift toward the higher neighbour.
* ``None`` — plain argmax.

Everything is vectorised over hands and keypoints; the numbers equal EasyCV's
``keypoints_from_heatmaps`` (see tests/test_codec.py).
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np

from .transforms import heatmap_to_image, to_numpy

POST_PROCESS_MODES = ('unbiased', 'default', None)


def _to_numpy(x) -> np.ndarray:
    return np.asarray(to_numpy(x), dtype=np.float32)


def argmax_2d(heatmaps: np.ndarray):
    """Integer peak positions [N, K, 2] (float32, -1 where the peak is <= 0) and peak values [N, K, 1]."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2).astype(np.float32)
    preds = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    preds = np.where(maxvals > 0.0, preds, np.float32(-1.0))
    return preds, maxvals


def gaussian_blur_max_preserving(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """Blur every map with a zero-padded k x k Gaussian (sigma from OpenCV's rule), then
    rescale it so its maximum equals the original maximum.

    All maps are stacked into one tall image, each with its own zero border, so a single
    OpenCV call blurs them all and no map leaks into its neighbour.
    """
    if kernel % 2 != 1:
        raise ValueError(f'the blur kernel must be odd, got {kernel}')
    n, k, h, w = heatmaps.shape
    b = (kernel - 1) // 2
    tiles = np.zeros((n * k, h + 2 * b, w + 2 * b), dtype=np.float32)
    tiles[:, b:b + h, b:b + w] = heatmaps.reshape(n * k, h, w)
    blurred = cv2.GaussianBlur(tiles.reshape(n * k * (h + 2 * b), w + 2 * b), (kernel, kernel), 0)
    blurred = blurred.reshape(n * k, h + 2 * b, w + 2 * b)[:, b:b + h, b:b + w]
    orig_max = heatmaps.reshape(n * k, -1).max(axis=1)
    new_max = blurred.reshape(n * k, -1).max(axis=1)
    with np.errstate(divide='ignore', invalid='ignore'):
        blurred = blurred * (orig_max / new_max)[:, None, None]
    return blurred.reshape(n, k, h, w).astype(np.float32)


def _neighbours(maps: np.ndarray, preds: np.ndarray, reach: int, low: int):
    """(valid [N,K], at(dy, dx) -> [N,K]): values of ``maps`` [N,K,H,W] next to each integer peak.

    A peak is valid when ``low < x < W - reach`` and likewise in y (the original's border rules);
    invalid peaks read in-bounds pixels (clamped to the map, also on maps smaller than the window;
    their values are ignored by the callers)."""
    n, k, h, w = maps.shape
    px = np.trunc(preds[..., 0]).astype(np.int64)
    py = np.trunc(preds[..., 1]).astype(np.int64)
    valid = (px > low) & (px < w - reach) & (py > low) & (py < h - reach)
    pxc = np.where(valid, px, reach)
    pyc = np.where(valid, py, reach)
    flat = maps.reshape(n, k, h * w)

    def at(dy, dx):
        index = np.clip(pyc + dy, 0, h - 1) * w + np.clip(pxc + dx, 0, w - 1)
        return np.take_along_axis(flat, index[..., None], axis=2)[..., 0]

    return valid, at


def taylor_refine(log_heatmaps: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """One Newton step on the log-heatmap around each integer peak (DARK).

    Points within two pixels of the border, or with a singular Hessian, are left unchanged.
    """
    preds = preds.copy()
    valid, at = _neighbours(log_heatmaps, preds, reach=2, low=1)
    c = at(0, 0)
    dx = np.float32(0.5) * (at(0, 1) - at(0, -1))
    dy = np.float32(0.5) * (at(1, 0) - at(-1, 0))
    dxx = np.float32(0.25) * (at(0, 2) - 2 * c + at(0, -2))
    dxy = np.float32(0.25) * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = np.float32(0.25) * (at(2, 0) - 2 * c + at(-2, 0))
    det = dxx * dyy - dxy**2
    ok = valid & (det != 0)
    safe = np.where(ok, det, np.float32(1.0))
    off_x = -(dyy * dx - dxy * dy) / safe
    off_y = -(dxx * dy - dxy * dx) / safe
    preds[..., 0] += np.where(ok, off_x, 0).astype(np.float32)
    preds[..., 1] += np.where(ok, off_y, 0).astype(np.float32)
    return preds


def quarter_offset(heatmaps: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Shift each integer peak a quarter pixel toward its higher neighbour (mmpose 'default')."""
    preds = preds.copy()
    valid, at = _neighbours(heatmaps, preds, reach=1, low=1)

    diff = np.stack([at(0, 1) - at(0, -1), at(1, 0) - at(-1, 0)], axis=-1)
    preds += np.where(valid[..., None], np.sign(diff) * np.float32(0.25), 0).astype(np.float32)
    return preds


def warn_non_finite_heatmaps(bad: int, total: int, stacklevel: int = 2) -> None:
    """The RuntimeWarning of both decoders for heatmaps holding NaN/inf values."""
    warnings.warn(f'{bad} of {total} heatmaps contain NaN or infinite values; their keypoints and scores are '
                  'meaningless (NaN, or the "no peak" point). Check the network input and weights (a float16 '
                  'overflow?).', RuntimeWarning, stacklevel=stacklevel + 1)


def decode_heatmaps(heatmaps, centers, scales, post_process: str | None = 'unbiased', kernel: int = 11,
                    rotations=None):
    """Heatmaps [N, K, H, W] -> (coords float32 [N, K, 2] in image pixels, scores float32 [N, K, 1]).

    ``centers``/``scales`` (and optional ``rotations``) describe each hand's crop (see
    :mod:`modelscope_handkp.transforms`).  The score of a keypoint is its heatmap peak.
    """
    if post_process not in POST_PROCESS_MODES:
        raise ValueError(f'post_process must be one of {POST_PROCESS_MODES}, got {post_process!r}')
    hm = _to_numpy(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f'heatmaps must be [N, K, H, W], got shape {hm.shape}')
    n, k, h, w = hm.shape
    if n == 0:
        return np.zeros((0, k, 2), np.float32), np.zeros((0, k, 1), np.float32)
    # crop geometry may come as tensors too (CUDA, requiring grad): NumPy cannot read those itself
    centers, scales = _to_numpy(centers), _to_numpy(scales)
    rotations = None if rotations is None else _to_numpy(rotations)
    preds, maxvals = argmax_2d(hm)
    if post_process == 'unbiased':
        log_hm = np.log(np.maximum(gaussian_blur_max_preserving(hm, kernel), np.float32(1e-10)))
        preds = taylor_refine(log_hm, preds)
    elif post_process == 'default':
        preds = quarter_offset(hm, preds)
    coords = heatmap_to_image(preds, centers, scales, heatmap_size=(w, h), rotations=rotations)
    # a NaN or +inf pixel anywhere in a map makes its peak value non-finite: checking N x K results is enough
    bad = ~(np.isfinite(coords).all(axis=-1) & np.isfinite(maxvals[..., 0]))
    if bad.any():
        warn_non_finite_heatmaps(int(bad.sum()), bad.size, stacklevel=2)
    return coords, maxvals


class HeatmapCodec:
    """Gaussian heatmap encoding and DARK decoding for top-down keypoint models.

    Args:
        input_size: crop size (w, h) the keypoints of :meth:`encode` are given in.
        heatmap_size: heatmap size (w, h).
        sigma: Gaussian sigma in heatmap pixels.
        unbiased_encoding: draw the Gaussian at the exact sub-pixel position (DARK's unbiased
            encoding) instead of at the nearest integer pixel (MSRA, the published model).
        post_process: ``'unbiased'`` (DARK), ``'default'`` or ``None``; see module docs.
        kernel: Gaussian blur kernel for DARK decoding.
        zero_outside: give weight 0 to keypoints whose centre falls outside the heatmap.  The
            original only zeroed keypoints whose whole 6-sigma window was outside, training
            partial Gaussians at the border; ``False`` reproduces that exactly.
    """

    def __init__(self, input_size=(256, 256), heatmap_size=(64, 64), sigma: float = 3.0,
                 unbiased_encoding: bool = False, post_process: str | None = 'unbiased', kernel: int = 11,
                 zero_outside: bool = True):
        if post_process not in POST_PROCESS_MODES:
            raise ValueError(f'post_process must be one of {POST_PROCESS_MODES}, got {post_process!r}')
        self.input_size = tuple(int(v) for v in input_size)
        self.heatmap_size = tuple(int(v) for v in heatmap_size)
        self.sigma = float(sigma)
        if not (np.isfinite(self.sigma) and self.sigma > 0):  # sigma 0 drew 0/0 = NaN at every centre
            raise ValueError(f'sigma must be a positive number of heatmap pixels, got {sigma!r}')
        self.unbiased_encoding = bool(unbiased_encoding)
        self.post_process = post_process
        self.kernel = int(kernel)
        self.zero_outside = bool(zero_outside)

    def __repr__(self):
        return (f'HeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, sigma={self.sigma}, '
                f'unbiased_encoding={self.unbiased_encoding}, post_process={self.post_process!r}, '
                f'kernel={self.kernel})')

    def encode(self, keypoints, visible):
        """Keypoints [(N,) K, 2] in input-crop pixels, visibility [(N,) K] ->
        (target float32 [(N,) K, h, w], target_weight float32 [(N,) K, 1]).

        As the original: the weight is the visibility clipped to [0, 1] (0 off the heatmap, see
        ``zero_outside``), and a Gaussian is drawn only where the weight is > 0.5."""
        kp = np.asarray(keypoints, dtype=np.float32)
        single = kp.ndim == 2
        kp = kp.reshape(-1, kp.shape[-2], 2)
        vis = np.asarray(visible, dtype=np.float32).reshape(kp.shape[0], kp.shape[1])
        w, h = self.heatmap_size
        stride = np.array(self.input_size, np.float32) / np.array(self.heatmap_size, np.float32)
        mu = kp / stride  # [N, K, 2] in heatmap pixels
        # the original's rule (mmpose 0.x / EasyCV TopDownGenerateTarget): the weight IS the visibility
        # (COCO-WholeBody hand visibilities are confidences in [0, 1]; the dataset keeps min(1, v)), and
        # the Gaussian is drawn only where it is > 0.5 -- a low-confidence keypoint trains, at its small
        # weight, toward an empty map
        weight = np.clip(np.nan_to_num(vis, nan=0.0), 0.0, 1.0).astype(np.float32)
        # NaN/inf coordinates (unlabelled keypoints) train nothing: weight 0 and an empty map (the original
        # raised on int(nan) or drew a NaN map, which a zero weight does not cancel: NaN * 0 = NaN)
        finite = np.isfinite(mu).all(axis=-1)
        weight[~finite] = 0
        mu = np.where(finite[..., None], mu, np.float32(0.0))
        tmp = self.sigma * 3
        if self.unbiased_encoding:
            lo, hi = mu - tmp, mu + tmp + 1
            centre = mu
        else:
            mu = np.trunc(mu + np.float32(0.5))  # int(x + 0.5) as the original
            lo, hi = np.trunc(mu - tmp), np.trunc(mu + tmp + 1)
            # the original pastes g[i] = exp(-(i - x0)^2 / 2 sigma^2), x0 = (2 tmp + 1) // 2, i = 0, 1, ... at
            # pixel ul + i, ul = int(mu - tmp), over the pixels ul <= x < br = int(mu + tmp + 1): the patch is
            # centred on ul + x0, which is mu for an integer 3 sigma; otherwise (sigma 1.5, 2.5 ...) it is
            # asymmetric, and one pixel off where int() truncates a negative mu - tmp toward zero
            centre = lo + np.float32((2 * tmp + 1) // 2)
        window_out = (lo[..., 0] >= w) | (lo[..., 1] >= h) | (hi[..., 0] < 0) | (hi[..., 1] < 0)
        weight[window_out] = 0
        if self.zero_outside:
            inside = (mu[..., 0] >= 0) & (mu[..., 0] <= w - 1) & (mu[..., 1] >= 0) & (mu[..., 1] <= h - 1)
            weight[~inside] = 0
        xs = np.arange(w, dtype=np.float32)
        ys = np.arange(h, dtype=np.float32)
        dx = xs[None, None, None, :] - centre[..., 0, None, None]
        dy = ys[None, None, :, None] - centre[..., 1, None, None]
        target = np.exp(-(dx**2 + dy**2) / np.float32(2 * self.sigma**2)).astype(np.float32)
        if not self.unbiased_encoding:  # the original's (br - ul)-pixel patch
            xs4, ys4 = xs[None, None, None, :], ys[None, None, :, None]
            target *= ((xs4 >= lo[..., 0, None, None]) & (xs4 < hi[..., 0, None, None])
                       & (ys4 >= lo[..., 1, None, None]) & (ys4 < hi[..., 1, None, None]))
        target *= (weight > 0.5)[..., None, None]
        weight = weight[..., None]
        if single:
            return target[0], weight[0]
        return target, weight

    def decode(self, heatmaps, centers, scales, rotations=None):
        """Heatmaps [N, K, h, w] -> (coords [N, K, 2] image pixels, scores [N, K, 1])."""
        return decode_heatmaps(heatmaps, centers, scales, self.post_process, self.kernel, rotations)

    def decode_to_input(self, heatmaps):
        """Heatmaps -> coordinates in input-crop pixels (for the encode/decode round trip)."""
        hm = _to_numpy(heatmaps)
        n = hm.shape[0]
        w, h = self.input_size
        centers = np.tile(np.array([[w / 2, h / 2]], np.float32), (n, 1))
        scales = np.tile(np.array([[w / 200.0, h / 200.0]], np.float32), (n, 1))
        return self.decode(hm, centers, scales)
