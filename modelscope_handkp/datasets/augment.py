"""Top-down training/evaluation sample preparation for hand keypoints.

One object, :class:`TopDownAugmentation`, does what EasyCV's (mmpose 0.x) pipeline
``TopDownRandomFlip -> TopDownGetRandomScaleRotation -> TopDownAffine -> MMToTensor ->
NormalizeTensor -> TopDownGenerateTarget`` does, with the same random-number semantics:

* flip with probability ``flip_prob`` (``rand <= p``).  Hands have no left/right keypoint
  pairs, so only the image and the x coordinates are mirrored (x -> W - 1 - x, and the box
  centre likewise);
* scale factor ``s = clip(randn * sf + 1, 1 - sf, 1 + sf)``;
* rotation ``r = clip(randn * rf, -2 rf, 2 rf)`` if ``rand <= rot_prob`` else 0 (degrees);
* one affine warp (``cv2.warpAffine``, bilinear, black border) of the RGB image to the input
  size; the flip is folded into the warp matrix, so the full image is never copied;
* ``/255`` and mean/std normalisation;
* Gaussian heatmap targets and target weights from :class:`modelscope_handkp.codec.HeatmapCodec`.

Two optional steps (off unless the pipeline lists them; mmpose 0.x names and meaning), used by the
starter model's robustness stage:

* ``TopDownRandomShiftBboxCenter(shift_factor=0.16, prob=0.3)``: with probability ``prob`` the box
  centre moves by ``uniform(-1, 1) * shift_factor * box size`` in x and y (the hand is no longer
  centred in the crop, as with an imprecise detector);
* ``PhotometricDistortion(brightness_delta=32, contrast_range=(0.5, 1.5),
  saturation_range=(0.5, 1.5), hue_delta=18)``: each of brightness (add), contrast (multiply),
  saturation and hue (in HSV) is changed with probability 0.5, on the crop, in float32, clipped
  to [0, 255].

Two more (this package's own, for training on few, narrow sources such as the starter model's
data), both fed with pixels of *other* training images (a "donor" region the dataset picks: a
random square of a random training image that holds none of that image's hands; without a
dataset, a region of the sample's own image):

* ``TopDownRandomGreenBackground(prob=0.5)``: chroma-key background replacement; the crop's
  saturated green pixels (OpenCV hue 35-85, saturation >= 60, value >= 40: green screens and
  green cloth; skin is never in that range) are replaced, with a softened edge, by the donor
  region resized to the crop.  Crops without green are unchanged.
* ``TopDownRandomOcclusion(prob=0.4, max_patches=2, size_range=(0.15, 0.4))``: 1 to
  ``max_patches`` rectangles of donor pixels (sides ``size_range`` x the crop side) pasted
  with their centres in the middle 80 % of the crop, over the hand; the keypoints keep their
  labels, so the network learns to place hidden joints.

* ``TopDownRandomPlainBackground(prob=0.5)``: the same replacement for plain backgrounds (white
  walls, paper, grey cloth): the crop's low-chroma pixels (CIELAB chroma below 12 and lightness
  above 60 on OpenCV's 0-255 scale) that are connected to the crop border and lie off the hand
  (the bones drawn 9 % of the hand size thick, and the palm polygon, from the keypoint labels)
  are replaced by the donor.  Hands shot against a plain wall are thus also seen in clutter.

These act on the crop before the photometric distortion.  Their random numbers are drawn after
all the others (flip/scale/rotation, then box shift, then photometric), so a pipeline without a
step draws exactly the same samples as before that step existed (the plain background's one draw
comes last).

And one geometric step of the same kind:

* ``TopDownRandomPerspective(prob=0.5, max_angle=45)``: with probability ``prob`` the hand is seen
  from another viewpoint: the crop plane is tilted about its vertical and horizontal axes through
  the crop centre by yaw and pitch angles ``uniform(-max_angle, max_angle)`` degrees and projected
  again with a pinhole camera (focal length = crop side), so the crop is foreshortened as a flat
  hand turned away from the camera would be.  The image goes through one ``cv2.warpPerspective``
  (the affine crop matrix and the homography composed) and the keypoints through the same
  projective map, so the labels stay exact for every pixel.  Its three random numbers are drawn
  right after the box shift, only when the step is in the pipeline.

Random numbers come from a ``numpy.random.Generator`` the caller passes (the dataset derives it
from ``(seed, epoch, index)``), so a sample is the same whatever the worker, the process or a
resume.  Everything is vectorised: keypoints go through one matrix product, targets through
one codec call.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch

from ..codec import HeatmapCodec
from ..draw import SKELETON
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, get_affine_matrices, transform_points

# EasyCV pipeline steps this module implements (anything else in a config is an error, not a
# silent no-op).  ``TopDownHalfBodyTransform`` needs body joints and does nothing for hands.
_NOOP_STEPS = {'MMToTensor', 'ToTensor', 'PoseCollect', 'Collect', 'LoadImageFromFile', 'TopDownHalfBodyTransform'}
_KNOWN_STEPS = _NOOP_STEPS | {
    'TopDownRandomFlip', 'TopDownGetRandomScaleRotation', 'TopDownAffine', 'NormalizeTensor', 'TopDownGenerateTarget',
    'TopDownRandomShiftBboxCenter', 'PhotometricDistortion', 'TopDownRandomGreenBackground',
    'TopDownRandomOcclusion', 'TopDownRandomPerspective', 'TopDownRandomPlainBackground'
}
# chroma-key range of TopDownRandomGreenBackground (OpenCV uint8 HSV: hue 0-180)
GREEN_HUE = (35, 85)
GREEN_MIN_SATURATION = 60
GREEN_MIN_VALUE = 40
# plain-background range of TopDownRandomPlainBackground (OpenCV uint8 CIELAB: L, a, b in 0-255)
PLAIN_MAX_CHROMA = 12.0
PLAIN_MIN_LIGHTNESS = 60
# the hand region it never touches: bones (and palm polygon) of the 21 keypoints
HAND_BONES = np.concatenate([SKELETON, np.array([(5, 9), (9, 13), (13, 17)], SKELETON.dtype)])  # + knuckles
PALM = np.array([0, 1, 5, 9, 13, 17], np.int64)
HAND_BONE_THICKNESS = 0.09


def random_square(height: int, width: int, u) -> tuple[int, int, int]:
    """(x, y, side) of a square inside a ``height`` x ``width`` image from three uniform draws ``u``:
    side 25-75 % of the shorter image side, position uniform.  The donor-region rule of the
    background/occlusion steps (the dataset's donors and :meth:`TopDownAugmentation.own_region`)."""
    side = max(1, int((0.25 + 0.5 * u[0]) * min(height, width)))
    return int(u[1] * (width - side)), int(u[2] * (height - side)), side


def _as_pair(v, name) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    if isinstance(v, Sequence) and len(v) == 2:
        return int(v[0]), int(v[1])
    raise ValueError(f'{name} must be an int or a (w, h) pair, got {v!r}')


class TopDownAugmentation:
    """Crop, augment, normalise and encode one hand.

    Args:
        image_size: network input (w, h).
        heatmap_size: heatmap (w, h); defaults to image_size / 4.
        train: apply the random flip / scale / rotation and produce targets.
        flip_prob, scale_factor, rot_factor, rot_prob: EasyCV augmentation parameters
            (0.5, 0.25, 30 degrees, 0.6 in the published configuration).
        sigma: Gaussian sigma of the targets in heatmap pixels.
        unbiased_encoding: sub-pixel Gaussian centres (DARK) instead of integer ones.
        zero_outside: also give weight 0 to keypoints whose centre falls off the heatmap; the
            original (``False``) only zeroes keypoints whose whole 6-sigma window is outside.
        mean, std: normalisation of the [0, 1] RGB image.
        shift_factor, shift_prob: random box-centre shift (0 = off), see the module docstring.
        photometric: ``None`` (off) or a dict with ``brightness_delta``, ``contrast_range``,
            ``saturation_range``, ``hue_delta``.
        green_background_prob: probability of the green-screen background replacement (0 = off).
        occlusion: ``None`` (off) or a dict with ``prob``, ``max_patches``, ``size_range``.
        perspective_prob, perspective_max_angle: the viewpoint change (probability 0 = off; largest
            yaw / pitch in degrees, below 90).
        plain_background_prob: probability of the plain-background replacement (0 = off).
    """

    def __init__(self, image_size=(256, 256), heatmap_size=None, train: bool = True, flip_prob: float = 0.5,
                 scale_factor: float = 0.25, rot_factor: float = 30.0, rot_prob: float = 0.6, sigma: float = 2.0,
                 unbiased_encoding: bool = False, zero_outside: bool = False, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, shift_factor: float = 0.0, shift_prob: float = 0.0, photometric=None,
                 green_background_prob: float = 0.0, occlusion=None, perspective_prob: float = 0.0,
                 perspective_max_angle: float = 45.0, plain_background_prob: float = 0.0):
        self.image_size = _as_pair(image_size, 'image_size')
        self.heatmap_size = (_as_pair(heatmap_size, 'heatmap_size') if heatmap_size is not None else
                             (self.image_size[0] // 4, self.image_size[1] // 4))
        self.train = bool(train)
        self.flip_prob = float(flip_prob)
        self.scale_factor = float(scale_factor)
        self.rot_factor = float(rot_factor)
        self.rot_prob = float(rot_prob)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
        if np.any(self.std <= 0):
            raise ValueError(f'normalisation std must be positive, got {std!r}')
        self.shift_factor = float(shift_factor)
        self.shift_prob = float(shift_prob)
        if self.shift_factor < 0 or not 0 <= self.shift_prob <= 1:
            raise ValueError(f'TopDownRandomShiftBboxCenter needs shift_factor >= 0 and 0 <= prob <= 1, '
                             f'got {shift_factor!r}, {shift_prob!r}')
        self.photometric = None if photometric is None else _photometric_params(photometric)
        self.green_background_prob = float(green_background_prob)
        if not 0 <= self.green_background_prob <= 1:
            raise ValueError(f'TopDownRandomGreenBackground needs 0 <= prob <= 1, got {green_background_prob!r}')
        self.occlusion = None if occlusion is None else _occlusion_params(occlusion)
        self.plain_background_prob = float(plain_background_prob)
        if not 0 <= self.plain_background_prob <= 1:
            raise ValueError(f'TopDownRandomPlainBackground needs 0 <= prob <= 1, got {plain_background_prob!r}')
        self.perspective_prob = float(perspective_prob)
        self.perspective_max_angle = float(perspective_max_angle)
        if not 0 <= self.perspective_prob <= 1 or not 0 < self.perspective_max_angle < 90:
            raise ValueError('TopDownRandomPerspective needs 0 <= prob <= 1 and 0 < max_angle < 90 (degrees), got '
                             f'{perspective_prob!r}, {perspective_max_angle!r}')
        self.codec = HeatmapCodec(input_size=self.image_size, heatmap_size=self.heatmap_size, sigma=sigma,
                                  unbiased_encoding=unbiased_encoding, zero_outside=zero_outside)

    def __repr__(self):
        return (f'TopDownAugmentation(image_size={self.image_size}, heatmap_size={self.heatmap_size}, '
                f'train={self.train}, flip_prob={self.flip_prob}, scale_factor={self.scale_factor}, '
                f'rot_factor={self.rot_factor}, rot_prob={self.rot_prob}, shift_factor={self.shift_factor}, '
                f'shift_prob={self.shift_prob}, photometric={self.photometric}, '
                f'green_background_prob={self.green_background_prob}, '
                f'plain_background_prob={self.plain_background_prob}, occlusion={self.occlusion}, '
                f'perspective_prob={self.perspective_prob}, perspective_max_angle={self.perspective_max_angle}, '
                f'codec={self.codec!r})')

    # ------------------------------------------------------------------ config
    @classmethod
    def from_pipeline(cls, pipeline, image_size=(256, 256), heatmap_size=None, train: bool = True):
        """Build from an EasyCV ``pipeline`` list (the ``dataset.train.pipeline`` of the config).

        Parameters missing from the list take EasyCV's defaults for that step; a step that is
        absent is switched off (e.g. no ``TopDownRandomFlip`` -> ``flip_prob = 0``).
        """
        kw: dict = dict(image_size=image_size, heatmap_size=heatmap_size, train=train, flip_prob=0.0,
                        scale_factor=0.0, rot_factor=0.0, rot_prob=0.0)
        for i, step in enumerate(pipeline or []):
            if not isinstance(step, Mapping) or 'type' not in step:
                raise ValueError(f'pipeline[{i}] must be a dict with a "type", got {step!r}')
            t = step['type']
            if t not in _KNOWN_STEPS:
                raise ValueError(f'pipeline step {t!r} (pipeline[{i}]) is not supported by modelscope_handkp; '
                                 f'supported steps: {sorted(_KNOWN_STEPS)}. Remove it or replace it.')
            if t == 'TopDownRandomFlip':
                kw['flip_prob'] = float(step.get('flip_prob', 0.5))
            elif t == 'TopDownGetRandomScaleRotation':
                kw['rot_factor'] = float(step.get('rot_factor', 40))
                kw['scale_factor'] = float(step.get('scale_factor', 0.5))
                kw['rot_prob'] = float(step.get('rot_prob', 0.6))
            elif t == 'TopDownAffine':
                if step.get('use_udp', False):
                    raise ValueError('TopDownAffine(use_udp=True) is not supported; the hand models use '
                                     'use_udp=False.')
            elif t == 'NormalizeTensor':
                kw['mean'] = step.get('mean', IMAGENET_MEAN)
                kw['std'] = step.get('std', IMAGENET_STD)
            elif t == 'TopDownGenerateTarget':
                target_type = step.get('target_type', 'GaussianHeatmap')
                if target_type not in ('GaussianHeatmap', 'GaussianHeatMap'):
                    raise ValueError(f'TopDownGenerateTarget target_type {target_type!r} is not supported; '
                                     "only 'GaussianHeatmap'.")
                if step.get('encoding', 'MSRA') not in ('MSRA', ):
                    raise ValueError(f"TopDownGenerateTarget encoding {step.get('encoding')!r} is not supported; "
                                     "only 'MSRA' (with or without unbiased_encoding).")
                kw['sigma'] = float(step.get('sigma', 2))
                kw['unbiased_encoding'] = bool(step.get('unbiased_encoding', False))
                kw['zero_outside'] = bool(step.get('zero_outside', False))
            elif t == 'TopDownRandomShiftBboxCenter':
                kw['shift_factor'] = float(step.get('shift_factor', 0.16))
                kw['shift_prob'] = float(step.get('prob', 0.3))
            elif t == 'PhotometricDistortion':
                kw['photometric'] = {k: v for k, v in step.items() if k != 'type'}
            elif t == 'TopDownRandomGreenBackground':
                _check_step_params(step, ('prob', ))
                kw['green_background_prob'] = float(step.get('prob', 0.5))
            elif t == 'TopDownRandomPlainBackground':
                _check_step_params(step, ('prob', ))
                kw['plain_background_prob'] = float(step.get('prob', 0.5))
            elif t == 'TopDownRandomOcclusion':
                kw['occlusion'] = {k: v for k, v in step.items() if k != 'type'}
            elif t == 'TopDownRandomPerspective':
                _check_step_params(step, ('prob', 'max_angle'))
                kw['perspective_prob'] = float(step.get('prob', 0.5))
                kw['perspective_max_angle'] = float(step.get('max_angle', 45.0))
        return cls(**kw)

    # ------------------------------------------------------------------ randomness
    def random_params(self, rng: np.random.Generator, n: int = 1):
        """(flip bool [n], scale factor float32 [n], rotation deg float32 [n]) drawn with EasyCV's
        semantics; in eval mode no flip, factor 1 and rotation 0."""
        if not self.train:
            return np.zeros(n, bool), np.ones(n, np.float32), np.zeros(n, np.float32)
        u = rng.random((n, 4))  # one draw per decision, so n and the order never change the others
        z = rng.standard_normal((n, 2))
        flip = u[:, 0] <= self.flip_prob if self.flip_prob > 0 else np.zeros(n, bool)
        sf, rf = self.scale_factor, self.rot_factor
        s = np.clip(z[:, 0] * sf + 1.0, 1.0 - sf, 1.0 + sf)
        r = np.clip(z[:, 1] * rf, -2.0 * rf, 2.0 * rf)
        r = np.where(u[:, 1] <= self.rot_prob, r, 0.0)
        return flip, s.astype(np.float32), r.astype(np.float32)

    # ------------------------------------------------------------------ geometry
    def crop_matrix(self, image_width: int, center, scale, flip: bool, scale_factor: float, rotation: float):
        """float64 [2, 3] matrix original image -> crop, the optional flip folded in."""
        c = np.asarray(center, np.float32).copy()
        if flip:
            c[0] = image_width - c[0] - 1
        s = np.asarray(scale, np.float32) * np.float32(scale_factor)
        m = get_affine_matrices(c[None], s[None], [rotation], self.image_size)[0]
        if flip:  # crop of the mirrored image == crop of the original with M @ F, F: x -> W - 1 - x
            f = np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            m = m @ f
        return m

    def random_shift(self, rng: np.random.Generator, scale) -> np.ndarray:
        """float32 [2] centre offset in image pixels (zeros when the shift is off or not drawn)."""
        u = rng.random(3)
        if u[0] > self.shift_prob:
            return np.zeros(2, np.float32)
        size = np.asarray(scale, np.float64).reshape(2) * 200.0
        return ((u[1:] * 2.0 - 1.0) * self.shift_factor * size).astype(np.float32)

    def view_homography(self, yaw: float, pitch: float) -> np.ndarray:
        """float64 [3, 3] map of crop pixels to the crop seen with the plane turned by ``yaw`` (about
        the vertical axis) and ``pitch`` (about the horizontal axis) degrees around the crop centre.

        The crop is the plane z = f in front of a pinhole camera of focal length f = crop side; its
        four corners are rotated about the centre and projected again, the homography is the one of
        the four point pairs.
        """
        w, h = self.image_size
        f = float(max(w, h))
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        corners = np.array([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]])
        a, b = np.deg2rad(yaw), np.deg2rad(pitch)
        ry = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
        pts = np.concatenate([corners - (cx, cy), np.zeros((4, 1))], axis=1) @ (rx @ ry).T
        pts[:, 2] += f
        dst = pts[:, :2] * (f / pts[:, 2:3]) + (cx, cy)
        return cv2.getPerspectiveTransform(corners.astype(np.float32), dst.astype(np.float32)).astype(np.float64)

    def random_view(self, rng: np.random.Generator):
        """float64 [3, 3] homography of a random viewpoint change, or ``None`` when not drawn."""
        u = rng.random(3)
        if u[0] >= self.perspective_prob:
            return None
        yaw, pitch = (u[1:] * 2.0 - 1.0) * self.perspective_max_angle
        return self.view_homography(float(yaw), float(pitch))

    def distort(self, crop_uint8: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Photometric distortion of an RGB uint8 crop -> float32 [H, W, 3] in [0, 255]; ``u``: its 8
        uniform draws."""
        p = self.photometric
        x = crop_uint8.astype(np.float32)
        if u[0] < 0.5:
            x += np.float32((u[1] * 2.0 - 1.0) * p['brightness_delta'])
        if u[2] < 0.5:
            lo, hi = p['contrast_range']
            x *= np.float32(lo + u[3] * (hi - lo))
        if u[4] < 0.5 or u[6] < 0.5:
            hsv = cv2.cvtColor(np.clip(x, 0.0, 255.0) / np.float32(255.0), cv2.COLOR_RGB2HSV)  # H in [0, 360)
            if u[4] < 0.5:
                lo, hi = p['saturation_range']
                hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(lo + u[5] * (hi - lo)), 0.0, 1.0)
            if u[6] < 0.5:
                hsv[..., 0] = np.mod(hsv[..., 0] + np.float32((u[7] * 2.0 - 1.0) * p['hue_delta'] * 2.0), 360.0)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255.0)
        return np.clip(x, 0.0, 255.0, out=x)

    @staticmethod
    def green_mask(crop_uint8: np.ndarray) -> np.ndarray:
        """float32 [H, W] in [0, 1]: 1 on saturated green (the chroma-key range), edges softened."""
        hsv = cv2.cvtColor(crop_uint8, cv2.COLOR_RGB2HSV)
        m = ((hsv[..., 0] >= GREEN_HUE[0]) & (hsv[..., 0] <= GREEN_HUE[1]) & (hsv[..., 1] >= GREEN_MIN_SATURATION)
             & (hsv[..., 2] >= GREEN_MIN_VALUE)).astype(np.float32)
        return _soften(m)

    @staticmethod
    def plain_mask(crop_uint8: np.ndarray, keypoints: np.ndarray, labelled: np.ndarray | None = None) -> np.ndarray:
        """float32 [H, W] in [0, 1]: 1 on plain background — low-chroma, not dark pixels connected to
        the crop border (directly or through the black border of pixels outside the image, which
        itself stays black), off the hand drawn from ``keypoints`` [21, 2] (crop pixels) — edges
        softened.  ``labelled`` [21] bool (default: all): keypoints without a position (COCO's
        unannotated (0, 0) points) are left out of the hand drawing; with fewer than 2 labelled
        keypoints the hand cannot be drawn and nothing is replaced (an all-zero mask)."""
        lab = cv2.cvtColor(crop_uint8, cv2.COLOR_RGB2LAB)
        ab = lab[..., 1:].astype(np.float32) - np.float32(128.0)
        pad = ~crop_uint8.any(axis=2)  # the crop's black border (outside the image): connects, stays black
        m = (((np.hypot(ab[..., 0], ab[..., 1]) < PLAIN_MAX_CHROMA) & (lab[..., 0] > PLAIN_MIN_LIGHTNESS))
             | pad).astype(np.uint8)
        kp = np.asarray(keypoints, np.float32).reshape(-1, 2)
        if kp.shape[0] != 21 or not np.isfinite(kp).all():
            raise ValueError(f'TopDownRandomPlainBackground needs the 21 finite hand keypoints to keep the hand, got '
                             f'{kp.shape[0]} keypoints{"" if np.isfinite(kp).all() else " with NaN/inf"}')
        known = np.ones(21, bool) if labelled is None else np.asarray(labelled, bool).reshape(21)
        if known.sum() < 2:
            return np.zeros(m.shape, np.float32)
        hand = np.zeros_like(m)
        size = float((kp[known].max(0) - kp[known].min(0)).max())
        q = np.rint(np.clip(kp, -4 * m.shape[1], 5 * m.shape[1])).astype(np.int32)
        bones = HAND_BONES[known[HAND_BONES].all(axis=1)]
        cv2.polylines(hand, list(q[bones]), False, 1, max(2, int(round(HAND_BONE_THICKNESS * size))))
        palm = PALM[known[PALM]]
        if len(palm) >= 3:
            cv2.fillPoly(hand, [q[palm]], 1)
        m[hand > 0] = 0
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        n, labels = cv2.connectedComponents(m, connectivity=4)
        keep = np.zeros(n, bool)  # components that touch the crop border; 0 is "not a candidate"
        keep[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
        keep[0] = False
        return _soften((keep[labels] & ~pad).astype(np.float32))

    def replace_green(self, crop_uint8: np.ndarray, donor: np.ndarray) -> np.ndarray:
        """The crop with its green pixels replaced by ``donor`` (uint8 RGB, any size) resized to it."""
        return self.replace_background(crop_uint8, donor, self.green_mask(crop_uint8))

    @staticmethod
    def replace_background(crop_uint8: np.ndarray, donor: np.ndarray, m: np.ndarray) -> np.ndarray:
        """``crop * (1 - m) + donor * m`` (donor resized to the crop), rounded to uint8."""
        if not m.any():
            return crop_uint8
        h, w = crop_uint8.shape[:2]
        bg = cv2.resize(donor, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        m = m[..., None]
        out = crop_uint8.astype(np.float32) * (np.float32(1.0) - m) + bg * m
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def occlude(self, crop_uint8: np.ndarray, donor: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Paste donor rectangles over the crop; ``u`` float [1 + 4 * max_patches] uniform draws
        (count, then per patch width, height, centre x, centre y)."""
        h, w = crop_uint8.shape[:2]
        o = self.occlusion
        out = crop_uint8.copy()
        n = 1 + min(int(u[0] * o['max_patches']), o['max_patches'] - 1)
        lo, hi = o['size_range']
        for pw, ph, cx, cy in u[1:1 + 4 * n].reshape(n, 4):
            pw, ph = max(1, int(round((lo + pw * (hi - lo)) * w))), max(1, int(round((lo + ph * (hi - lo)) * h)))
            x0 = int(round((0.1 + 0.8 * cx) * w - pw / 2.0))
            y0 = int(round((0.1 + 0.8 * cy) * h - ph / 2.0))
            xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + pw), min(h, y0 + ph)
            if xb <= xa or yb <= ya:
                continue
            patch = cv2.resize(donor, (pw, ph), interpolation=cv2.INTER_LINEAR)
            out[ya:yb, xa:xb] = patch[ya - y0:yb - y0, xa - x0:xb - x0]
        return out

    @staticmethod
    def own_region(image_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Donor without a dataset: a random square of the sample's own image (side 25-75 % of the
        shorter image side)."""
        x, y, side = random_square(*image_rgb.shape[:2], rng.random(3))
        return image_rgb[y:y + side, x:x + side]

    def normalize(self, crop_uint8: np.ndarray) -> torch.Tensor:
        """uint8 (or float32 in [0, 255]) [H, W, 3] RGB -> float32 [3, H, W]: /255 then (x - mean) / std."""
        x = crop_uint8.astype(np.float32) / np.float32(255.0)
        x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def _train_pixels(self, crop: np.ndarray, image_rgb: np.ndarray, rng: np.random.Generator, donor,
                      kp_crop: np.ndarray, labelled: np.ndarray | None = None):
        """Background replacement, occlusion, then photometric distortion of the uint8 crop (draws in
        the order of the module docstring, so absent steps leave the others' draws unchanged)."""
        u_photo = rng.random(8) if self.photometric is not None else None
        use_bg = self.green_background_prob > 0 and rng.random() < self.green_background_prob
        u_occ = None
        if self.occlusion is not None:
            u = rng.random(2 + 4 * self.occlusion['max_patches'])
            u_occ = u[1:] if u[0] < self.occlusion['prob'] else None
        use_plain = self.plain_background_prob > 0 and rng.random() < self.plain_background_prob
        if use_bg or use_plain or u_occ is not None:
            src = donor(rng) if donor is not None else self.own_region(image_rgb, rng)
            if src is not None and src.size:
                if use_bg:
                    crop = self.replace_green(crop, src)
                if use_plain:
                    crop = self.replace_background(crop, src, self.plain_mask(crop, kp_crop, labelled))
                if u_occ is not None:
                    crop = self.occlude(crop, src, u_occ)
        return self.distort(crop, u_photo) if u_photo is not None else crop

    def __call__(self, image_rgb: np.ndarray, joints, visible, center, scale, rng: np.random.Generator | None = None,
                 donor=None):
        """One hand -> dict.

        ``donor``: for the background/occlusion steps, a callable ``rng -> uint8 RGB region or None``
        (the dataset passes regions of other training images); default: :meth:`own_region`.

        Train mode: ``img`` [3, H, W], ``target`` [K, h, w], ``target_weight`` [K, 1]
        (plus ``flip``, ``scale_factor``, ``rotation`` of the draw, for inspection).
        Eval mode: ``img`` only (the dataset adds the ground truth).
        """
        if self.train and rng is None:
            raise ValueError('a numpy Generator is needed for training-time augmentation')
        h_img, w_img = image_rgb.shape[:2]
        flip, sfac, rot = self.random_params(rng, 1) if self.train else self.random_params(None, 1)
        if self.train and self.shift_factor > 0 and self.shift_prob > 0:
            center = np.asarray(center, np.float32).reshape(2) + self.random_shift(rng, scale)
        m = self.crop_matrix(w_img, center, scale, bool(flip[0]), float(sfac[0]), float(rot[0]))
        view = self.random_view(rng) if self.train and self.perspective_prob > 0 else None
        w, h = self.image_size
        if view is None:
            crop = cv2.warpAffine(image_rgb, m, (w, h), flags=cv2.INTER_LINEAR)
        else:
            m = view @ np.vstack([m, (0.0, 0.0, 1.0)])
            crop = cv2.warpPerspective(image_rgb, m, (w, h), flags=cv2.INTER_LINEAR)
        if not self.train:
            return {'img': self.normalize(crop)}
        joints = np.asarray(joints, np.float64).reshape(-1, 2)
        kp_crop = transform_points(joints, m).astype(np.float32)
        # COCO marks unannotated keypoints v = 0 at (0, 0); v = 0 elsewhere is a real position (outside the image)
        labelled = (np.asarray(visible, np.float32).reshape(-1) > 0) | (joints != 0).any(axis=1)
        out = {'img': self.normalize(self._train_pixels(crop, image_rgb, rng, donor, kp_crop, labelled))}
        target, weight = self.codec.encode(kp_crop, np.asarray(visible, np.float32).reshape(-1))
        out['target'] = torch.from_numpy(target)
        out['target_weight'] = torch.from_numpy(weight)
        out['flip'] = bool(flip[0])
        out['scale_factor'] = float(sfac[0])
        out['rotation'] = float(rot[0])
        return out


def _soften(mask: np.ndarray) -> np.ndarray:
    """A float32 0/1 mask with its edges blurred (3x3 Gaussian) for blending; an empty mask as it is."""
    return cv2.GaussianBlur(mask, (3, 3), 0) if mask.any() else mask


def _check_step_params(step: Mapping, known: Sequence[str], name: str | None = None) -> None:
    """Raise if a pipeline step (or its settings without ``type``, then give ``name``) names a
    parameter the step does not have."""
    unknown = set(step) - {'type', *known}
    if unknown:
        raise ValueError(f"{name or step['type']} has no parameter(s) {sorted(unknown)}; known: {', '.join(known)}")


def _occlusion_params(cfg) -> dict:
    """Validated TopDownRandomOcclusion settings."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f'TopDownRandomOcclusion settings must be a dict, got {cfg!r}')
    _check_step_params(cfg, ('prob', 'max_patches', 'size_range'), 'TopDownRandomOcclusion')
    out = {'prob': float(cfg.get('prob', 0.4)), 'max_patches': int(cfg.get('max_patches', 2)),
           'size_range': tuple(float(v) for v in cfg.get('size_range', (0.15, 0.4)))}
    lo_hi = out['size_range']
    if not 0 <= out['prob'] <= 1 or out['max_patches'] < 1 or len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
        raise ValueError('TopDownRandomOcclusion needs 0 <= prob <= 1, max_patches >= 1 and size_range (low, high) '
                         f'with 0 < low <= high <= 1 (fractions of the crop side), got {dict(cfg)!r}')
    return out


def _photometric_params(cfg) -> dict:
    """Validated PhotometricDistortion settings with mmpose 0.x defaults."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f'PhotometricDistortion settings must be a dict, got {cfg!r}')
    _check_step_params(cfg, ('brightness_delta', 'contrast_range', 'saturation_range', 'hue_delta'),
                       'PhotometricDistortion')
    out = {'brightness_delta': float(cfg.get('brightness_delta', 32)),
           'contrast_range': tuple(float(v) for v in cfg.get('contrast_range', (0.5, 1.5))),
           'saturation_range': tuple(float(v) for v in cfg.get('saturation_range', (0.5, 1.5))),
           'hue_delta': float(cfg.get('hue_delta', 18))}
    for k in ('contrast_range', 'saturation_range'):
        lo_hi = out[k]
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1]:
            raise ValueError(f'PhotometricDistortion {k} must be (low, high) with 0 <= low <= high, got {lo_hi!r}')
    if out['brightness_delta'] < 0 or not 0 <= out['hue_delta'] <= 180:
        raise ValueError('PhotometricDistortion needs brightness_delta >= 0 and 0 <= hue_delta <= 180 '
                         f'(OpenCV hue units), got {out["brightness_delta"]!r}, {out["hue_delta"]!r}')
    return out
