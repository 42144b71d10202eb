"""Hands across video frames: stable track ids and one-euro smoothing of keypoints.

:class:`OneEuroFilter` is the 1-euro filter of Casiez, Roussel and Vogel (CHI 2012), vectorised over
arrays of any shape: a first-order low-pass filter whose cut-off frequency rises with the (low-passed)
speed of the signal, so slow jitter is smoothed strongly and fast motion is followed with little lag::

    f = OneEuroFilter(min_cutoff=1.0, beta=0.05, d_cutoff=1.0, freq=30.0)
    smooth = [f(x, t) for t, x in samples]      # x: array [...]; t: seconds (or None: 1 / freq apart)

:class:`HandTracker` gives each hand of a frame a stable integer id and smooths its keypoints::

    tracker = HandTracker(max_missed=5)
    for t, frame in frames:
        out = tracker.update(pipe(frame), t)      # same keys + 'track_ids' int64 [N]; keypoints smoothed

Matching (per frame): an affinity matrix between the live tracks and the new hands, the mean of the
box IoU and a keypoint similarity (``1 - mean keypoint distance / (0.5 * the track's box diagonal)``,
clipped to [0, 1], weighted by the keypoint scores, keypoints with non-finite x, y left out), both
measured against where each track's hand should be now: its last detection (not its smoothed keypoints,
which lag) moved on by the track's velocity, at most one hand size -- so two hands whose paths cross
keep their ids.  Pairs are
taken greedily, best affinity first, down to ``min_affinity``.  Unmatched hands start new tracks (ids
0, 1, 2, ... never reused); a track not matched for more than ``max_missed`` consecutive frames ends.
Each track has its own one-euro filter over its keypoints' x, y ``[21, 2]``; the speed that raises the
cut-off is measured in hand sizes (box diagonals) per second, so ``beta`` does not depend on the image
resolution.  Keypoint scores, boxes and detector scores are passed through unchanged.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .detection.base import box_iou

__all__ = ['OneEuroFilter', 'HandTracker', 'box_iou', 'TRACK_IDS']

KEYPOINTS = 'keypoints'
BOXES = 'boxes'
SCORES = 'scores'
#: Result key of the track ids added by :meth:`HandTracker.update` (int64 [N]).
TRACK_IDS = 'track_ids'


def _alpha(cutoff, dt):
    """Smoothing factor of a first-order low-pass filter with cut-off ``cutoff`` Hz for steps of ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The 1-euro filter, element-wise over arrays of a fixed shape.

    Args:
        min_cutoff: cut-off frequency (Hz) at zero speed; lower = smoother when still, more lag.
        beta: how fast the cut-off rises with speed (Hz per unit of speed); higher = less lag when moving.
        d_cutoff: cut-off frequency (Hz) of the low-pass filter on the speed.
        freq: samples per second assumed when no timestamps are given (or they do not increase).

    ``filter(x, t=None, scale=None)`` (also ``f(x, t)``): ``x`` an array of any shape (the same at every
    call); ``t`` the time in seconds (``None``: one ``1 / freq`` step after the previous sample);
    ``scale`` (broadcastable to ``x``) divides the speed before it raises the cut-off — e.g. the object
    size, so ``beta`` is in object sizes per second.  The first sample passes unchanged.  Non-finite
    entries of ``x`` leave the state of their element unchanged (the previous output is returned there);
    an element with no finite value so far starts at its first finite one.
    Returns a new float64 array.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0, freq: float = 30.0):
        if min_cutoff <= 0 or d_cutoff <= 0:
            raise ValueError(f'OneEuroFilter: min_cutoff and d_cutoff must be > 0, got {min_cutoff}, {d_cutoff}.')
        if beta < 0:
            raise ValueError(f'OneEuroFilter: beta must be >= 0, got {beta}.')
        if not freq > 0:
            raise ValueError(f'OneEuroFilter: freq must be > 0, got {freq}.')
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.freq = float(freq)
        self.reset()

    def reset(self) -> None:
        self.x_prev: np.ndarray | None = None  # last output
        self.dx_prev: np.ndarray | None = None  # last low-passed speed
        self.t_prev: float | None = None

    def _dt(self, t):
        if t is None or self.t_prev is None:
            return 1.0 / self.freq
        dt = float(t) - self.t_prev
        return dt if dt > 0 else 1.0 / self.freq

    def filter(self, x, t: float | None = None, scale=None) -> np.ndarray:
        x = np.array(x, np.float64)
        if self.x_prev is None:
            self.x_prev = x.copy()
            self.dx_prev = np.zeros_like(x)
            self.t_prev = None if t is None else float(t)
            return x
        if x.shape != self.x_prev.shape:
            raise ValueError(f'OneEuroFilter: sample shape {x.shape} differs from the first one {self.x_prev.shape}; '
                             'use one filter per signal (or reset()).')
        dt = self._dt(t)
        finite = np.isfinite(x)
        # an element without a finite state yet (non-finite so far) starts at its first finite value
        fresh = finite & ~np.isfinite(self.x_prev)
        if fresh.any():
            self.x_prev = np.where(fresh, x, self.x_prev)
            self.dx_prev = np.where(fresh, 0.0, self.dx_prev)
        with np.errstate(invalid='ignore'):  # inf - inf where an element never had a finite value
            diff = np.where(finite, x - self.x_prev, 0.0)  # non-finite samples: no step
        dx = diff / dt
        if scale is not None:
            scale = np.asarray(scale, np.float64)
            dx = dx / np.where(scale > 0, scale, 1.0)
        a_d = _alpha(self.d_cutoff, dt)
        dx_hat = self.dx_prev + a_d * (dx - self.dx_prev)
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        a = _alpha(cutoff, dt)
        x_hat = self.x_prev + a * diff
        self.x_prev = np.where(finite, x_hat, self.x_prev)
        self.dx_prev = np.where(finite, dx_hat, self.dx_prev)
        if t is not None:
            self.t_prev = float(t)
        elif self.t_prev is not None:
            self.t_prev += dt
        return self.x_prev.copy()

    __call__ = filter


