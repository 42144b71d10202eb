"""Heatmap decoding (argmax, quarter offset, DARK) written in torch ops only.

The same numbers as :func:`modelscope_handkp.codec.decode_heatmaps` (NumPy + OpenCV), but built
from operations that trace into an ONNX graph (``ArgMax``/``ReduceMax``, ``Conv``,
``GatherElements``, ``Where`` ...), so a deployed model can carry its DARK decoding inside the
graph.  Everything is batched over hands and keypoints; nothing loops in Python at run time.

DARK ('unbiased') step by step, as in the reference implementation:

1. integer argmax of every map and its value (the keypoint score); a map whose maximum is
   ``<= 0`` gives the point ``(-1, -1)``;
2. a zero-padded ``k x k`` Gaussian blur — separable, two fixed 1-D convolutions with OpenCV's
   sigma rule ``0.3 * ((k - 1) * 0.5 - 1) + 0.8`` — rescaled so each map keeps its maximum;
3. ``log(max(blurred, 1e-10))``;
4. one Newton step ``-H^-1 g`` with central differences around the integer peak, skipped for
   peaks within two pixels of the border or where ``det(H) == 0``.

Coordinates are then mapped from heatmap pixels to image pixels with the crop's center, scale
(in 200 px units) and optional rotation (degrees), as :func:`transforms.heatmap_to_image`.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import nn

__all__ = ['gaussian_kernel_1d', 'blur_matrix', 'argmax_2d', 'gaussian_blur_max_preserving', 'taylor_refine',
           'quarter_offset', 'heatmap_to_image', 'decode_heatmaps', 'peak_curvature', 'HeatmapDecoder', 'POST_PROCESS_MODES']

POST_PROCESS_MODES = ('unbiased', 'default', None)
PIXEL_STD = 200.0

# (dy, dx) neighbours read by the Newton step, in the order of the columns of ``_gather``
_TAYLOR_OFFSETS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (0, 2), (0, -2), (2, 0), (-2, 0),
                   (1, 1), (-1, 1), (1, -1), (-1, -1))
_QUARTER_OFFSETS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def gaussian_kernel_1d(kernel: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel(kernel, 0)`` (float64, then cast), taken from OpenCV itself: for
    sizes up to 7 OpenCV uses fixed tables that differ from the sigma formula, and the reference blur
    (``cv2.GaussianBlur(..., (k, k), 0)``) uses the same weights."""
    kernel = int(kernel)
    if kernel % 2 != 1 or kernel < 1:
        raise ValueError(f'the blur kernel must be a positive odd number, got {kernel}')
    g = cv2.getGaussianKernel(kernel, 0, ktype=cv2.CV_64F).reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(g)).to(device=device, dtype=dtype)


def _flat(maps: torch.Tensor) -> torch.Tensor:
    """[N, K, H, W] -> [N, K, H*W] with explicit sizes (a traced ``-1`` would break for N == 0)."""
    return maps.reshape(maps.shape[0], maps.shape[1], int(maps.shape[2]) * int(maps.shape[3]))


def argmax_2d(heatmaps: torch.Tensor):
    """(flat peak index int64 [N, K], peak value [N, K]) of heatmaps [N, K, H, W].

    Ties resolve to the first index in row-major order, as NumPy's ``argmax``.  Outside tracing,
    CPU tensors take NumPy's ``argmax`` on the same memory: torch's max-with-indices reduction
    over a long last axis is ~10x slower (12 ms vs 0.9 ms for 64 x 21 maps of 64 x 64).
    """
    flat = _flat(heatmaps)
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if tracing or flat.device.type != 'cpu' or flat.requires_grad or flat.dtype not in (torch.float32, torch.float64):
        maxvals, idx = flat.max(dim=2)
        return idx, maxvals
    idx = torch.from_numpy(flat.numpy().argmax(axis=2).astype(np.int64, copy=False))
    return idx, torch.gather(flat, 2, idx.unsqueeze(-1)).squeeze(-1)


