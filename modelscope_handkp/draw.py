"""Drawing hand keypoint results on images: skeleton, keypoints, boxes and scores.

:func:`draw_hands` renders the result of ``pipeline(Tasks.hand_2d_keypoints, ...)`` (or of
:class:`~modelscope_handkp.tracking.HandTracker`) on a copy of an RGB image::

    from modelscope_handkp.draw import draw_hands
    drawn = draw_hands(image_rgb, result)        # new uint8 RGB image; image_rgb is not modified

What is drawn, per hand (keypoint order: COCO-WholeBody hand = MediaPipe, 0 wrist, 1-4 thumb,
5-8 index, 9-12 middle, 13-16 ring, 17-20 little):

* the skeleton (:data:`SKELETON`, 20 limbs: wrist -> finger base -> ... -> finger tip), one colour per
  finger (:data:`FINGER_COLORS`); each keypoint is a filled disc in its finger's colour
  (:data:`WRIST_COLOR` for the wrist) with a thin dark ring (:data:`OUTLINE_COLOR`);
* the box (x1, y1, x2, y2) and a label with the detector score (and ``#track_id`` when the result has
  ``'track_ids'``), in :data:`BOX_COLOR` (or :data:`TRACK_COLORS` by track id).  For a rotated hand
  (palm detector, ``'rotations'`` not 0) the result's box is the region around its rotated crop, far
  larger than the hand; the drawing shows the hand's extent instead: its keypoints scoring >= 0.3 plus
  10 % on each side.

Sizes follow each hand, so the drawing looks alike on a 100 x 100 thumbnail and a 12000 x 9000 photo:
with ``size`` = the diagonal of the hand's box (or of its keypoints' extent when the box is missing or
degenerate), the keypoint radius is ``max(2, round(RADIUS_FRACTION * size))``, the limb thickness
``max(1, round(LINE_FRACTION * size))``, the box line ``max(1, round(BOX_LINE_FRACTION * size))`` and the
label height about ``LABEL_FRACTION * size``.  ``radius=`` / ``thickness=`` override the first two.

Low-score keypoints are faded, not dropped: a keypoint whose score is below ``kpt_thr`` is drawn with
opacity ``faded_alpha`` (alpha-blended toward the image below it); a limb is faded when either of its
keypoints is.  Keypoints whose score is below ``skip_thr`` (default ``None``: none) and keypoints with
non-finite coordinates are not drawn at all, nor are their limbs.  Results without scores
(keypoints ``[N, 21, 2]``) are drawn fully opaque.
"""
from __future__ import annotations

from typing import Any, Mapping

import cv2
import numpy as np

__all__ = ['draw_hands', 'hand_sizes', 'FINGER_COLORS', 'WRIST_COLOR', 'KEYPOINT_COLORS', 'SKELETON',
           'LIMB_COLORS', 'BOX_COLOR', 'TRACK_COLORS', 'OUTLINE_COLOR', 'LABEL_TEXT_COLOR']

# The result keys (the values of modelscope.outputs.OutputKeys.KEYPOINTS / BOXES / SCORES).
KEYPOINTS = 'keypoints'
BOXES = 'boxes'
SCORES = 'scores'
TRACK_IDS = 'track_ids'
ROTATIONS = 'rotations'

NUM_KEYPOINTS = 21

#: RGB colour of each finger: thumb, index, middle, ring, little (keypoints 1-4, 5-8, 9-12, 13-16, 17-20).
FINGER_COLORS = np.array([
    [255, 48, 48],    # thumb: red
    [255, 196, 0],    # index: amber
    [40, 210, 40],    # middle: green
    [0, 150, 255],    # ring: blue
    [210, 60, 255],   # little: violet
], np.uint8)
#: RGB colour of the wrist (keypoint 0).
WRIST_COLOR = np.array([255, 255, 255], np.uint8)
#: RGB colour of each of the 21 keypoints.
KEYPOINT_COLORS = np.concatenate([WRIST_COLOR[None], np.repeat(FINGER_COLORS, 4, axis=0)])
#: The 20 limbs (keypoint index pairs): per finger wrist -> base -> ... -> tip.
SKELETON = np.array([(0 if j == 0 else 1 + 4 * f + j - 1, 1 + 4 * f + j) for f in range(5) for j in range(4)],
                    np.int64)
