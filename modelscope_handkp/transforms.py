"""Geometry of the top-down crop: boxes -> center/scale, the affine crop, and the way back.

Conventions (those of EasyCV / mmpose 0.x, so the published model sees the same pixels):

* ``center`` (x, y) in image pixels; ``scale`` (sx, sy) in units of 200 px: the crop covers
  ``scale * 200`` pixels of the image.  Boxes are made to the crop's aspect ratio and padded
  by 1.25.
* ``rotation`` in degrees, as mmpose's ``get_affine_transform(center, scale, rot, output_size)``:
  with ``rotation=+90`` what lies above the centre in the image appears on the *left* of the
  crop (the content turns counter-clockwise as seen on screen).  To make a hand whose fingers
  point along image direction (dx, dy) upright, use ``rotation = degrees(atan2(dx, -dy))``.
* Crops are taken with ``cv2.warpAffine`` (bilinear, black border) from the RGB image, then
  /255 and ImageNet mean/std normalised.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PIXEL_STD = 200.0


def box_to_center_scale(box, box_format: str = 'xyxy', image_size=(256, 256), padding: float = 1.25):
    """Box(es) -> (center, scale), float32, shapes [2] / [2] for one box or [N, 2] / [N, 2].

    ``box_format``: ``'xyxy'`` for detector boxes (x1, y1, x2, y2) or ``'xywh'`` for COCO
    boxes (x, y, w, h).  The box is widened or heightened to the aspect ratio of
    ``image_size`` (w, h), then scaled by ``padding``.
    """
    b = np.asarray(box, dtype=np.float32)
    single = b.ndim == 1
    b = b.reshape(-1, 4)
    if box_format == 'xyxy':
        x, y, w, h = b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    elif box_format == 'xywh':
        x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    else:
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    aspect = np.float32(image_size[0] / image_size[1])
    center = np.stack([x + w * np.float32(0.5), y + h * np.float32(0.5)], axis=1).astype(np.float32)
    w2 = np.where(w > aspect * h, w, h * aspect)
    h2 = np.where(w > aspect * h, w / aspect, h)
    scale = (np.stack([w2, h2], axis=1) / np.float32(PIXEL_STD) * np.float32(padding)).astype(np.float32)
    if single:
        return center[0], scale[0]
    return center, scale


def _as_batch(centers, scales, rotations):
    centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
    if rotations is None:
        rotations = np.zeros(len(centers), dtype=np.float32)
    rotations = np.asarray(rotations, dtype=np.float32).reshape(-1)
    if len(rotations) not in (1, len(centers)):
        raise ValueError(f'{len(centers)} centers but {len(rotations)} rotations; pass one rotation per crop, '
                         'one for all, or None')
    rotations = np.broadcast_to(rotations, (len(centers), )).copy()
    if len(scales) != len(centers):
        raise ValueError(f'{len(centers)} centers but {len(scales)} scales')
    return centers, scales, rotations


def get_affine_matrices(centers, scales, rotations=None, output_size=(256, 256), inv: bool = False) -> np.ndarray:
    """float64 [N, 2, 3] affine matrices image -> crop (or crop -> image with ``inv``).

    Same three-point construction as mmpose 0.x (float32 points, then an exact solve), so the
    crops match the original pixel for pixel.
    """
    centers, scales, rotations = _as_batch(centers, scales, rotations)
    n = len(centers)
    bad = ~(np.isfinite(centers).all(axis=1) & np.isfinite(rotations) & np.isfinite(scales[:, 0])
            & (scales[:, 0] > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f'crop {i}: center {centers[i].tolist()}, scale {scales[i].tolist()}, rotation '
                         f'{float(rotations[i])} cannot make a crop; the scale (box size / 200 px) must be positive '
                         'and all values finite: drop zero-size or NaN boxes first.')
    src_w = scales[:, 0] * np.float32(PIXEL_STD)
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    rad = np.pi * rotations.astype(np.float64) / 180.0
    sn, cs = np.sin(rad), np.cos(rad)
    # direction of the crop's "up" half-height, rotated: rotate([0, -w/2])
    src_dir = np.stack([src_w * 0.5 * sn, -src_w * 0.5 * cs], axis=1)
    src = np.zeros((n, 3, 2), dtype=np.float32)
    src[:, 0] = centers
    src[:, 1] = centers + src_dir
    d = src[:, 0] - src[:, 1]
    src[:, 2] = src[:, 1] + np.stack([-d[:, 1], d[:, 0]], axis=1)
    dst = np.zeros((n, 3, 2), dtype=np.float32)
    dst[:, 0] = [dst_w * 0.5, dst_h * 0.5]
    dst[:, 1] = [dst_w * 0.5, dst_h * 0.5 - dst_w * 0.5]
    dd = dst[:, 0] - dst[:, 1]
    dst[:, 2] = dst[:, 1] + np.stack([-dd[:, 1], dd[:, 0]], axis=1)
    a, b = (dst, src) if inv else (src, dst)
    # solve [x y 1] @ M^T = b for the three points of every item at once
    lhs = np.concatenate([a.astype(np.float64), np.ones((n, 3, 1))], axis=2)
    return np.linalg.solve(lhs, b.astype(np.float64)).transpose(0, 2, 1)


def get_affine_matrix(center, scale, rotation: float = 0.0, output_size=(256, 256), inv: bool = False) -> np.ndarray:
    """float64 [2, 3] for one crop; see :func:`get_affine_matrices`."""
    return get_affine_matrices(center, scale, [rotation], output_size, inv)[0]


def transform_points(points, matrix) -> np.ndarray:
    """Apply a [2, 3] affine or [3, 3] projective matrix to points [..., 2]; or [N, 2, 3] affine
    matrices to [N, ..., 2]."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim == 2:
        out = p @ m[:2, :2].T + m[:2, 2]
        if m.shape[0] == 3:  # projective: divide by the third coordinate
            out = out / (p @ m[2, :2] + m[2, 2])[..., None]
        return out
    shape = p.shape
    flat = p.reshape(shape[0], -1, 2)
    out = np.einsum('npj,nij->npi', flat, m[:, :, :2]) + m[:, None, :, 2]
    return out.reshape(shape)


