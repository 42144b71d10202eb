"""MediaPipe's palm detector (BlazePalm, ``mediapipe==0.10.21``) ported to PyTorch: a hand
detector that works offline and knows the in-plane rotation of each hand.

The weights are converted from MediaPipe's ``palm_detection_{full,lite}.tflite`` by
:mod:`.tflite_convert` and ship in ``modelscope_handkp/weights`` (Apache-2.0, see
``modelscope_handkp/NOTICE``).  What happens to an image, step by step, as in MediaPipe's
``PalmDetectionCpu`` graph and its ``palm_detection_detection_to_roi`` subgraph:

1. **letterbox** (``ImageToTensorCalculator``, ``keep_aspect_ratio``): the square of side
   ``L = max(W, H)`` centred on the image is mapped onto 192x192 (its corners onto the tensor
   corners; bilinear, zero border), RGB, ``/255`` -> ``[0, 1]`` (the model's metadata says
   mean 0, std 255);
2. **network** (:class:`BlazePalm`): raw box/keypoint regressors ``[N, 2016, 18]`` and score
   logits ``[N, 2016, 1]``, in the order of the ``.tflite`` outputs;
3. **anchors** (``SsdAnchorsCalculator``: 4 layers, strides 8, 16, 16, 16, aspect ratio 1 plus
   the interpolated scale, fixed anchor size 1, offsets 0.5) -> 24x24x2 + 12x12x6 = 2016 anchor
   centres, (row, column, anchor) order;
4. **decoding** (``TensorsToDetectionsCalculator``, XYWH order): ``x = raw_x / 192 + anchor_x``,
   ``w = raw_w / 192``, same for y/h and the 7 keypoints; scores ``sigmoid(clip(logit, +-100))``;
   detections with score < 0.5 (``min_score_thresh``) or a negative size are dropped;
5. **weighted NMS** (``NonMaxSuppressionCalculator``, IoU, threshold 0.3, ``WEIGHTED``): by
   decreasing score, every remaining detection whose IoU with the best one is > 0.3 joins it;
   box corners and keypoints are averaged with the scores as weights; the score stays the best's;
6. **letterbox removal** (``DetectionLetterboxRemovalCalculator``) -> image pixels;
7. **hand rectangle** (``DetectionsToRectsCalculator`` + ``RectTransformationCalculator``):
   rotation ``r = 90 deg - atan2(-(y2 - y0), x2 - x0)`` from keypoint 0 (wrist centre) to
   keypoint 2 (middle-finger MCP), wrapped to [-180, 180); the palm box centre moves by half
   the box height towards the fingers (``shift_y = -0.5`` in the rotated frame); the side is
   ``2.6 * max(palm w, palm h)`` (``square_long``, ``scale 2.6``).

MediaPipe's legacy graph uses ``rotation_vector_target_angle_degrees: 90``; its newer Tasks
graph sets the *radian* field to 90 (i.e. ~116.6 deg), which we take to be a slip and do not copy.

Rotation convention: MediaPipe's rect rotation ``r`` maps the rect's "up" onto image direction
``(sin r, -cos r)`` (y down).  That is exactly the ``rotation`` of
:func:`modelscope_handkp.transforms.get_affine_matrix` (``degrees(atan2(dx, -dy))`` for fingers
pointing along ``(dx, dy)``), so :class:`PalmDetector` reports ``degrees(r)`` unchanged: a crop
with that rotation shows the hand upright (fingers up), which ``tests/test_palm.py`` checks.

Checked during development against mediapipe 0.10.21 itself (legacy ``Hands`` graph,
``static_image_mode``, its ``palm_detections`` and ``hand_rects_from_palm_detections`` streams) on
143 images: same detections, same scores, palm boxes/keypoints and hand rectangles within
0.02 px, rotations within 0.013 deg, for both variants.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Detections, HandDetector, flatten_head_map

logger = logging.getLogger(__name__)

__all__ = ['BlazePalm', 'PalmDetector', 'PalmRuntime', 'PALM_BACKENDS', 'PalmDetections', 'build_palm_detector',
           'palm_anchors', 'letterbox_matrices', 'decode_palms', 'weighted_nms', 'palm_to_hand_rects', 'hand_rect_corners',
           'load_palm_weights', 'default_weights_path', 'PALM_INPUT_SIZE', 'PALM_NUM_ANCHORS',
           'PALM_VARIANTS', 'WEIGHTS_DIR']

PALM_INPUT_SIZE = 192
PALM_NUM_ANCHORS = 2016
PALM_NUM_KEYPOINTS = 7  # MediaPipe's palm points; 0 = wrist centre, 2 = middle-finger MCP (used for the rotation)
PALM_VARIANTS = {'full': 4, 'lite': 3}  # BlazeBlocks per backbone stage
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / 'weights'

# MediaPipe's options (palm_detection_cpu.pbtxt, palm_detection_detection_to_roi.pbtxt)
RAW_SCALE = 192.0            # x/y/w/h_scale
SCORE_CLIP = 100.0           # score_clipping_thresh
MIN_SCORE = 0.5              # min_score_thresh
NMS_IOU = 0.3                # min_suppression_threshold
TARGET_ANGLE = math.pi / 2   # rotation_vector_target_angle_degrees: 90
RECT_SCALE = 2.6             # scale_x, scale_y
RECT_SHIFT_Y = -0.5          # shift_y (shift_x = 0)


# ----------------------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------------------
def _same_pad(n: int, k: int, s: int):
    """TensorFlow 'SAME' padding (before, after) of one spatial dimension."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class BlazeBlock(nn.Module):
    """5x5 depthwise conv -> 1x1 conv, plus the input (2x2 max-pooled and zero-padded in the
    channels when the block downsamples), then PReLU.  TFLite 'SAME' padding."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.extra_channels = cout - cin
        # stride 1: SAME = 2 pixels each side; stride 2: asymmetric, padded in forward
        self.dw = nn.Conv2d(cin, cin, 5, stride, padding=2 if stride == 1 else 0, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x):
        if self.stride == 1:
            return self.act(self.pw(self.dw(x)) + x)
        (t, b), (l, r) = _same_pad(x.shape[2], 5, 2), _same_pad(x.shape[3], 5, 2)
        y = self.pw(self.dw(F.pad(x, (l, r, t, b))))
        skip = F.max_pool2d(x, 2, 2)
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(y + skip)


class TopDown(nn.Module):
    """Feature-pyramid step: bilinear x2 (half-pixel centres) -> 1x1 conv -> PReLU, added to
    the lateral backbone feature (no activation after the sum)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x, lateral):
        up = F.interpolate(x, size=lateral.shape[2:], mode='bilinear', align_corners=False)
        return lateral + self.act(self.conv(up))


