"""Zoom-in fallback for small hands: run a detector on overlapping square tiles of the image.

MediaPipe's palm detector sees the whole image letterboxed to 192x192, so a hand whose palm is
smaller than about 8-10 px *at that resolution* is not found (in a 640x429 photo: hands under
~30 px, e.g. the batter in COCO 000000196141).  :class:`TileSettings` describes how
:class:`~modelscope_handkp.detection.palm.PalmDetector` looks again, closer:

* **geometry** (:func:`tile_windows`): ``tiles`` square windows across the longer image side,
  neighbours sharing ``overlap`` of their side; along the shorter side as many windows of the same
  side as needed to cover it with at least that overlap, spaced evenly (one centred window when
  the side is shorter than a window; the part outside the image is black, like the letterbox).
  Each window is warped straight onto the 192x192 network input (one ``cv2.warpAffine`` per tile:
  crop and resize at once), so a tile detection at tensor coordinates ``(u, v)`` in ``[0, 1]`` is
  at ``(x0 + u * side, y0 + v * side)`` in the image — exactly, rotations unchanged (translation
  and uniform scale only).
* **merging** (:func:`tile_palm_keep` + the palm detector's weighted NMS): palms whose box reaches
  within ``edge_margin`` of a tile edge *inside* the image are dropped (the tile cut them; with the
  overlap a whole palm lies in a neighbouring tile); the rest, from all tiles (and the whole-image
  pass in ``'always'`` mode), go through MediaPipe's weighted NMS in image pixels, and the hand
  rectangle (centre, side, rotation) is derived from the merged palm, as for a whole-image palm.
  On a small hand the palm network often fires on several parts of the hand (e.g. once upright and
  once upside down); their palm boxes barely overlap, so the palm NMS keeps them all, but the hand
  squares derived from them cover the same hand: :func:`distinct_tile_hands` drops a tile hand whose
  square overlaps a whole-image hand's or a better-scored tile hand's by IoU > :data:`TILE_HAND_IOU` (the
  pipeline applies it).
* **when**: ``mode='fallback'`` (default) tiles only the images where the whole-image pass found no
  hand; ``'always'`` tiles every image and merges (more small hands, but also many false hands: about one
  per image on open_hands' val photos with the default verification; raise ``min_keypoint_score``);
  ``'off'`` is the plain MediaPipe detector.
* **verification** (``min_keypoint_score``, default 0.22): tile hands are small and a zoomed-in
  tile shows texture that can look like a palm; the keypoint pipeline drops a hand that came from
  the tiles when the mean of its 21 keypoint heatmap scores is below this (``None``: keep all).
  The value depends on the keypoint model; 0.22 was chosen with the starter model (128x128) on
  open_hands val (hands_dataset images shrunk 4x into 640x480 mosaics: all 138 tile-found hands
  score >= 0.256, 2 of 7 false tile detections < 0.22) and ../shared/data/hands (the batter in
  COCO 000000196141 scores 0.226, the false tile detections there 0.18-0.21).  See
  :meth:`modelscope_handkp.pipeline.HandKeypointsPipeline.forward_many`.

Cost: the tiles of all images that need them go through the network in one batched forward
(chunks of ``max_batch``): ``T = tiles x rows`` extra 192x192 forwards (5 x 4 = 20 for a 640x429
photo with the defaults: windows of 160 px), i.e. about ``T`` times the network cost of the whole-image
pass (measured on this 2-core CPU under load: ~0.15 s whole image, ~1-2.5 s with the 20 tiles), paid only by images without
a whole-image hand in ``'fallback'`` mode; the warps are ``T`` ``cv2.warpAffine`` calls of 192x192
outputs, the decoding and NMS are vectorised over anchors.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from .base import Detections, box_iou

__all__ = ['TileSettings', 'TILE_MODES', 'tile_windows', 'tile_matrices', 'tile_palm_keep', 'TiledDetections',
           'tile_settings', 'distinct_tile_hands', 'TILE_HAND_IOU']

#: Hand squares from the tile pass overlapping a better hand by more than this IoU are the same hand
#: (MediaPipe's threshold for associating hand rectangles, ``AssociationNormRectCalculator``).
TILE_HAND_IOU = 0.5

TILE_MODES = ('fallback', 'always', 'off')


@dataclass
class TileSettings:
    """How (and whether) the palm detector looks at overlapping tiles; see the module docstring.

    ``mode``: ``'fallback'`` | ``'always'`` | ``'off'``.  ``tiles``: windows across the longer
    side (>= 2).  ``overlap``: fraction of a window's side shared by neighbours, in [0, 0.9].
    ``min_side``: no tiling when the windows would be smaller than this many image pixels (small
    images: the whole-image pass already sees them at full resolution).  ``score_thr``: palm score
    threshold in the tiles (``None``: the detector's).  ``edge_margin``: fraction of the window side;
    tile palms reaching that close to an inner tile edge are dropped.  ``min_keypoint_score``: the
    pipeline drops tile hands whose mean keypoint score is below this (``None``: no check).
    ``max_batch``: tiles per network forward.
    """

    mode: str = 'fallback'
    tiles: int = 5
    overlap: float = 0.25
    min_side: float = 96.0
    score_thr: float | None = None
    edge_margin: float = 0.02
    min_keypoint_score: float | None = 0.22
    max_batch: int = 64

    def __post_init__(self):
        self.mode = str(self.mode).lower()
        if self.mode not in TILE_MODES:
            raise ValueError(f'tiles.mode must be one of {TILE_MODES}, got {self.mode!r}.')
        if int(self.tiles) != self.tiles or self.tiles < 2:
            raise ValueError(f'tiles.tiles (windows across the longer image side) must be an integer >= 2, '
                             f'got {self.tiles!r}.')
        self.tiles = int(self.tiles)
        if not 0.0 <= float(self.overlap) <= 0.9:
            raise ValueError(f'tiles.overlap must be a fraction in [0, 0.9], got {self.overlap!r}.')
        self.overlap = float(self.overlap)
        for name in ('score_thr', 'min_keypoint_score'):
            v = getattr(self, name)
            if v is not None and not 0.0 <= float(v) <= 1.0:
                raise ValueError(f'tiles.{name} must be in [0, 1] or null, got {v!r}.')
            setattr(self, name, None if v is None else float(v))
        if not 0.0 <= float(self.edge_margin) < 0.5:
            raise ValueError(f'tiles.edge_margin must be in [0, 0.5), got {self.edge_margin!r}.')
        self.edge_margin = float(self.edge_margin)
        self.min_side = float(self.min_side)
        self.max_batch = max(1, int(self.max_batch))

    def to_config(self) -> dict:
        return asdict(self)


def tile_settings(value) -> TileSettings:
    """A :class:`TileSettings` from ``None`` (defaults), a mode string, a dict (configuration.json's
    ``detector.tiles``) or a :class:`TileSettings`."""
    if value is None:
        return TileSettings()
    if isinstance(value, TileSettings):
        return value
    if isinstance(value, str):
        return TileSettings(mode=value)
    if isinstance(value, dict):
        known = {f.name for f in fields(TileSettings)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f'unknown tiles setting(s) {unknown}; known: {sorted(known)}.')
        return TileSettings(**value)
    raise TypeError(f"tiles must be None, a mode ('fallback', 'always', 'off'), a dict or TileSettings; "
                    f'got {type(value).__name__}.')


def _axis_starts(length: float, side: float, overlap: float, count: int | None = None) -> np.ndarray:
    """Window starts along one axis: ``count`` windows (or as many as needed for the overlap)
    spaced evenly from 0 to ``length - side``; one centred window when ``length <= side``."""
    if length <= side:
        return np.array([(length - side) / 2.0])
    if count is None:
        count = int(math.ceil((length - side) / (side * (1.0 - overlap)) - 1e-9)) + 1
    return np.linspace(0.0, length - side, max(count, 2))


def tile_windows(width: int, height: int, tiles: int = 5, overlap: float = 0.25) -> np.ndarray:
    """float64 [T, 4] square windows (x1, y1, x2, y2) in image pixels, row-major.

    ``tiles`` windows of side ``L / (tiles - (tiles - 1) * overlap)`` (``L`` = the longer side)
    cover the longer side, neighbours overlapping by ``overlap`` of the side; the shorter side gets
    the fewest windows that overlap at least as much (see the module docstring)."""
    w, h = float(width), float(height)
    long_side = max(w, h)
    side = long_side / (tiles - (tiles - 1) * overlap)
    xs = _axis_starts(w, side, overlap, tiles if w >= h else None)
    ys = _axis_starts(h, side, overlap, tiles if h > w else None)
    y0, x0 = np.meshgrid(ys, xs, indexing='ij')
    x0, y0 = x0.reshape(-1), y0.reshape(-1)
    return np.stack([x0, y0, x0 + side, y0 + side], 1)


def tile_matrices(windows: np.ndarray, input_size: int) -> np.ndarray:
    """float64 [T, 2, 3] affine matrices mapping each window onto the ``input_size`` square
    (corner to corner, as the letterbox maps the image square)."""
    win = np.asarray(windows, np.float64).reshape(-1, 4)
    k = input_size / (win[:, 2] - win[:, 0])
    mats = np.zeros((len(win), 2, 3))
    mats[:, 0, 0] = k
    mats[:, 1, 1] = k
    mats[:, 0, 2] = -win[:, 0] * k
    mats[:, 1, 2] = -win[:, 1] * k
    return mats


def tile_palm_keep(palm_boxes: np.ndarray, window: np.ndarray, image_size, edge_margin: float) -> np.ndarray:
    """bool [M]: palms (image pixels) not cut by an inner edge of ``window`` (x1, y1, x2, y2).

    A palm is dropped when its box comes within ``edge_margin * side`` of a window edge that lies
    inside the image (edges on or beyond the image border do not cut anything)."""
    b = np.asarray(palm_boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (float(v) for v in window)
    w, h = float(image_size[0]), float(image_size[1])
    m = edge_margin * (x2 - x1)
    keep = np.ones(len(b), bool)
    if x1 > 0:
        keep &= b[:, 0] >= x1 + m
    if y1 > 0:
        keep &= b[:, 1] >= y1 + m
    if x2 < w:
        keep &= b[:, 2] <= x2 - m
    if y2 < h:
        keep &= b[:, 3] <= y2 - m
    return keep


class TiledDetections(Detections):
    """:class:`Detections` that also say which hands came from the tile pass (``from_tiles`` bool
    [M]) and the keypoint-score check those hands must pass (``min_keypoint_score``, or None)."""

    def __init__(self, boxes, scores, rotations=None, from_tiles=None, min_keypoint_score=None):
        super().__init__(boxes, scores, rotations)
        ft = np.zeros(len(self.boxes), bool) if from_tiles is None else np.asarray(from_tiles, bool).reshape(-1)
        if len(ft) != len(self.boxes):
            raise ValueError(f'TiledDetections: {len(self.boxes)} boxes but {len(ft)} from_tiles flags.')
        self.from_tiles = ft
        self.min_keypoint_score = min_keypoint_score

    def take(self, index) -> 'TiledDetections':
        return TiledDetections(self.boxes[index], self.scores[index], self.rotations[index],
                               self.from_tiles[index], self.min_keypoint_score)


def distinct_tile_hands(dets: Detections, iou_thr: float = TILE_HAND_IOU) -> np.ndarray:
    """int64 indices (ascending) of the hands of ``dets`` to keep: all of them, except hands from the
    tile pass whose square (``boxes``, the hand rectangle in its own frame) overlaps by IoU > ``iou_thr``
    that of a whole-image hand or of a better kept tile hand -- several palm hits on one small hand.
    Hands without the ``from_tiles`` flag (whole-image hands, other detectors) are always kept."""
    n = len(dets)
    from_tiles = getattr(dets, 'from_tiles', None)
    if n < 2 or from_tiles is None or not np.any(from_tiles):
        return np.arange(n, dtype=np.int64)
    iou = box_iou(dets.boxes, dets.boxes)
    order = np.argsort(-dets.scores, kind='stable')
    tile = np.asarray(from_tiles, bool)
    kept: list[int] = [i for i in order.tolist() if not tile[i]]  # whole-image hands first, whatever their score
    for i in order.tolist():
        if tile[i] and not (kept and float(iou[i, kept].max()) > iou_thr):
            kept.append(i)
    return np.sort(np.asarray(kept, np.int64))