#: RGB colour of each limb: its finger's colour.
LIMB_COLORS = np.repeat(FINGER_COLORS, 4, axis=0)
#: RGB colour of boxes and score labels (results without track ids).
BOX_COLOR = np.array([0, 255, 255], np.uint8)
#: RGB box colours by track id (``TRACK_COLORS[track_id % len(TRACK_COLORS)]``).
TRACK_COLORS = np.array([
    [0, 255, 255], [255, 128, 0], [255, 0, 200], [128, 255, 0], [0, 128, 255], [255, 255, 0],
    [160, 100, 255], [0, 255, 140]], np.uint8)
#: RGB colour of the thin ring around each keypoint disc.
OUTLINE_COLOR = np.array([32, 32, 32], np.uint8)
#: RGB colour of the label text (drawn on a box-coloured background).
LABEL_TEXT_COLOR = np.array([0, 0, 0], np.uint8)

RADIUS_FRACTION = 0.018
LINE_FRACTION = 0.009
BOX_LINE_FRACTION = 0.006
LABEL_FRACTION = 0.06

_SHIFT = 4  # sub-pixel bits of cv2 drawing coordinates
_ONE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _get(result: Mapping[str, Any], key: str):
    value = result.get(key) if hasattr(result, 'get') else None
    return None if value is None else np.asarray(value)


def _parse_result(result: Mapping[str, Any]):
    """-> (xy float64 [N,21,2], scores float64 [N,21] or None, boxes float64 [N,4] or None,
    box scores float64 [N] or None, track ids int64 [N] or None)."""
    if not isinstance(result, Mapping):
        raise TypeError(f'draw_hands: result must be a dict with keys {KEYPOINTS!r} (and {BOXES!r}, {SCORES!r}), '
                        f'as returned by the hand pipeline; got {type(result).__name__}.')
    kps = _get(result, KEYPOINTS)
    if kps is None:
        raise KeyError(f'draw_hands: the result has no {KEYPOINTS!r} entry (keys: {sorted(map(str, result))}).')
    kps = kps.astype(np.float64, copy=False)
    if kps.size == 0:
        kps = kps.reshape(0, NUM_KEYPOINTS, 3)
    if kps.ndim == 2:  # a single hand [21, 2|3]
        kps = kps[None]
    if kps.ndim != 3 or kps.shape[-1] not in (2, 3):
        raise ValueError(f'draw_hands: keypoints must have shape [N, K, 3] (x, y, score) or [N, K, 2], '
                         f'got {kps.shape}.')
    n, k = kps.shape[:2]
    if k != NUM_KEYPOINTS and n > 0:
        raise ValueError(f'draw_hands: expected {NUM_KEYPOINTS} keypoints per hand, got {k}.')
    scores = kps[..., 2] if kps.shape[-1] == 3 else None

    def per_hand(key, shape_tail, dtype):
        value = _get(result, key)
        if value is None:
            return None
        value = value.astype(dtype, copy=False).reshape((-1,) + shape_tail)
        if len(value) != n:
            raise ValueError(f'draw_hands: {key!r} has {len(value)} entries for {n} hands.')
        return value

    boxes = per_hand(BOXES, (4,), np.float64)
    box_scores = per_hand(SCORES, (), np.float64)
    track_ids = per_hand(TRACK_IDS, (), np.int64)
    rotations = per_hand(ROTATIONS, (), np.float64)
    if boxes is not None and rotations is not None:
        boxes = _hand_extent_boxes(kps[..., :2], scores, boxes, rotations)
    return kps[..., :2], scores, boxes, box_scores, track_ids


def _hand_extent_boxes(xy, scores, boxes, rotations, margin: float = 0.1, min_score: float = 0.3):
    """Boxes to draw: for a rotated hand (palm detector), whose result box is the axis-aligned region
    around its rotated crop (much larger than the hand), the extent of its keypoints scoring at least
    ``min_score`` (all finite ones if fewer than 3 do) plus ``margin`` of it on each side."""
    boxes = boxes.copy()
    for i in np.flatnonzero(np.isfinite(rotations) & (rotations != 0)):
        ok = np.isfinite(xy[i]).all(-1)
        good = ok & (scores[i] >= min_score) if scores is not None else ok
        use = good if good.sum() >= 3 else ok
        if use.sum() < 2:
            continue
        lo, hi = xy[i, use].min(0), xy[i, use].max(0)
        pad = (hi - lo) * margin
        if (hi - lo > 0).all():
            boxes[i] = np.r_[lo - pad, hi + pad]
    return boxes