class PalmHead(nn.Module):
    """Per-location score logits (``anchors``) and regressors (``anchors * 18``)."""

    def __init__(self, cin: int, anchors: int, coords: int = 18):
        super().__init__()
        self.coords = coords
        self.cls = nn.Conv2d(cin, anchors, 1)
        self.reg = nn.Conv2d(cin, anchors * coords, 1)

    def forward(self, x):
        # NHWC flattening, as the .tflite's RESHAPE: anchor index = (row * W + col) * A + a
        return flatten_head_map(self.cls(x), 1), flatten_head_map(self.reg(x), self.coords)


class BlazePalm(nn.Module):
    """MediaPipe's palm detection network (``palm_detection_full`` / ``_lite``).

    Input float32 ``[N, 3, 192, 192]`` RGB in ``[0, 1]``.  Output ``(regressors [N, 2016, 18],
    scores [N, 2016, 1])`` like the ``.tflite`` (its outputs ``Identity`` and ``Identity_1``).
    Stages: stem 5x5/2 conv (96x96x32); BlazeBlocks at 96 (32 ch), 48 (64), 24 (128), 12 (256),
    6 (256), each later stage starting with a stride-2 block; top-down 6 -> 12 (256 ch) and
    12 -> 24 (128 ch) with two BlazeBlocks each; heads at 12x12 (6 anchors per cell) and 24x24
    (2 anchors per cell); the 24x24 anchors come first.
    """

    def __init__(self, variant: str = 'full'):
        super().__init__()
        if variant not in PALM_VARIANTS:
            raise ValueError(f'variant must be one of {sorted(PALM_VARIANTS)}, got {variant!r}')
        self.variant = variant
        n = PALM_VARIANTS[variant]
        widths = [32, 64, 128, 256, 256]
        self.stem = nn.Conv2d(3, 32, 5, 2)
        self.stem_act = nn.PReLU(32)
        stages = [nn.Sequential(*[BlazeBlock(32, 32) for _ in range(n)])]
        for cin, cout in zip(widths[:-1], widths[1:]):
            stages.append(nn.Sequential(BlazeBlock(cin, cout, 2), *[BlazeBlock(cout, cout) for _ in range(n)]))
        self.stages = nn.ModuleList(stages)
        # registration order = execution order of the .tflite (the converter relies on it)
        self.up12 = TopDown(256, 256)
        self.fpn12 = nn.Sequential(BlazeBlock(256, 256), BlazeBlock(256, 256))
        self.head12 = PalmHead(256, 6)
        self.up24 = TopDown(256, 128)
        self.fpn24 = nn.Sequential(BlazeBlock(128, 128), BlazeBlock(128, 128))
        self.head24 = PalmHead(128, 2)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != PALM_INPUT_SIZE or x.shape[3] != PALM_INPUT_SIZE:
            raise ValueError(f'BlazePalm expects float images [N, 3, {PALM_INPUT_SIZE}, {PALM_INPUT_SIZE}] '
                             f'(RGB in [0, 1]); got shape {tuple(x.shape)}')
        (t, b), (l, r) = _same_pad(x.shape[2], 5, 2), _same_pad(x.shape[3], 5, 2)
        x = self.stem_act(self.stem(F.pad(x, (l, r, t, b))))
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        x12 = self.fpn12(self.up12(feats[4], feats[3]))
        s12, r12 = self.head12(x12)
        x24 = self.fpn24(self.up24(x12, feats[2]))
        s24, r24 = self.head24(x24)
        return torch.cat([r24, r12], 1), torch.cat([s24, s12], 1)