def blur_matrix(size: int, kernel: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """[size, size] banded matrix ``T`` with ``(T @ x)[i] = sum_j g[j - i + b] * x[j]``: a 1-D
    Gaussian blur with zero padding as one matrix product (``g`` from :func:`gaussian_kernel_1d`)."""
    b = (kernel - 1) // 2
    g = gaussian_kernel_1d(kernel, torch.float64)
    i = torch.arange(size).reshape(-1, 1)
    j = torch.arange(size).reshape(1, -1)
    tap = j - i + b
    inside = (tap >= 0) & (tap < kernel)
    return torch.where(inside, g[tap.clamp(0, kernel - 1)], torch.zeros((), dtype=torch.float64)).to(device=device,
                                                                                                   dtype=dtype)


def gaussian_blur_max_preserving(heatmaps: torch.Tensor, kernel: int = 11, rows: torch.Tensor | None = None,
                                 cols: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-padded separable Gaussian blur of every map, rescaled to keep each map's maximum.

    The blur is two matrix products, ``Ty @ map @ Tx^T`` (see :func:`blur_matrix`): dense GEMMs are
    much faster on CPU than single-channel convolutions, and trace to ONNX ``MatMul``.
    """
    h, w = int(heatmaps.shape[-2]), int(heatmaps.shape[-1])
    ty = blur_matrix(h, kernel, heatmaps.dtype, heatmaps.device) if rows is None else rows
    tx = blur_matrix(w, kernel, heatmaps.dtype, heatmaps.device) if cols is None else cols
    blurred = torch.matmul(torch.matmul(ty, heatmaps), tx.transpose(0, 1))
    orig_max = heatmaps.amax(dim=(2, 3), keepdim=True)
    new_max = blurred.amax(dim=(2, 3), keepdim=True)
    return blurred * (orig_max / new_max)


def _gather(flat: torch.Tensor, px: torch.Tensor, py: torch.Tensor, width: int, offsets) -> torch.Tensor:
    """Values of ``flat`` [N, K, H*W] at ``(py + dy, px + dx)`` for every offset -> [N, K, len(offsets)]."""
    dy = torch.tensor([o[0] for o in offsets], dtype=torch.int64, device=flat.device)
    dx = torch.tensor([o[1] for o in offsets], dtype=torch.int64, device=flat.device)
    index = (py.unsqueeze(-1) + dy) * width + (px.unsqueeze(-1) + dx)
    return torch.gather(flat, 2, index)


def taylor_refine(log_heatmaps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, valid: torch.Tensor):
    """Sub-pixel offsets (off_x, off_y) [N, K] of one Newton step on the log-heatmaps around the
    integer peaks ``(px, py)``; zero where not ``valid``, near the border or for a singular Hessian."""
    h, w = int(log_heatmaps.shape[-2]), int(log_heatmaps.shape[-1])
    if h < 5 or w < 5:  # no peak is 2 px from every border: nothing to refine (and no fallback window fits)
        return torch.zeros_like(px, dtype=log_heatmaps.dtype), torch.zeros_like(px, dtype=log_heatmaps.dtype)
    inner = valid & (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    two = torch.full_like(px, 2)
    v = _gather(_flat(log_heatmaps), torch.where(inner, px, two), torch.where(inner, py, two), w,
                _TAYLOR_OFFSETS)
    c, xp, xm, yp, ym, xpp, xmm, ypp, ymm, pp, mp, pm, mm = v.unbind(-1)
    dx = 0.5 * (xp - xm)
    dy = 0.5 * (yp - ym)
    dxx = 0.25 * (xpp - 2 * c + xmm)
    dxy = 0.25 * (pp - mp - pm + mm)
    dyy = 0.25 * (ypp - 2 * c + ymm)
    det = dxx * dyy - dxy * dxy
    ok = inner & (det != 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    zero = torch.zeros_like(det)
    off_x = torch.where(ok, -(dyy * dx - dxy * dy) / safe, zero)
    off_y = torch.where(ok, -(dxx * dy - dxy * dx) / safe, zero)
    return off_x, off_y


def quarter_offset(heatmaps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, valid: torch.Tensor):
    """Offsets (off_x, off_y) [N, K] of a quarter pixel toward the higher neighbour (mmpose 'default')."""
    h, w = int(heatmaps.shape[-2]), int(heatmaps.shape[-1])
    if h < 3 or w < 3:  # no interior pixel: nothing to shift (and no fallback window fits)
        return torch.zeros_like(px, dtype=heatmaps.dtype), torch.zeros_like(px, dtype=heatmaps.dtype)
    inner = valid & (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    one = torch.ones_like(px)
    v = _gather(_flat(heatmaps), torch.where(inner, px, one), torch.where(inner, py, one), w,
                _QUARTER_OFFSETS)
    xp, xm, yp, ym = v.unbind(-1)
    zero = torch.zeros_like(xp)
    off_x = torch.where(inner, 0.25 * torch.sign(xp - xm), zero)
    off_y = torch.where(inner, 0.25 * torch.sign(yp - ym), zero)
    return off_x, off_y


def _like(x, ref: torch.Tensor) -> torch.Tensor:
    """``x`` (tensor, array or list) on ``ref``'s device and dtype (no constant is traced for tensors)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    return x.to(device=ref.device, dtype=ref.dtype)


def heatmap_to_image(coords: torch.Tensor, centers: torch.Tensor, scales: torch.Tensor, heatmap_size,
                     rotations: torch.Tensor | None = None) -> torch.Tensor:
    """Heatmap coordinates [N, K, 2] -> image pixels; the torch twin of
    :func:`modelscope_handkp.transforms.heatmap_to_image`.  ``centers``/``scales`` may be [N, 2] or one [2]
    shared by all hands (tensors, or arrays/lists); they are moved to ``coords``' device."""
    size = torch.tensor([float(heatmap_size[0]), float(heatmap_size[1])], dtype=coords.dtype, device=coords.device)
    scales = _like(scales, coords).reshape(-1, 2)
    centers = _like(centers, coords).reshape(-1, 2)
    px = scales * PIXEL_STD  # [N, 2] crop size in image pixels
    if rotations is None:
        return coords * (px / size).unsqueeze(1) + (centers - px * 0.5).unsqueeze(1)
    offset = (coords - size * 0.5) * (px / size).unsqueeze(1)
    rad = _like(rotations, coords).reshape(-1, 1) * (math.pi / 180.0)
    cs, sn = torch.cos(rad), torch.sin(rad)
    x = offset[..., 0] * cs - offset[..., 1] * sn
    y = offset[..., 0] * sn + offset[..., 1] * cs
    return torch.stack([x, y], dim=-1) + centers.unsqueeze(1)


def _local_log_blur(heatmaps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, kernel: int) -> torch.Tensor:
    """log of the blurred maps on the 5 x 5 grid around every peak, [N, K, 5, 5], *without* the
    max-preserving rescale (which only adds the constant ``log(r)``, r >= 1, to a log-map, and
    constants cancel in every derivative of the Newton step).

    Only a (5 + 2b)^2 patch per keypoint is read (zero outside the map), instead of blurring
    4096 pixels to use 13 of them.
    """
    h, w = int(heatmaps.shape[-2]), int(heatmaps.shape[-1])
    b = (kernel - 1) // 2
    span = 5 + 2 * b
    steps = torch.arange(span, dtype=torch.int64, device=heatmaps.device) - (2 + b)
    rows = py.unsqueeze(-1) + steps  # [N, K, span]
    cols = px.unsqueeze(-1) + steps
    # read with clamped indices; the zero padding goes into the blur matrices instead of the
    # patch: A @ (m_r * P * m_c) @ A^T = (A * m_r) @ P @ (A * m_c)^T
    index = rows.clamp(0, h - 1).unsqueeze(-1) * w + cols.clamp(0, w - 1).unsqueeze(-2)  # [N, K, span, span]
    patch = torch.gather(_flat(heatmaps), 2, index.flatten(2)).reshape(index.shape)
    g = gaussian_kernel_1d(kernel, heatmaps.dtype, heatmaps.device)
    a = torch.zeros(5, span, dtype=heatmaps.dtype, device=heatmaps.device)  # a[r, r:r+k] = g
    for r in range(5):
        a[r, r:r + kernel] = g
    a_rows = a * ((rows >= 0) & (rows < h)).to(a.dtype).unsqueeze(-2)  # [N, K, 5, span]
    a_cols = a * ((cols >= 0) & (cols < w)).to(a.dtype).unsqueeze(-2)
    return torch.matmul(torch.matmul(a_rows, patch), a_cols.transpose(-1, -2))


def _taylor_from_grid(grid: torch.Tensor, inner: torch.Tensor):
    """Newton offsets from 5 x 5 log-values centred on the peaks (grid[..., 2 + dy, 2 + dx])."""
    def at(dy, dx):
        return grid[..., 2 + dy, 2 + dx]
    c = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    det = dxx * dyy - dxy * dxy
    ok = inner & (det != 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    zero = torch.zeros_like(det)
    return (torch.where(ok, -(dyy * dx - dxy * dy) / safe, zero),
            torch.where(ok, -(dxx * dy - dxy * dx) / safe, zero))


# the 13 grid cells (dy, dx) the Newton step reads
_TAYLOR_CELLS = [(2 + dy) * 5 + (2 + dx) for dy, dx in _TAYLOR_OFFSETS]


def _dark_offsets_local(heatmaps, px, py, valid, kernel):
    """DARK offsets from local patches; maps where the 1e-10 log clamp could matter are redone
    with the full-map computation, so the result never depends on the shortcut."""
    h, w = int(heatmaps.shape[-2]), int(heatmaps.shape[-1])
    inner = valid & (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    two = torch.full_like(px, 2)
    pxc, pyc = torch.where(inner, px, two), torch.where(inner, py, two)
    blurred = _local_log_blur(heatmaps, pxc, pyc, kernel)
    # r >= 1 (blurring with weights summing to <= 1 cannot raise a map's positive maximum), so
    # b * r > 1e-10 wherever b > 2e-10: the clamp is inactive and log(b * r) = log(b) + log(r).
    clamp_free = (blurred.flatten(2)[..., _TAYLOR_CELLS] > 2e-10).all(dim=-1)
    grid = torch.log(torch.clamp(blurred, min=1e-10))
    off_x, off_y = _taylor_from_grid(grid, inner)
    redo = inner & ~clamp_free
    if bool(redo.any()):
        n_idx, k_idx = torch.nonzero(redo, as_tuple=True)
        maps = heatmaps[n_idx, k_idx].unsqueeze(0)  # [1, M, H, W]
        log_maps = torch.log(torch.clamp(gaussian_blur_max_preserving(maps, kernel), min=1e-10))
        ox, oy = taylor_refine(log_maps, px[n_idx, k_idx].unsqueeze(0), py[n_idx, k_idx].unsqueeze(0),
                               valid[n_idx, k_idx].unsqueeze(0))
        off_x = off_x.index_put((n_idx, k_idx), ox[0])
        off_y = off_y.index_put((n_idx, k_idx), oy[0])
    return off_x, off_y


def decode_heatmaps(heatmaps: torch.Tensor, centers: torch.Tensor, scales: torch.Tensor,
                    post_process: str | None = 'unbiased', kernel: int = 11,
                    rotations: torch.Tensor | None = None, blur: str = 'auto'):
    """Heatmaps [N, K, H, W] -> (coords [N, K, 2] in image pixels, scores [N, K, 1]), in torch.

    Equal to :func:`modelscope_handkp.codec.decode_heatmaps` to <= 1e-3 px on peaked heatmaps (a
    trained network's; tested on the reference fixtures).  On nearly flat peaks (random or untrained
    weights) the DARK step divides by a curvature near 0 and the blur's float32 rounding (~2e-7
    relative, different summation order) can move the result by up to about 1 heatmap pixel.  Works for
    ``N == 0``.

    ``blur`` chooses how DARK blurs: ``'full'`` blurs whole maps (static graph: what the ONNX
    export traces), ``'local'`` blurs only the patch around each peak (about 20x less work, with
    an exact fallback where the log clamp is active), ``'auto'`` = ``'full'`` while tracing or
    exporting, else ``'local'``.
    """
    if post_process not in POST_PROCESS_MODES:
        raise ValueError(f'post_process must be one of {POST_PROCESS_MODES}, got {post_process!r}')
    if blur not in ('auto', 'full', 'local'):
        raise ValueError(f"blur must be 'auto', 'full' or 'local', got {blur!r}")
    if heatmaps.dim() != 4:
        raise ValueError(f'heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}')
    if heatmaps.dtype not in (torch.float32, torch.float64):
        # float16/bfloat16 (autocast, .half() models) would run the log/Newton step and hold image
        # coordinates in 10-/7-bit mantissas (1 px steps above 1024 px in float16); int maps cannot blur
        heatmaps = heatmaps.to(torch.float32)
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    if blur == 'auto':
        blur = 'full' if tracing else 'local'
    h, w = int(heatmaps.shape[-2]), int(heatmaps.shape[-1])
    idx, maxvals = argmax_2d(heatmaps)
    px = torch.remainder(idx, w)
    py = torch.div(idx, w, rounding_mode='floor')
    valid = maxvals > 0
    x = px.to(heatmaps.dtype)
    y = py.to(heatmaps.dtype)
    if post_process == 'unbiased':
        if blur == 'full':
            log_hm = torch.log(torch.clamp(gaussian_blur_max_preserving(heatmaps, kernel), min=1e-10))
            off_x, off_y = taylor_refine(log_hm, px, py, valid)
        else:
            off_x, off_y = _dark_offsets_local(heatmaps, px, py, valid, kernel)
        x, y = x + off_x, y + off_y
    elif post_process == 'default':
        off_x, off_y = quarter_offset(heatmaps, px, py, valid)
        x, y = x + off_x, y + off_y
    minus_one = torch.full_like(x, -1.0)
    coords = torch.stack([torch.where(valid, x, minus_one), torch.where(valid, y, minus_one)], dim=-1)
    coords = heatmap_to_image(coords, centers, scales, (w, h), rotations)
    if not tracing:
        _warn_non_finite(coords, maxvals)
    return coords, maxvals.unsqueeze(-1)


def _warn_non_finite(coords: torch.Tensor, maxvals: torch.Tensor) -> None:
    """Warn when heatmaps with NaN/inf values made NaN keypoints or scores (checked on the N x K
    results only: a NaN or +inf pixel anywhere in a map makes its peak value non-finite)."""
    from .codec import warn_non_finite_heatmaps
    bad = ~(torch.isfinite(coords).all(dim=-1) & torch.isfinite(maxvals))
    if bool(bad.any()):
        warn_non_finite_heatmaps(int(bad.sum()), bad.numel(), stacklevel=3)


@torch.no_grad()
def peak_curvature(heatmaps: torch.Tensor, kernel: int = 11) -> torch.Tensor:
    """How sharp each DARK peak is: ``-max eigenvalue`` of the log-heatmap Hessian at the integer
    peak, [N, K] (0 where the Hessian is not negative definite; ``inf`` where no Newton step is
    taken: border peaks, maps whose maximum is <= 0).

    The Newton offset is ``-H^-1 g``, so rounding differences in the heatmaps reach the keypoint
    multiplied by about ``1 / curvature``.  A trained sigma-3 model gives ~0.08 per px^2 (a
    Gaussian of variance 9 + 4 after the blur); peaks of untrained, random-weight networks can be
    100x flatter, and there float32 rounding alone moves keypoints by 1e-2 px.
    """
    h, w = int(heatmaps.shape[-2]), int(heatmaps.shape[-1])
    idx, maxvals = argmax_2d(heatmaps)
    px = torch.remainder(idx, w)
    py = torch.div(idx, w, rounding_mode='floor')
    inner = (maxvals > 0) & (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    two = torch.full_like(px, 2)
    log_hm = torch.log(torch.clamp(gaussian_blur_max_preserving(heatmaps, kernel), min=1e-10))
    v = _gather(_flat(log_hm), torch.where(inner, px, two), torch.where(inner, py, two), w,
                _TAYLOR_OFFSETS).to(torch.float64)
    c, _, _, _, _, xpp, xmm, ypp, ymm, pp, mp, pm, mm = v.unbind(-1)
    dxx = 0.25 * (xpp - 2 * c + xmm)
    dyy = 0.25 * (ypp - 2 * c + ymm)
    dxy = 0.25 * (pp - mp - pm + mm)
    top = 0.5 * (dxx + dyy) + torch.sqrt((0.5 * (dxx - dyy))**2 + dxy * dxy)  # larger eigenvalue
    curvature = torch.clamp(-top, min=0.0)
    return torch.where(inner, curvature, torch.full_like(curvature, float('inf')))


class HeatmapDecoder(nn.Module):
    """Heatmaps + crop geometry -> (keypoints, scores), as a module for export graphs (full-map blur)."""

    def __init__(self, post_process: str | None = 'unbiased', kernel: int = 11):
        super().__init__()
        if post_process not in POST_PROCESS_MODES:
            raise ValueError(f'post_process must be one of {POST_PROCESS_MODES}, got {post_process!r}')
        self.post_process = post_process
        self.kernel = int(kernel)

    def forward(self, heatmaps, centers, scales, rotations=None):
        return decode_heatmaps(heatmaps, centers, scales, self.post_process, self.kernel, rotations, blur='full')