def hand_sizes(xy: np.ndarray, boxes: np.ndarray | None, valid: np.ndarray | None = None,
               default: float = 100.0) -> np.ndarray:
    """Drawing size of each hand: its box diagonal, else the diagonal of its (valid) keypoints' extent,
    else ``default`` -> float64 [N]."""
    xy = np.asarray(xy, np.float64)
    n = len(xy)
    if valid is None:
        valid = np.isfinite(xy).all(-1)
    lo = np.where(valid[..., None], xy, np.inf).min(1)
    hi = np.where(valid[..., None], xy, -np.inf).max(1)
    with np.errstate(invalid='ignore'):
        extent = np.hypot(*(hi - lo).T) if n else np.zeros(0)
    size = np.where(np.isfinite(extent) & (extent > 0), extent, default)
    if boxes is not None:
        wh = boxes[:, 2:] - boxes[:, :2]
        diag = np.hypot(wh[:, 0], wh[:, 1])
        ok = np.isfinite(diag) & (wh > 0).all(1)
        size = np.where(ok, diag, size)
    return size


def _fixed(points: np.ndarray, limit: float) -> np.ndarray:
    """Pixel coordinates -> cv2 fixed-point integers (``_SHIFT`` fractional bits), clipped to +-limit."""
    return np.rint(np.clip(points, -limit, limit) * _ONE).astype(np.int64)


