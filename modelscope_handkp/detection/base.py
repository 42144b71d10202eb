"""The detector interface the pipeline talks to, and the two detectors that need no weights.

Every detector turns one RGB uint8 image (H, W, 3) into :class:`Detections`:
hand rectangles in image pixels, their scores, and (for detectors that know it) the
in-plane rotation of each hand.  The top-down crop uses center/size/rotation of each
rectangle, so a rotated hand is cropped upright.

Which detector to use
---------------------
* :class:`~modelscope_handkp.detection.ssdlite.SSDLiteHandDetector` — the detector the
  published hub model ships (``detection/`` folder); axis-aligned boxes.
* :class:`~modelscope_handkp.detection.palm.PalmDetector` — MediaPipe's palm detector,
  ported; bundled, works offline; gives rotated hand rectangles.
* :class:`GivenBoxes` — you already know where the hands are (annotations, another
  detector, a tracker).
* :class:`WholeImage` — the image is already a crop around one hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """Hands found in one image.

    ``boxes``: float32 [M, 4] (x1, y1, x2, y2) in image pixels.  With a rotation, the box is
    the hand rectangle *in the hand's own frame*: centred on the hand, of the hand's width
    and height, to be rotated by ``rotations`` degrees about its centre.
    ``scores``: float32 [M].  ``rotations``: float32 [M] in degrees, using the same sign
    convention as :func:`modelscope_handkp.transforms.get_affine_matrix` (0 = upright).
    """

    boxes: np.ndarray
    scores: np.ndarray
    rotations: np.ndarray = field(default=None)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if self.rotations is None:
            self.rotations = np.zeros(len(self.boxes), dtype=np.float32)
        self.rotations = np.asarray(self.rotations, dtype=np.float32).reshape(-1)
        if not (len(self.boxes) == len(self.scores) == len(self.rotations)):
            raise ValueError(
                f'Detections: {len(self.boxes)} boxes, {len(self.scores)} scores and '
                f'{len(self.rotations)} rotations; they must have the same length.')

    def __len__(self):
        return len(self.boxes)

    @classmethod
    def empty(cls) -> 'Detections':
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def as_array(self) -> np.ndarray:
        """float32 [M, 5]: x1, y1, x2, y2, score."""
        return np.concatenate([self.boxes, self.scores[:, None]], axis=1).astype(np.float32)

    def take(self, index) -> 'Detections':
        return Detections(self.boxes[index], self.scores[index], self.rotations[index])


class HandDetector:
    """Base class: subclasses implement :meth:`detect_hands`.

    ``crop_padding``: how much the keypoint crop enlarges a detected box (the crop side is the box
    side times this, at the crop's aspect).  1.25 (the published model's padding) for detectors whose
    boxes are tight around the hand; a detector whose boxes already include a margin sets less.
    """

    crop_padding: float = 1.25

    def detect_hands(self, image_rgb: np.ndarray, score_thr: float | None = None) -> Detections:
        raise NotImplementedError

    def detect(self, image_rgb: np.ndarray, score_thr: float | None = None) -> np.ndarray:
        """float32 [M, 5] (x1, y1, x2, y2, score), best first."""
        return self.detect_hands(image_rgb, score_thr=score_thr).as_array()


class WholeImage(HandDetector):
    """The whole image is one hand (for images that are already hand crops)."""

    def detect_hands(self, image_rgb, score_thr=None):
        h, w = image_rgb.shape[:2]
        return Detections(np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32))


class GivenBoxes(HandDetector):
    """Boxes the caller already has, float [M, 4] (x1, y1, x2, y2) or [M, 5] with scores."""

    def __init__(self, boxes):
        self.detections = as_detections(boxes)

    def detect_hands(self, image_rgb, score_thr=None):
        return self.detections


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` [M, 4] and ``b`` [N, 4] (x1, y1, x2, y2) -> float64 [M, N] (0 for empty boxes)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)


def flatten_head_map(t, k: int):
    """A detection head's map ``(N, A*k, H, W)`` -> ``(N, H*W*A, k)`` in (row, column, anchor) order.

    The row count is a constant of the graph, not ``-1``: an exported graph then takes N == 0 too (an
    ONNX Reshape cannot infer ``-1`` from an empty tensor)."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n, int(c) * int(h) * int(w) // k, k)


def as_detections(boxes) -> Detections:
    """Validate user boxes: [M, 4] or [M, 5] (x1, y1, x2, y2[, score]) in image pixels."""
    if isinstance(boxes, Detections):
        return boxes
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (ValueError, TypeError) as e:  # ragged lists, strings, ...
        raise ValueError(
            'boxes must be one list of [x1, y1, x2, y2] (or [x1, y1, x2, y2, score]) numbers in pixels of '
            'this image, every box with the same number of values (for a batch of images with boxes of '
            f'their own, call the pipeline once per image); could not read them as numbers: {e}') from None
    if arr.size == 0:
        return Detections.empty()
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise ValueError(
            f'boxes must be a list of [x1, y1, x2, y2] or [x1, y1, x2, y2, score] in image '
            f'pixels; got an array of shape {arr.shape}.')
    if not np.isfinite(arr).all():
        raise ValueError('boxes contain NaN or infinite values; pass finite pixel coordinates '
                         '[x1, y1, x2, y2].')
    if np.abs(arr[:, :4]).max() > 1e9:  # beyond any image (and float32's range near 3e38)
        raise ValueError(f'boxes contain coordinates up to {np.abs(arr[:, :4]).max():.3g}, far beyond any image; '
                         'pass pixel coordinates [x1, y1, x2, y2] of this image.')
    a32 = arr.astype(np.float32)  # the boxes are used in float32: a size that rounds to 0 there is 0
    bad = (a32[:, 2] <= a32[:, 0]) | (a32[:, 3] <= a32[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f'box {i} {arr[i, :4].tolist()} has zero or negative size; boxes are '
            f'[x1, y1, x2, y2] with x2 > x1 and y2 > y1 (convert [x, y, w, h] boxes first).')
    scores = arr[:, 4] if arr.shape[1] == 5 else np.ones(len(arr))
    return Detections(arr[:, :4], scores)