def _keypoint_similarity(track_kps: np.ndarray, track_sizes: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """``1 - mean distance / (0.5 * track size)`` clipped to [0, 1], weighted by keypoint scores -> [M, N].

    track_kps [M, K, 3], track_sizes [M], kps [N, K, 3]."""
    with np.errstate(invalid='ignore'):  # inf - inf
        d = np.linalg.norm(track_kps[:, None, :, :2] - kps[None, :, :, :2], axis=-1)  # [M, N, K]
    valid = np.isfinite(d)  # keypoints with a non-finite x or y (either side) do not count
    w = np.minimum(track_kps[:, None, :, 2], kps[None, :, :, 2])
    w = np.where(valid & np.isfinite(w) & (w > 0), w, 0.0)
    w = np.where(w.sum(-1, keepdims=True) > 0, w, valid.astype(np.float64))  # no scores: plain mean
    w_sum = w.sum(-1)
    mean = np.where(w_sum > 0, (np.where(valid, d, 0.0) * w).sum(-1) / np.maximum(w_sum, 1e-12), np.inf)
    sim = 1.0 - mean / (0.5 * np.maximum(track_sizes, 1e-6))[:, None]
    return np.clip(np.nan_to_num(sim, nan=0.0, neginf=0.0), 0.0, 1.0)


def _greedy_match(affinity: np.ndarray, min_affinity: float) -> list[tuple[int, int]]:
    """Pairs (row, col), best affinity first, each row and column at most once, affinity >= min_affinity."""
    if affinity.size == 0:
        return []
    order = np.argsort(-affinity, axis=None, kind='stable')
    rows, cols = np.unravel_index(order, affinity.shape)
    keep = affinity[rows, cols] >= min_affinity
    rows, cols = rows[keep], cols[keep]
    used_r = np.zeros(affinity.shape[0], bool)
    used_c = np.zeros(affinity.shape[1], bool)
    pairs = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        if not used_r[r] and not used_c[c]:
            used_r[r] = used_c[c] = True
            pairs.append((r, c))
            if len(pairs) == min(affinity.shape):
                break
    return pairs


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # [4] last box
    keypoints: np.ndarray  # [K, 3] last (smoothed x, y; raw score)
    filter: OneEuroFilter | None
    missed: int = 0
    hits: int = 1
    raw: np.ndarray | None = None  # [K, 3] last detected keypoints (not smoothed): what matching compares
    velocity: np.ndarray | None = None  # [2] pixels per second of the box centre (None: not known yet)
    t_seen: float = 0.0  # time of the last matched frame

    def predicted(self, t: float):
        """(box [4], keypoints [K, 3]) where the hand should be at time ``t``: the last detection moved on by
        the track's velocity (constant-velocity prediction, at most one hand size), so that two hands whose
        paths cross are not confused with each other's last position."""
        raw = self.keypoints if self.raw is None else self.raw
        dt = float(t) - self.t_seen
        if self.velocity is None or not dt > 0:
            return self.box, raw
        shift = self.velocity * dt
        norm = float(np.hypot(*shift))
        limit = self.size
        if not np.isfinite(norm):
            return self.box, raw
        if norm > limit:
            shift = shift * (limit / norm)
        kps = raw.copy()
        kps[:, :2] += shift
        return self.box + np.tile(shift, 2), kps

    def observe(self, box: np.ndarray, raw: np.ndarray, t: float, fps: float) -> None:
        """A matched detection at time ``t``: update the velocity (mean of the last two measurements)."""
        dt = float(t) - self.t_seen
        dt = dt if dt > 0 else 1.0 / fps
        v = ((box[:2] + box[2:]) - (self.box[:2] + self.box[2:])) * 0.5 / dt
        if np.isfinite(v).all():
            self.velocity = v if self.velocity is None else 0.5 * (self.velocity + v)
        self.box = box.copy()
        self.raw = raw.copy()
        self.t_seen = float(t)

    @property
    def size(self) -> float:
        wh = self.box[2:] - self.box[:2]
        diag = float(np.hypot(*wh))
        if np.isfinite(diag) and diag > 0:
            return diag
        xy = self.keypoints[:, :2]
        xy = xy[np.isfinite(xy).all(-1)]
        return float(np.hypot(*(xy.max(0) - xy.min(0)))) if len(xy) else 1.0


class HandTracker:
    """Stable track ids and one-euro-smoothed keypoints for per-frame hand results.

    Args:
        max_missed: a track survives this many consecutive frames without a matching hand; a hand gone
            longer comes back with a new id.
        min_affinity: smallest affinity (mean of box IoU and keypoint similarity, see the module
            docstring) that continues a track.
        smoothing: one-euro smoothing of keypoint x, y (False: keypoints pass unchanged, ids only).
        min_cutoff, beta, d_cutoff: the :class:`OneEuroFilter` parameters (``beta`` per hand size per
            second: the speed is divided by the hand's box diagonal).
        fps: frame rate assumed when :meth:`update` gets no time.
    """

    def __init__(self, max_missed: int = 5, min_affinity: float = 0.2, smoothing: bool = True,
                 min_cutoff: float = 1.0, beta: float = 10.0, d_cutoff: float = 1.0, fps: float = 30.0):
        if max_missed < 0:
            raise ValueError(f'HandTracker: max_missed must be >= 0, got {max_missed}.')
        if not fps > 0:
            raise ValueError(f'HandTracker: fps must be > 0, got {fps}.')
        OneEuroFilter(min_cutoff, beta, d_cutoff, fps)  # validates the parameters
        self.max_missed = int(max_missed)
        self.min_affinity = float(min_affinity)
        self.smoothing = bool(smoothing)
        self.filter_params = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, freq=fps)
        self.fps = float(fps)
        self.reset()

    def reset(self) -> None:
        self.tracks: list[_Track] = []
        self.next_id = 0
        self.frame = 0
        self._t_last: float | None = None

    @property
    def track_ids(self) -> list[int]:
        """Ids of the live tracks (including those missed in the last ``max_missed`` frames)."""
        return [tr.track_id for tr in self.tracks]

    def _time(self, t):
        if t is None:
            t = (self._t_last + 1.0 / self.fps) if self._t_last is not None else 0.0
        t = float(t)
        self._t_last = t
        return t

    def update(self, result: Mapping[str, Any], t: float | None = None) -> dict:
        """Match the hands of one frame to the tracks -> a copy of ``result`` with smoothed keypoints
        (float32 ``[N, K, 3]``, scores unchanged) and ``'track_ids'`` (int64 ``[N]``, in the input order).

        ``t``: the frame's time in seconds (``None``: ``1 / fps`` after the previous frame)."""
        if not isinstance(result, Mapping):
            raise TypeError(f'HandTracker.update: result must be a dict with {KEYPOINTS!r} and {BOXES!r}, '
                            f'got {type(result).__name__}.')
        t = self._time(t)
        self.frame += 1
        kps_in = np.asarray(result[KEYPOINTS], np.float64)
        if kps_in.size == 0 and kps_in.ndim != 3:  # e.g. [] -> [0, 21, 3]; [0, K, 2] stays x, y only
            kps_in = kps_in.reshape(0, 21, 3)
        n, k = kps_in.shape[:2]
        kps = kps_in if kps_in.shape[-1] == 3 else np.concatenate([kps_in, np.ones((n, k, 1))], -1)
        boxes = result.get(BOXES) if hasattr(result, 'get') else None
        if boxes is None or (np.asarray(boxes).size == 0 and n > 0):
            boxes = self._keypoint_boxes(kps)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) != n:
            raise ValueError(f'HandTracker.update: {len(boxes)} boxes for {n} hands.')

        m = len(self.tracks)
        if m and n:
            # each track where its hand should be now (constant velocity, from the detections, not the
            # smoothed keypoints, which lag behind a moving hand)
            predicted = [tr.predicted(t) for tr in self.tracks]
            t_boxes = np.stack([b for b, _ in predicted])
            t_kps = np.stack([kp for _, kp in predicted])
            t_sizes = np.asarray([tr.size for tr in self.tracks])
            affinity = 0.5 * (box_iou(t_boxes, boxes) + _keypoint_similarity(t_kps, t_sizes, kps))
            pairs = _greedy_match(affinity, self.min_affinity)
        else:
            pairs = []
        track_of = np.full(n, -1, np.int64)
        for r, c in pairs:
            track_of[c] = r
        matched_tracks = {r for r, _ in pairs}

        out_xy = kps[..., :2].copy()
        ids = np.empty(n, np.int64)
        new_tracks = []
        for j in range(n):
            if track_of[j] >= 0:
                tr = self.tracks[track_of[j]]
                tr.missed = 0
                tr.hits += 1
                tr.observe(boxes[j], kps[j], t, self.fps)
            else:
                tr = _Track(self.next_id, boxes[j].copy(), kps[j].copy(),
                            OneEuroFilter(**self.filter_params) if self.smoothing else None,
                            raw=kps[j].copy(), t_seen=t)
                self.next_id += 1
                new_tracks.append(tr)
            if tr.filter is not None:
                size = tr.size
                out_xy[j] = tr.filter(kps[j, :, :2], t, scale=size)
            tr.keypoints = np.concatenate([out_xy[j], kps[j, :, 2:]], -1)
            ids[j] = tr.track_id
        survivors = []
        for r, tr in enumerate(self.tracks):
            if r not in matched_tracks:
                tr.missed += 1
                if tr.missed > self.max_missed:
                    continue
            survivors.append(tr)
        self.tracks = survivors + new_tracks

        out = dict(result)
        xy = out_xy.astype(np.float32)
        if kps_in.shape[-1] == 3:
            out[KEYPOINTS] = np.concatenate([xy, np.asarray(kps_in[..., 2:], np.float32)], -1)
        else:
            out[KEYPOINTS] = xy
        out[TRACK_IDS] = ids
        return out

    @staticmethod
    def _keypoint_boxes(kps: np.ndarray) -> np.ndarray:
        xy = np.where(np.isfinite(kps[..., :2]), kps[..., :2], np.nan)
        with warnings.catch_warnings():  # a hand without finite keypoints: an empty box at 0
            warnings.simplefilter('ignore', RuntimeWarning)
            lo, hi = np.nanmin(xy, 1), np.nanmax(xy, 1)
        return np.nan_to_num(np.concatenate([lo, hi], -1), nan=0.0)