def _label(canvas, text, x1, y1, color, height, box_thickness):
    img_h, img_w = canvas.shape[:2]
    scale = max(0.3, height / 22.0)
    thick = max(1, int(round(scale * 1.6)))
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(1, int(round(0.15 * th)))
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    left = int(np.clip(round(x1) - box_thickness // 2, 0, max(0, img_w - bw)))
    top = int(round(y1)) - box_thickness // 2 - bh
    if top < 0:  # no room above the box: inside it, below its top edge
        top = int(round(y1)) + (box_thickness + 1) // 2
    top = int(np.clip(top, 0, max(0, img_h - bh)))
    cv2.rectangle(canvas, (left, top), (left + bw - 1, top + bh - 1), color, -1)
    cv2.putText(canvas, text, (left + pad, top + pad + th), _FONT, scale, LABEL_TEXT_COLOR.tolist(), thick,
                cv2.LINE_AA)


def draw_hands(image_rgb: np.ndarray, result: Mapping[str, Any], kpt_thr: float = 0.3, *,
               faded_alpha: float = 0.35, skip_thr: float | None = None, draw_boxes: bool = True,
               draw_labels: bool = True, radius: int | None = None, thickness: int | None = None) -> np.ndarray:
    """Draw the hands of ``result`` on a copy of ``image_rgb``.

    Args:
        image_rgb: uint8 image ``[H, W, 3]`` (RGB; ``[H, W]`` gray is accepted). Not modified.
        result: the pipeline's output: a dict with ``'keypoints'`` float ``[N, 21, 3]`` (x, y, score in image
            pixels) or ``[N, 21, 2]``, and optionally ``'boxes'`` ``[N, 4]`` (x1, y1, x2, y2), ``'scores'``
            ``[N]`` (detector scores, shown in the labels) and ``'track_ids'`` ``[N]``.  The keys are the
            values of ``modelscope.outputs.OutputKeys.KEYPOINTS/BOXES/SCORES``.
        kpt_thr: keypoints scoring below this are drawn faded (opacity ``faded_alpha``), with their limbs.
        faded_alpha: opacity of faded keypoints and limbs, in [0, 1].
        skip_thr: keypoints scoring below this are not drawn, nor their limbs (default None: all drawn).
        draw_boxes / draw_labels: draw the boxes / the score labels.
        radius / thickness: keypoint radius / limb thickness in pixels for all hands (default: scaled to
            each hand's size, see the module docstring).

    Returns:
        a new uint8 RGB image ``[H, W, 3]``.
    """
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8:
        raise TypeError(f'draw_hands: image must be uint8, got {image.dtype}.')
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'draw_hands: image must have shape [H, W, 3] (RGB), got {image.shape}.')
    if not 0.0 <= faded_alpha <= 1.0:
        raise ValueError(f'draw_hands: faded_alpha must be in [0, 1], got {faded_alpha}.')
    canvas = np.ascontiguousarray(image).copy()
    xy, scores, boxes, box_scores, track_ids = _parse_result(result)
    n = len(xy)
    if n == 0:
        return canvas
    img_h, img_w = canvas.shape[:2]

    # per keypoint: drawn at all (visible) and opaque (vs faded)
    visible = np.isfinite(xy).all(-1)
    if scores is not None:
        finite_score = np.isfinite(scores)
        visible &= finite_score if skip_thr is None else finite_score & (scores >= skip_thr)
        opaque = scores >= kpt_thr
    else:
        opaque = np.ones(visible.shape, bool)
    limb_visible = visible[:, SKELETON[:, 0]] & visible[:, SKELETON[:, 1]]
    limb_opaque = opaque[:, SKELETON[:, 0]] & opaque[:, SKELETON[:, 1]]

    sizes = hand_sizes(xy, boxes, visible, default=0.25 * min(img_h, img_w))
    sizes = np.minimum(sizes, float(np.hypot(img_h, img_w)))
    radii = (np.full(n, int(radius)) if radius is not None
             else np.maximum(2, np.rint(RADIUS_FRACTION * sizes)).astype(np.int64))
    lines = (np.full(n, int(thickness)) if thickness is not None
             else np.maximum(1, np.rint(LINE_FRACTION * sizes)).astype(np.int64))
    rings = np.maximum(1, np.rint(0.25 * radii)).astype(np.int64)
    box_lines = np.maximum(1, np.rint(BOX_LINE_FRACTION * sizes)).astype(np.int64)
    limit = 4.0 * max(img_h, img_w) + 16.0
    pts = _fixed(np.where(np.isfinite(xy), xy, 0.0), limit)  # [N, 21, 2] fixed point

    kp_colors = [tuple(int(v) for v in c) for c in KEYPOINT_COLORS]
    limb_colors = [tuple(int(v) for v in c) for c in LIMB_COLORS]
    outline = tuple(int(v) for v in OUTLINE_COLOR)

    def draw_skeleton(target, i, limbs, kps, origin):
        o = origin * _ONE
        for j in limbs:
            a, b = SKELETON[j]
            cv2.line(target, tuple(pts[i, a] - o), tuple(pts[i, b] - o), limb_colors[j], int(lines[i]),
                     cv2.LINE_AA, _SHIFT)
        for j in kps:
            c = tuple(pts[i, j] - o)
            cv2.circle(target, c, int(radii[i] + rings[i]) * _ONE, outline, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(target, c, int(radii[i]) * _ONE, kp_colors[j], -1, cv2.LINE_AA, _SHIFT)

    for i in range(n):
        # faded limbs and keypoints first (under the opaque ones), blended in the region they cover
        faded_limbs = np.flatnonzero(limb_visible[i] & ~limb_opaque[i])
        faded_kps = np.flatnonzero(visible[i] & ~opaque[i])
        if (len(faded_limbs) or len(faded_kps)) and faded_alpha > 0:
            used = np.unique(np.concatenate([SKELETON[faded_limbs].ravel(), faded_kps]))
            margin = int(radii[i] + rings[i] + lines[i]) + 2
            lo = np.floor(xy[i, used].min(0)).astype(np.int64) - margin
            hi = np.ceil(xy[i, used].max(0)).astype(np.int64) + margin + 1
            x0, y0 = int(np.clip(lo[0], 0, img_w)), int(np.clip(lo[1], 0, img_h))
            x1, y1 = int(np.clip(hi[0], 0, img_w)), int(np.clip(hi[1], 0, img_h))
            if x1 > x0 and y1 > y0:
                roi = canvas[y0:y1, x0:x1]
                layer = roi.copy()
                draw_skeleton(layer, i, faded_limbs, faded_kps, np.array([x0, y0], np.int64))
                blended = roi * (1.0 - faded_alpha) + layer * faded_alpha
                roi[...] = np.rint(blended).astype(np.uint8)
        draw_skeleton(canvas, i, np.flatnonzero(limb_visible[i] & limb_opaque[i]),
                      np.flatnonzero(visible[i] & opaque[i]), np.zeros(2, np.int64))

    if boxes is not None and (draw_boxes or draw_labels):
        for i in range(n):
            box = boxes[i]
            if not np.isfinite(box).all():
                continue
            color = BOX_COLOR if track_ids is None else TRACK_COLORS[int(track_ids[i]) % len(TRACK_COLORS)]
            color = tuple(int(v) for v in color)
            bx = np.clip(box, -limit, limit)
            if draw_boxes:
                p1, p2 = np.rint(bx[:2]).astype(np.int64), np.rint(bx[2:]).astype(np.int64)
                cv2.rectangle(canvas, tuple(p1.tolist()), tuple(p2.tolist()), color, int(box_lines[i]), cv2.LINE_8)
            if draw_labels:
                parts = []
                if track_ids is not None:
                    parts.append(f'#{int(track_ids[i])}')
                if box_scores is not None and np.isfinite(box_scores[i]):
                    parts.append(f'{box_scores[i]:.2f}')
                if parts:
                    _label(canvas, ' '.join(parts), bx[0], bx[1], color, LABEL_FRACTION * sizes[i],
                           int(box_lines[i]))
    return canvas