# ----------------------------------------------------------------------------------------------
# anchors, preprocessing, decoding, NMS, rectangles
# ----------------------------------------------------------------------------------------------
def palm_anchors(input_size: int = PALM_INPUT_SIZE, strides=(8, 16, 16, 16), offset: float = 0.5,
                 anchors_per_layer: int = 2) -> np.ndarray:
    """float32 [2016, 2] anchor centres (x, y) in [0, 1], as MediaPipe's SsdAnchorsCalculator.

    Consecutive layers with the same stride share one feature map; per cell each layer adds
    ``anchors_per_layer`` anchors (aspect ratio 1.0 plus the interpolated-scale one).  With
    ``fixed_anchor_size`` every anchor has w = h = 1, so only the centres matter.
    """
    out, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = anchors_per_layer * (j - i)
        size = int(math.ceil(input_size / strides[i]))
        ys, xs = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing='ij')
        cx = (xs + np.float32(offset)) / np.float32(size)
        cy = (ys + np.float32(offset)) / np.float32(size)
        centres = np.stack([cx, cy], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
        i = j
    return np.concatenate(out).astype(np.float32)


_CV_WARP_MAX_SIDE = 32766  # OpenCV's warps (cv::remap) refuse a source with a side >= SHRT_MAX
_HUGE_IMAGE_SIDE = 16384     # such images are shrunk to this longer side first


def _warp_source(image: np.ndarray):
    """(source, matrix): what to warp instead of ``image`` and the float64 [3, 3] map from the source's
    pixels to the image's (``None``: the image itself).  Only images with a side over
    ``_CV_WARP_MAX_SIDE`` px (panoramas) are shrunk (area interpolation); the network sees them at
    192 px anyway."""
    h, w = image.shape[:2]
    if max(h, w) <= _CV_WARP_MAX_SIDE:
        return image, None
    k = _HUGE_IMAGE_SIDE / max(h, w)
    nw, nh = max(1, int(round(w * k))), max(1, int(round(h * k)))
    src = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    sx, sy = nw / w, nh / h  # cv2.resize: (x_src + 0.5) = (x + 0.5) * sx
    return src, np.array([[1 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1 / sy, 0.5 / sy - 0.5], [0.0, 0.0, 1.0]])


def letterbox_matrices(sizes, input_size: int = PALM_INPUT_SIZE) -> tuple:
    """For image sizes [(w, h), ...]: (float64 [N, 3, 3] image -> tensor matrices, float64 [N, 4]
    letterbox paddings (left, top, right, bottom) as fractions of the tensor).

    Like MediaPipe's ImageToTensorCalculator with ``keep_aspect_ratio``: the square of side
    ``max(w, h)`` centred on the image maps corner to corner onto the ``input_size`` square.
    """
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    w, h = sizes[:, 0], sizes[:, 1]
    side = np.maximum(w, h)
    k = input_size / side
    mats = np.zeros((len(sizes), 3, 3))
    mats[:, 0, 0] = k
    mats[:, 1, 1] = k
    mats[:, 0, 2] = (side - w) / 2 * k
    mats[:, 1, 2] = (side - h) / 2 * k
    mats[:, 2, 2] = 1.0
    pad_x = (1.0 - w / side) / 2
    pad_y = (1.0 - h / side) / 2
    return mats, np.stack([pad_x, pad_y, pad_x, pad_y], 1)


def decode_palms(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                 min_score: float = MIN_SCORE):
    """One image's raw outputs ``[2016, 18]``, ``[2016, 1]`` -> kept detections in tensor-relative
    coordinates: (boxes float32 [M, 4] xmin, ymin, xmax, ymax; keypoints float32 [M, 7, 2];
    scores float32 [M]).  Float32 arithmetic in MediaPipe's order."""
    raw = np.asarray(raw_boxes, dtype=np.float32).reshape(-1, 18)
    logits = np.asarray(raw_scores, dtype=np.float32).reshape(-1)
    scale = np.float32(RAW_SCALE)
    ax, ay = anchors[:, 0], anchors[:, 1]
    cx = raw[:, 0] / scale + ax  # anchor w = h = 1
    cy = raw[:, 1] / scale + ay
    w = raw[:, 2] / scale
    h = raw[:, 3] / scale
    half = np.float32(2.0)
    boxes = np.stack([cx - w / half, cy - h / half, cx + w / half, cy + h / half], 1)
    kps = raw[:, 4:].reshape(-1, PALM_NUM_KEYPOINTS, 2) / scale + anchors[:, None, :]
    clipped = np.clip(logits, -np.float32(SCORE_CLIP), np.float32(SCORE_CLIP))
    scores = (np.float32(1.0) / (np.float32(1.0) + np.exp(-clipped))).astype(np.float32)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (scores >= np.float32(min_score)) & (bw >= 0) & (bh >= 0)  # NaN compares False
    return boxes[keep], kps[keep], scores[keep]


def _iou_with(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    iw = np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0])
    ih = np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_thr: float = NMS_IOU,
                 max_detections: int | None = None):
    """MediaPipe's WEIGHTED non-maximum suppression (IoU overlap).

    Repeatedly take the best remaining detection; all remaining detections with IoU > ``iou_thr``
    with it (itself included) are merged: corners and keypoints averaged with score weights.
    The merged detection keeps the best score.  Returns (boxes, keypoints, scores), best first.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    keypoints = np.asarray(keypoints, dtype=np.float32).reshape(len(boxes), PALM_NUM_KEYPOINTS, 2)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind='stable')
    out_b, out_k, out_s = [], [], []
    while len(order) and (max_detections is None or len(out_s) < max_detections):
        best = order[0]
        members = _iou_with(boxes[order], boxes[best]) > iou_thr
        idx = order[members]
        if len(idx):
            wgt = scores[idx].astype(np.float64)
            total = wgt.sum()
            out_b.append((boxes[idx] * wgt[:, None]).sum(0) / total)
            out_k.append((keypoints[idx] * wgt[:, None, None]).sum(0) / total)
        else:  # degenerate (empty) box: MediaPipe keeps it as is and stops
            out_b.append(boxes[best].astype(np.float64))
            out_k.append(keypoints[best].astype(np.float64))
        out_s.append(scores[best])
        if not members.any():
            break
        order = order[~members]
    if not out_s:
        return (np.zeros((0, 4), np.float32), np.zeros((0, PALM_NUM_KEYPOINTS, 2), np.float32),
                np.zeros((0,), np.float32))
    return (np.asarray(out_b, np.float32), np.asarray(out_k, np.float32), np.asarray(out_s, np.float32))


def _nms_leaders(boxes: np.ndarray, scores: np.ndarray, iou_thr: float, count: int) -> np.ndarray:
    """int64 [count]: index of the best (leading) member of each cluster :func:`weighted_nms` forms."""
    order = np.argsort(-np.asarray(scores, np.float32), kind='stable')
    leaders = []
    while len(order) and len(leaders) < count:
        best = order[0]
        leaders.append(best)
        members = _iou_with(boxes[order], boxes[best]) > iou_thr
        if not members.any():
            break
        order = order[~members]
    return np.asarray(leaders, np.int64)


def palm_to_hand_rects(palm_boxes: np.ndarray, palm_keypoints: np.ndarray):
    """Palm boxes [M, 4] (x1, y1, x2, y2) and keypoints [M, 7, 2] in image pixels -> hand
    rectangles: (centres float64 [M, 2], sides float64 [M] (squares), rotations float64 [M] in
    radians, MediaPipe's sign: the rect's up = image direction (sin r, -cos r)).

    DetectionsToRectsCalculator (wrist -> middle-finger MCP, target 90 deg), then
    RectTransformationCalculator (shift_y -0.5, square_long, scale 2.6), both in pixels.
    """
    b = np.asarray(palm_boxes, dtype=np.float64).reshape(-1, 4)
    k = np.asarray(palm_keypoints, dtype=np.float64).reshape(len(b), PALM_NUM_KEYPOINTS, 2)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = b[:, 0] + w / 2, b[:, 1] + h / 2
    dx, dy = k[:, 2, 0] - k[:, 0, 0], k[:, 2, 1] - k[:, 0, 1]
    rot = TARGET_ANGLE - np.arctan2(-dy, dx)
    rot = rot - 2 * np.pi * np.floor((rot + np.pi) / (2 * np.pi))  # NormalizeRadians -> [-pi, pi)
    # shift (0, shift_y * h) in the rect's frame, turned by rot into the image
    cx = cx - RECT_SHIFT_Y * h * np.sin(rot)
    cy = cy + RECT_SHIFT_Y * h * np.cos(rot)
    side = np.maximum(w, h) * RECT_SCALE
    return np.stack([cx, cy], 1), side, rot


def hand_rect_corners(centers, sizes, rotations_deg) -> np.ndarray:
    """float64 [M, 4, 2] corners of square hand rectangles (top-left, top-right, bottom-right,
    bottom-left in the hand's own frame) in image pixels."""
    c = np.asarray(centers, np.float64).reshape(-1, 2)
    half = np.asarray(sizes, np.float64).reshape(-1, 1) / 2
    r = np.radians(np.asarray(rotations_deg, np.float64).reshape(-1, 1))
    ex = np.concatenate([np.cos(r), np.sin(r)], 1) * half    # the rect's x axis in the image
    ey = np.concatenate([-np.sin(r), np.cos(r)], 1) * half   # the rect's downward axis
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    return c[:, None, :] + signs[None, :, :1] * ex[:, None, :] + signs[None, :, 1:] * ey[:, None, :]


@dataclass
class PalmDetections:
    """Palms found in one image, in image pixels, best first.

    ``boxes`` float32 [M, 4] axis-aligned palm boxes (x1, y1, x2, y2); ``keypoints`` float32
    [M, 7, 2] (0 = wrist centre, 2 = middle-finger MCP; MediaPipe's palm points); ``scores``
    float32 [M]; hand rectangles: ``centers`` float32 [M, 2], ``sizes`` float32 [M] (square side),
    ``rotations`` float32 [M] in degrees (convention of ``transforms.get_affine_matrix``);
    ``image_size`` (w, h).
    """

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    rotations: np.ndarray
    image_size: tuple = (0, 0)  # (w, h) of the image
    from_tiles: np.ndarray = None  # bool [M]: found by the tile pass (see .tiling); all False without it

    def __post_init__(self):
        if self.from_tiles is None:
            self.from_tiles = np.zeros(len(self.scores), bool)

    def __len__(self):
        return len(self.scores)

    def corners(self) -> np.ndarray:
        """float64 [M, 4, 2] corners of the rotated hand rectangles (see :func:`hand_rect_corners`)."""
        return hand_rect_corners(self.centers, self.sizes, self.rotations)


# ----------------------------------------------------------------------------------------------
# detector
# ----------------------------------------------------------------------------------------------
def default_weights_path(variant: str = 'full') -> Path:
    return WEIGHTS_DIR / f'palm_detection_{variant}.pt'


PALM_BACKENDS = ('auto', 'eager', 'openvino', 'onnxruntime')
PALM_SELF_CHECK_ATOL = 2e-3  # raw outputs are in 192-px units (regressors) and logits; measured ~1e-4


class PalmRuntime:
    """The palm network exported once to ONNX (cached next to the keypoint graphs, see
    :func:`modelscope_handkp.backends.onnx_cache_dir`) and run by OpenVINO or ONNX Runtime on the CPU.

    BlazePalm is many small depthwise convolutions, where PyTorch's per-operator overhead dominates:
    on 2 cores OpenVINO runs one image in 11-14 ms against 27-45 ms for eager PyTorch, ONNX Runtime
    in 20-27 ms (measured while porting; the end-to-end effect is in ``benchmarks/eval_hgc.py``).  The
    outputs equal the eager network's within float32 rounding; :meth:`build` checks that on a
    random batch before the runtime is used.
    """

    def __init__(self, model: 'BlazePalm', kind: str, num_threads: int | None = None):
        from ..backends import (cached_onnx, openvino_compile, openvino_core, ort_session, physical_cores,
                                require_module)
        from ..export import export_palm_net
        if kind not in ('openvino', 'onnxruntime'):
            raise ValueError(f"PalmRuntime kind must be 'openvino' or 'onnxruntime', got {kind!r}")
        require_module(kind, 'openvino' if kind == 'openvino' else 'onnx')  # before the export
        self.kind = kind
        threads = int(num_threads) if num_threads else physical_cores()
        self.path = cached_onnx(model, f'palm_detector_{model.variant}', export_palm_net, 'palm detector network')
        if kind == 'openvino':
            core = openvino_core(self.path.parent)
            self._request = openvino_compile(core, core.read_model(str(self.path)), threads).create_infer_request()
            self._lock = threading.Lock()  # one infer request: a second thread would get 'busy' or our outputs
        else:
            self._session = ort_session(self.path, threads)

    def __repr__(self):
        return f'PalmRuntime(kind={self.kind!r})'

    def __call__(self, x: np.ndarray):
        """float32 [N, 3, 192, 192] -> (regressors float32 [N, 2016, 18], score logits [N, 2016, 1])."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.kind == 'openvino':
            with self._lock:
                self._request.infer({0: x})
                return (np.array(self._request.get_output_tensor(0).data, copy=True),
                        np.array(self._request.get_output_tensor(1).data, copy=True))
        regs, scores = self._session.run(None, {'images': x})
        return regs, scores

    @classmethod
    def build(cls, model: 'BlazePalm', kind: str = 'auto', num_threads: int | None = None):
        """The runtime for ``kind`` ('openvino', 'onnxruntime'; 'auto' = the first of them that builds
        and passes the self-check), or ``None`` for eager PyTorch ('eager', or nothing usable; the
        reason is logged)."""
        from ..backends import BackendError
        if kind not in PALM_BACKENDS:
            raise ValueError(f'unknown palm detector backend {kind!r}; choose one of {PALM_BACKENDS}')
        if kind == 'eager':
            return None
        for candidate in (('openvino', 'onnxruntime') if kind == 'auto' else (kind, )):
            try:
                runtime = cls(model, candidate, num_threads)
                runtime.self_check(model)
                return runtime
            except Exception as e:  # noqa: BLE001
                if kind != 'auto':
                    raise
                quiet = isinstance(e, BackendError) and 'not installed' in str(e)
                logger.log(logging.DEBUG if quiet else logging.WARNING, 'palm detector backend %s not used (%s: %s)',
                           candidate, type(e).__name__, e)
        return None

    @torch.inference_mode()
    def self_check(self, model: 'BlazePalm') -> None:
        from ..backends import BackendError
        x = torch.rand(2, 3, PALM_INPUT_SIZE, PALM_INPUT_SIZE, generator=torch.Generator().manual_seed(0))
        ref = model(x)
        got = self(x.numpy())
        diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))
        if not diff <= PALM_SELF_CHECK_ATOL:
            raise BackendError(f'{self.kind} palm outputs differ from the eager network by {diff:.2e}')


class PalmDetector(HandDetector):
    """Hand detector from MediaPipe's palm detector (see the module docstring for the steps).

    :meth:`detect_hands` gives rotated hand rectangles (:class:`Detections` with rotations);
    :meth:`detect` their axis-aligned enclosing boxes; :meth:`palms` the palm boxes and the 7
    palm keypoints; :meth:`forward_raw` the raw network outputs.  All accept one RGB uint8 image
    ``(H, W, 3)`` or a list of them (one batched forward) and return one result or a list.

    ``score_thr`` (default 0.5, MediaPipe's ``min_detection_confidence``) is applied to the
    decoded anchors before the weighted NMS, as in MediaPipe.  ``max_hands`` keeps only the best
    ones (MediaPipe's ``num_hands``; ``None`` = all).

    MediaPipe's hand rectangles already include a margin (their side is about 1.14 times the
    longer side of the hand box, median on open_hands val), so the keypoint crop pads them by ``crop_padding``
    only, which makes the crop about as large as the 1.25-padded tight boxes of training.
    """

    crop_padding = 1.1

    def __init__(self, model: BlazePalm, device='cpu', score_thr: float = MIN_SCORE,
                 iou_thr: float = NMS_IOU, max_hands: int | None = None, tiles='off', backend: str = 'auto'):
        from .tiling import tile_settings
        if backend not in PALM_BACKENDS:
            raise ValueError(f'unknown palm detector backend {backend!r}; choose one of {PALM_BACKENDS}')
        self.backend = backend  # 'auto': OpenVINO / ONNX Runtime on the CPU when installed (PalmRuntime)
        self._runtime = None
        self._runtime_for = None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.score_thr = float(score_thr)
        self.iou_thr = float(iou_thr)
        self.max_hands = max_hands
        self.anchors = palm_anchors()
        self.tiles = tile_settings(tiles)  # zoom-in pass for small hands (see .tiling)

    # -- preprocessing --------------------------------------------------------------------
    @staticmethod
    def _as_list(images):
        from ..transforms import ensure_rgb_uint8
        # one image: any array-like (ndarray, PIL image, CPU tensor) that is not [N, H, W, C]; a list,
        # tuple, 4-D array or other iterable is a batch (a 3-D tensor is one image, not H images)
        array_like = isinstance(images, np.ndarray) or hasattr(images, '__array__') or \
            hasattr(images, '__array_interface__')
        single = not isinstance(images, (list, tuple)) and array_like and np.ndim(images) != 4
        seq = [images] if single else list(images)
        return single, [ensure_rgb_uint8(im) for im in seq]

    def preprocess(self, images):
        """RGB uint8 images -> (float32 tensor [N, 3, 192, 192] in [0, 1], letterbox paddings
        float64 [N, 4] (left, top, right, bottom) as fractions of the tensor)."""
        _, images = self._as_list(images)
        sizes = [(im.shape[1], im.shape[0]) for im in images]
        mats, pads = letterbox_matrices(sizes)
        batch = np.empty((len(images), PALM_INPUT_SIZE, PALM_INPUT_SIZE, 3), np.uint8)
        for i, (im, m) in enumerate(zip(images, mats)):
            src, to_image = _warp_source(im)
            # MediaPipe warps the uint8 image (cv::warpPerspective, bilinear, zero border), then scales
            cv2.warpPerspective(src, m if to_image is None else m @ to_image, (PALM_INPUT_SIZE, PALM_INPUT_SIZE),
                                dst=batch[i], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return x, pads

    # -- network --------------------------------------------------------------------------
    @torch.inference_mode()
    def forward_raw(self, input_tensor):
        """Raw outputs for float32 ``[N, 3, 192, 192]`` (RGB, [0, 1]) -> (regressors
        ``[N, 2016, 18]``, score logits ``[N, 2016, 1]``) as float32 torch tensors on the CPU.
        (The ``.tflite`` takes NHWC: ``tflite_input.transpose(0, 3, 1, 2)`` gives this input.)"""
        x = torch.as_tensor(input_tensor, dtype=torch.float32)
        runtime = self.runtime
        if runtime is not None and x.shape[0] > 0:
            try:
                regs, scores = runtime(x.cpu().numpy())
                return torch.from_numpy(regs), torch.from_numpy(scores)
            except Exception as e:  # noqa: BLE001
                if self.backend != 'auto':
                    raise
                logger.warning('palm detector backend %s failed (%s: %s); continuing with eager PyTorch',
                               runtime.kind, type(e).__name__, e)
                self.backend = 'eager'  # the runtime property now gives None
        regs, scores = self.model(x.to(self.device))
        return regs.float().cpu(), scores.float().cpu()

    @property
    def runtime(self):
        """The :class:`PalmRuntime` in use (built on first use), or ``None`` for eager PyTorch
        (``backend='eager'``, a GPU device, or no runtime installed)."""
        key = (self.backend, str(self.device))
        if self._runtime_for != key:
            self._runtime = (PalmRuntime.build(self.model, self.backend) if self.device.type == 'cpu' else None)
            self._runtime_for = key
        return self._runtime

    # -- post-processing --------------------------------------------------------------------
    def postprocess(self, raw_boxes, raw_scores, pads, image_size, score_thr=None) -> PalmDetections:
        """One image's raw outputs ``[2016, 18]``, ``[2016, 1]`` + its letterbox paddings and
        (w, h) -> :class:`PalmDetections` in image pixels."""
        thr = self.score_thr if score_thr is None else float(score_thr)
        boxes, kps, scores = decode_palms(raw_boxes, raw_scores, self.anchors, thr)
        boxes, kps, scores = weighted_nms(boxes, kps, scores, self.iou_thr, self.max_hands)
        w, h = float(image_size[0]), float(image_size[1])
        left, top, right, bottom = (float(p) for p in pads)
        sx, sy = 1.0 - left - right, 1.0 - top - bottom
        # DetectionLetterboxRemovalCalculator, then relative -> pixels
        bx = np.empty(boxes.shape, np.float64)
        bx[:, 0::2] = (boxes[:, 0::2] - left) / sx * w
        bx[:, 1::2] = (boxes[:, 1::2] - top) / sy * h
        kp = np.empty(kps.shape, np.float64)
        kp[..., 0] = (kps[..., 0] - left) / sx * w
        kp[..., 1] = (kps[..., 1] - top) / sy * h
        centers, sides, rots = palm_to_hand_rects(bx, kp)
        return PalmDetections(bx.astype(np.float32), kp.astype(np.float32), scores.astype(np.float32),
                              centers.astype(np.float32), sides.astype(np.float32),
                              np.degrees(rots).astype(np.float32), (int(w), int(h)))

    # -- public API ---------------------------------------------------------------------------
    def palms(self, images, score_thr=None, tiles: bool = True):
        """:class:`PalmDetections` for one image, or a list of them for a list of images.

        With the detector's ``tiles`` setting not ``'off'`` (and ``tiles=True`` here), images whose
        whole-image pass found nothing (``'fallback'``) or all images (``'always'``) are searched
        again on overlapping tiles (:meth:`tile_palms`); their hands have ``from_tiles`` set."""
        single, ims = self._as_list(images)
        if not ims:
            return []
        x, pads = self.preprocess(ims)
        regs, scores = self.forward_raw(x)
        regs, scores = regs.numpy(), scores.numpy()
        out = [self.postprocess(regs[i], scores[i], pads[i], (im.shape[1], im.shape[0]), score_thr)
               for i, im in enumerate(ims)]
        mode = self.tiles.mode
        if tiles and mode != 'off':
            need = [i for i, p in enumerate(out) if mode == 'always' or len(p) == 0]
            if need:
                tiled = self.tile_palms([ims[i] for i in need], score_thr,
                                        whole=[out[i] for i in need] if mode == 'always' else None)
                for i, p in zip(need, tiled):
                    out[i] = p
        return out[0] if single else out

    def tile_palms(self, images, score_thr=None, whole=None):
        """Palms found on overlapping tiles of each image (see :mod:`.tiling`), merged across tiles
        (and with ``whole``, the images' whole-image :class:`PalmDetections`, when given) by the
        weighted NMS, in image pixels.  All tiles of all images share one batched forward (chunks of
        ``tiles.max_batch``).  Images whose tiles would be under ``tiles.min_side`` px are not tiled."""
        from .tiling import tile_matrices, tile_palm_keep, tile_windows
        cfg = self.tiles
        single, ims = self._as_list(images)
        if whole is None:
            whole = [None] * len(ims)
        elif single and isinstance(whole, PalmDetections):
            whole = [whole]
        thr = cfg.score_thr if cfg.score_thr is not None else (self.score_thr if score_thr is None
                                                               else float(score_thr))
        windows, owner = [], []
        for i, im in enumerate(ims):
            h, w = im.shape[:2]
            win = tile_windows(w, h, cfg.tiles, cfg.overlap)
            if win[0, 2] - win[0, 0] < cfg.min_side:
                continue
            windows.append(win)
            owner.extend([i] * len(win))
        wins = np.concatenate(windows) if windows else np.zeros((0, 4))
        owner = np.asarray(owner, np.int64)
        n = len(wins)
        batch = np.empty((n, PALM_INPUT_SIZE, PALM_INPUT_SIZE, 3), np.uint8)
        sources = {}
        for t, m in enumerate(tile_matrices(wins, PALM_INPUT_SIZE)):
            if owner[t] not in sources:
                sources[owner[t]] = _warp_source(ims[owner[t]])
            src, to_image = sources[owner[t]]
            if to_image is not None:
                m = (np.vstack([m, [0.0, 0.0, 1.0]]) @ to_image)[:2]
            cv2.warpAffine(src, m, (PALM_INPUT_SIZE, PALM_INPUT_SIZE), dst=batch[t],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        sources.clear()
        regs, logits = [], []
        for a in range(0, n, cfg.max_batch):
            x = torch.from_numpy(batch[a:a + cfg.max_batch]).permute(0, 3, 1, 2).to(torch.float32) / 255.0
            r, s = self.forward_raw(x)
            regs.append(r.numpy())
            logits.append(s.numpy())
        regs = np.concatenate(regs) if regs else np.zeros((0, PALM_NUM_ANCHORS, 18), np.float32)
        logits = np.concatenate(logits) if logits else np.zeros((0, PALM_NUM_ANCHORS, 1), np.float32)
        found = [[] for _ in ims]  # per image: (boxes, keypoints, scores, from_tiles)
        for t in range(n):
            side = float(wins[t, 2] - wins[t, 0])
            boxes, kps, scores = decode_palms(regs[t], logits[t], self.anchors, thr)
            if not len(scores):
                continue
            # tensor [0, 1] -> window pixels -> image pixels (exact: shift + uniform scale)
            boxes = boxes.astype(np.float64) * side + np.tile(wins[t, :2], 2)
            kps = kps.astype(np.float64) * side + wins[t, :2]
            im = ims[owner[t]]
            keep = tile_palm_keep(boxes, wins[t], (im.shape[1], im.shape[0]), cfg.edge_margin)
            if keep.any():
                found[owner[t]].append((boxes[keep], kps[keep], scores[keep], np.ones(int(keep.sum()), bool)))
        # no tile palm: the whole-image palms as they are (merging them again could fuse two hands)
        out = [whole[i] if not found[i] and whole[i] is not None else
               self._merge(found[i], whole[i], (im.shape[1], im.shape[0])) for i, im in enumerate(ims)]
        return out[0] if single else out

    def _merge(self, parts, whole, image_size) -> PalmDetections:
        """Weighted NMS over tile palms (and the whole-image palms) in image pixels; a merged hand is
        ``from_tiles`` when its best member came from a tile."""
        if whole is not None and len(whole):
            parts = parts + [(whole.boxes, whole.keypoints, whole.scores, np.zeros(len(whole), bool))]
        if not parts:
            z = np.zeros((0,), np.float32)
            return PalmDetections(np.zeros((0, 4), np.float32), np.zeros((0, PALM_NUM_KEYPOINTS, 2), np.float32),
                                  z, np.zeros((0, 2), np.float32), z, z, tuple(int(v) for v in image_size),
                                  np.zeros((0,), bool))
        boxes = np.concatenate([p[0] for p in parts]).astype(np.float32)
        kps = np.concatenate([p[1] for p in parts]).astype(np.float32)
        scores = np.concatenate([p[2] for p in parts]).astype(np.float32)
        tiled = np.concatenate([p[3] for p in parts])
        # which input is each merged detection's best one: weighted_nms visits by decreasing score
        # (stable), so the k-th output's best member is the k-th survivor of that order; recover it by
        # re-running the greedy selection on the flags (same order, same IoU test)
        mb, mk, ms = weighted_nms(boxes, kps, scores, self.iou_thr, self.max_hands)
        best = _nms_leaders(boxes, scores, self.iou_thr, len(ms))
        centers, sides, rots = palm_to_hand_rects(mb, mk)
        return PalmDetections(mb.astype(np.float32), mk.astype(np.float32), ms.astype(np.float32),
                              centers.astype(np.float32), sides.astype(np.float32),
                              np.degrees(rots).astype(np.float32), tuple(int(v) for v in image_size),
                              tiled[best])

    def _to_detections(self, p: PalmDetections) -> Detections:
        half = p.sizes[:, None] / 2
        boxes = np.concatenate([p.centers - half, p.centers + half], 1)
        if self.tiles.mode == 'off':
            return Detections(boxes, p.scores, p.rotations)
        from .tiling import TiledDetections
        return TiledDetections(boxes, p.scores, p.rotations, p.from_tiles, self.tiles.min_keypoint_score)

    def detect_hands(self, image_rgb, score_thr=None):
        """Hand rectangles: :class:`Detections` whose ``boxes`` are the squares centred on the hand
        in the hand's own frame (to be turned by ``rotations`` degrees about their centre), best
        first.  A list of images gives a list of :class:`Detections`."""
        res = self.palms(image_rgb, score_thr)
        if isinstance(res, list):
            return [self._to_detections(p) for p in res]
        return self._to_detections(res)

    def detect(self, image_rgb, score_thr=None, clip: bool = False):
        """float32 [M, 5] (x1, y1, x2, y2, score), best first: the axis-aligned boxes enclosing the
        rotated hand rectangles, in image pixels.  Not clipped to the image unless ``clip=True``
        (MediaPipe's hand rectangles may extend past the border; clipping would move their
        centres).  A list of images gives a list of arrays."""
        res = self.palms(image_rgb, score_thr)
        items = res if isinstance(res, list) else [res]
        out = []
        for p in items:
            rad = np.radians(p.rotations.astype(np.float64))
            half = p.sizes.astype(np.float64) / 2 * (np.abs(np.cos(rad)) + np.abs(np.sin(rad)))
            c = p.centers.astype(np.float64)
            boxes = np.stack([c[:, 0] - half, c[:, 1] - half, c[:, 0] + half, c[:, 1] + half], 1)
            if clip:
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, p.image_size[0])
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, p.image_size[1])
            out.append(np.concatenate([boxes, p.scores[:, None]], 1).astype(np.float32))
        return out if isinstance(res, list) else out[0]


def load_palm_weights(model: BlazePalm, weights=None) -> BlazePalm:
    path = Path(weights) if weights is not None else default_weights_path(model.variant)
    if not path.is_file():
        raise FileNotFoundError(
            f'palm detector weights {path} not found. The package ships palm_detection_full.pt and '
            f'palm_detection_lite.pt in {WEIGHTS_DIR}; to regenerate them run '
            f'`python tools/convert_palm_detector.py` (needs `pip install tflite` and PyPI access).')
    from ..checkpoint import CheckpointError, check_state_dict, read_state_dict
    try:  # a safe read (weights_only) with the checkpoint reader's messages for truncated / foreign files
        state = read_state_dict(str(path))
        check_state_dict(model, state)  # missing, unexpected and wrongly shaped keys, before anything is loaded
    except CheckpointError as e:
        raise ValueError(f'{path} is not usable as the weights of BlazePalm({model.variant!r}) (is it the '
                         f'{model.variant} variant, converted by tools/convert_palm_detector.py?): {e}') from None
    model.load_state_dict(state, strict=True)
    return model


def build_palm_detector(variant: str = 'full', device='cpu', weights=None, score_thr: float = MIN_SCORE,
                        max_hands: int | None = None, tiles='fallback', backend: str = 'auto') -> PalmDetector:
    """The bundled MediaPipe palm detector (``variant`` 'full' or 'lite') as a hand detector.

    ``weights``: another converted weights file (default: the shipped one).  ``tiles``: the zoom-in
    pass for small hands (:class:`~modelscope_handkp.detection.tiling.TileSettings`, a dict of its
    fields, or just the mode ``'fallback'`` (default: tiles only when the whole image gives no hand),
    ``'always'`` or ``'off'`` (MediaPipe's detector exactly)).  ``backend``: ``'auto'`` (OpenVINO, else
    ONNX Runtime, else eager PyTorch, on the CPU), ``'eager'``, ``'openvino'`` or ``'onnxruntime'``.
    """
    if variant not in PALM_VARIANTS:
        raise ValueError(f"variant must be 'full' or 'lite', got {variant!r}")
    model = load_palm_weights(BlazePalm(variant), weights)
    return PalmDetector(model, device=device, score_thr=score_thr, max_hands=max_hands, tiles=tiles, backend=backend)