def to_numpy(x) -> np.ndarray:
    """``x`` (tensor on any device, array, list) as a NumPy array: detached, on the CPU; floats narrower
    than 32 bits (float16, bfloat16 — which has no NumPy dtype) become float32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.itemsize < 4:
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def ensure_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Grayscale (H, W) / (H, W, 1) and RGBA (H, W, 4) -> RGB (H, W, 3); 16-bit -> 8-bit."""
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise ValueError('the image contains NaN or infinite values; pass finite pixel values.')
        img = np.clip(np.rint(img * 255.0 if img.max(initial=0) <= 1.0 else img), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise TypeError(f'images must be uint8 (or uint16/float) arrays, got dtype {img.dtype}')
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f'expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {img.shape}')
    c = img.shape[2]
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    elif c == 4:
        img = img[:, :, :3]
    elif c != 3:
        raise ValueError(f'expected 1, 3 or 4 colour channels, got {c} (shape {img.shape})')
    return np.ascontiguousarray(img)


def warp_crops(image_rgb, centers, scales, rotations=None, image_size=(256, 256)) -> np.ndarray:
    """uint8 [N, H, W, 3] affine crops (bilinear, black border) of one RGB image."""
    img = ensure_rgb_uint8(image_rgb)
    mats = get_affine_matrices(centers, scales, rotations, image_size)
    w, h = int(image_size[0]), int(image_size[1])
    out = np.empty((len(mats), h, w, 3), dtype=np.uint8)
    for i, m in enumerate(mats):  # one OpenCV call per hand crop
        cv2.warpAffine(img, m, (w, h), dst=out[i], flags=cv2.INTER_LINEAR)
    return out


def normalize_crops(crops_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] RGB -> float32 Tensor [N, 3, H, W]: /255 and ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(crops_uint8)).to(torch.float32)
    # as the original: to [0, 1] first, then (x - mean) / std
    x = (x / 255.0 - torch.from_numpy(IMAGENET_MEAN)) / torch.from_numpy(IMAGENET_STD)
    return x.permute(0, 3, 1, 2).contiguous()


def crop_to_tensor(image_rgb_uint8, centers, scales, image_size=(256, 256), rotations=None) -> torch.Tensor:
    """float32 Tensor [N, 3, H, W]: normalised RGB crops of one image, one per center/scale."""
    return normalize_crops(warp_crops(image_rgb_uint8, centers, scales, rotations, image_size))


def heatmap_to_image(coords, centers, scales, heatmap_size=(64, 64), rotations=None) -> np.ndarray:
    """Heatmap (or crop) coordinates [N, K, 2] -> image pixels, float32.

    Without rotation this is mmpose's ``transform_preds``: x * s_w / W + c_x - s_w / 2.
    With rotation the offset from the crop centre is turned back by the crop's rotation.
    """
    coords = np.asarray(coords, dtype=np.float32)
    centers, scales, rotations = _as_batch(centers, scales, rotations)
    if coords.ndim == 3 and len(centers) not in (1, len(coords)):
        raise ValueError(f'{len(coords)} hands of coordinates but {len(centers)} centers/scales; pass one '
                         'center and scale per hand (or one for all).')
    size = np.asarray(heatmap_size, dtype=np.float32)
    px = scales * np.float32(PIXEL_STD)  # [N, 2] crop size in image pixels
    if not np.any(rotations):
        out = coords * (px / size)[:, None, :] + (centers - px * np.float32(0.5))[:, None, :]
        return out.astype(np.float32)
    offset = (coords - size * np.float32(0.5)) * (px / size)[:, None, :]
    rad = np.deg2rad(rotations.astype(np.float64))
    cs, sn = np.cos(rad)[:, None], np.sin(rad)[:, None]
    x = offset[..., 0] * cs - offset[..., 1] * sn
    y = offset[..., 0] * sn + offset[..., 1] * cs
    return (np.stack([x, y], axis=-1) + centers[:, None, :]).astype(np.float32)
