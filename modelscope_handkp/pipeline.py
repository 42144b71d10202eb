"""The ModelScope pipeline for ``Tasks.hand_2d_keypoints``: image -> hand boxes -> keypoints of ALL hands.

Registered in ModelScope's ``PIPELINES`` (group ``hand-2d-keypoints``) as ``handkp-hand-2d-keypoints``
and — when pai-easycv is not installed — as the published model's ``hrnetv2w18_hand-2d-keypoints_image``::

    import modelscope_handkp                      # registers (see modelscope_handkp.compat)
    from modelscope.outputs import OutputKeys
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    hands = pipeline(Tasks.hand_2d_keypoints, model=MODEL_DIR)      # either kind of model directory
    out = hands('photo.jpg')
    out[OutputKeys.KEYPOINTS]   # float32 [N, 21, 3]: x, y (original image pixels), score
    out[OutputKeys.BOXES]       # float32 [N, 4]: x1, y1, x2, y2 (original image pixels)
    out[OutputKeys.SCORES]      # float32 [N]: detector scores, best first
    out['rotations']            # float32 [N]: in-plane rotation of each hand crop (degrees; 0 for SSDLite)

N may be 0 (shapes [0, 21, 3], [0, 4], [0]).  All hands of an image go through the keypoint network in
one batched forward (flip test inside the same forward).

Inputs: a file path, ``PIL.Image``, numpy array (**BGR**, ModelScope's convention — pass
``input_color='rgb'`` for RGB arrays), or a list of these (returns a list; with ``batch_size=B`` the
hands of B images share one forward).  See :mod:`modelscope_handkp.preprocessor`.

Call-time options: ``boxes=[[x1, y1, x2, y2(, score)], ...]`` (skip detection; every box gives a hand, in
the given order; for a list input they apply to every image), ``flip_test=`` (default from the model's
``test_cfg``), ``score_threshold=`` (detector threshold, default from the model directory: 0.5 for the
published model), ``input_color=``.

Constructor options (``pipeline(..., detector=..., score_threshold=..., flip_test=..., input_color=...)``):
``backend`` = ``'auto'`` (default on CPU: the fastest installed backend of
:mod:`modelscope_handkp.backends` that passes a self-check, else eager PyTorch), ``'eager'``, ``'fused'``,
``'onnxruntime'``, ``'openvino'``.
``detector`` = a :class:`~modelscope_handkp.detection.base.HandDetector` instance, or ``'ssdlite'`` (the
directory's files), ``'palm'``, ``'whole_image'``, ``'none'`` (boxes required) — overriding the model
directory's choice.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from modelscope.outputs import OutputKeys
from modelscope.pipelines.base import Pipeline

from . import model_dir as md
from .detection.base import Detections, HandDetector, WholeImage, as_detections
from .preprocessor import HandImagePreprocessor, _check_color

ROTATIONS = 'rotations'


def _as_flag(value, name: str) -> bool:
    """``value`` as a bool: True/False (also NumPy's) or the integers 0/1. Anything else -- above all a
    string such as ``'false'``, which ``bool()`` would take as True -- is refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise TypeError(f'{name} must be True or False, got {value!r} ({type(value).__name__}).')


class NoDetectorError(ValueError):
    """The model directory has no hand detector and no boxes were passed."""


def empty_result(num_keypoints: int = 21) -> dict[str, np.ndarray]:
    return {
        OutputKeys.KEYPOINTS: np.zeros((0, num_keypoints, 3), np.float32),
        OutputKeys.BOXES: np.zeros((0, 4), np.float32),
        OutputKeys.SCORES: np.zeros((0, ), np.float32),
        ROTATIONS: np.zeros((0, ), np.float32),
    }


def enclosing_boxes(boxes: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Axis-aligned x1, y1, x2, y2 boxes around boxes rotated about their centres (degrees)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    rot = np.asarray(rotations, np.float32).reshape(-1)
    if not np.any(rot):
        return boxes.copy()
    c = (boxes[:, :2] + boxes[:, 2:]) * np.float32(0.5)
    half = (boxes[:, 2:] - boxes[:, :2]) * np.float32(0.5)
    rad = np.deg2rad(rot.astype(np.float64))
    cs, sn = np.abs(np.cos(rad)), np.abs(np.sin(rad))
    hx = half[:, 0] * cs + half[:, 1] * sn
    hy = half[:, 0] * sn + half[:, 1] * cs
    ext = np.stack([hx, hy], axis=1).astype(np.float32)
    return np.concatenate([c - ext, c + ext], axis=1).astype(np.float32)


def build_detector(spec: md.DetectorSpec, where: str = 'the model directory') -> HandDetector | None:
    """The detector a :class:`~modelscope_handkp.model_dir.DetectorSpec` asks for (None for ``'none'``)."""
    if spec.type == 'none':
        return None
    if spec.type == 'whole_image':
        return WholeImage()
    if spec.type == 'palm':
        try:
            from .detection import build_palm_detector
        except (ImportError, AttributeError) as e:
            raise md.ModelDirError(
                f"{where} asks for the palm detector (detector.type 'palm'), which this installation does not "
                "provide yet; pass boxes= with detector='none', or use detector='ssdlite' / 'whole_image'.") from e
        if getattr(spec, 'tiles', None) is not None:
            return build_palm_detector(variant=spec.variant, tiles=spec.tiles)
        return build_palm_detector(variant=spec.variant)
    if spec.type == 'ssdlite':
        md.check_detector_files(spec, where)
        try:
            from .detection import build_hand_detector
        except (ImportError, AttributeError) as e:
            raise md.ModelDirError('the SSDLite hand detector is not available in this installation; pass boxes= '
                                   "with detector='none', or use detector='whole_image'.") from e
        config = spec.config_file
        if str(config).endswith('.json'):
            import json
            with open(config, encoding='utf-8') as f:
                config = json.load(f)
        return build_hand_detector(config, spec.checkpoint)
    raise md.ModelDirError(f'unknown detector type {spec.type!r}; use one of {md.DETECTOR_TYPES}.')


class HandKeypointsPipeline(Pipeline):
    """Hand 2D keypoints of every hand in an image (see the module documentation)."""

    def __init__(self, model, preprocessor=None, detector=None, score_threshold: float | None = None,
                 flip_test: bool | None = None, input_color: str = 'bgr', max_batch: int = 64,
                 backend: str | None = None, min_keypoint_score: float | None = None, **kwargs):
        from .modelscope_model import HandKeypointsModel
        kwargs.pop('predictor_config', None)  # the published card's EasyCV predictor section
        self.input_color = _check_color(input_color)
        if preprocessor is None:
            preprocessor = HandImagePreprocessor(None, input_color=self.input_color)
        if isinstance(model, HandKeypointsModel) and model.model_dir is None:
            # ModelScope's Pipeline reads configuration.json from model.model_dir ("stat: path should be
            # string ... not NoneType")
            raise ValueError('this HandKeypointsModel was built without a model directory, and a pipeline is built '
                             'from one; save it first, model.save_pretrained(DIR), then pass '
                             'pipeline(Tasks.hand_2d_keypoints, model=DIR).')
        super().__init__(model=model, preprocessor=preprocessor, **kwargs)
        # ModelScope checks outputs against the task of the registry group, which it writes on the CLASS at each
        # build: a build from the default group (pipeline_name= without task=) would switch every pipeline
        self.group_key = md.TASK
        if isinstance(self.model, str):  # ModelScope did not build it (e.g. no 'model' section): say why
            self.model = HandKeypointsModel(self.model, device=self.device_name)
            self.models = [self.model]
        if not isinstance(self.model, HandKeypointsModel):
            got = self.model if isinstance(self.model, str) else type(self.model).__name__
            raise md.ModelDirError(
                f'model {got!r} is not a hand keypoint model of modelscope_handkp; pass a model directory '
                '(this plugin\'s format or the published EasyCV one) or a HandKeypointsModel.')
        if isinstance(self.preprocessor, HandImagePreprocessor) and self.preprocessor.model_dir is None:
            self.preprocessor.model_dir = self.model.model_dir
        spec: md.ModelSpec = self.model.spec
        where = os.path.join(spec.model_dir, md.CONFIG_FILE) if spec.model_dir else 'the model configuration'
        det_spec = spec.detector
        if isinstance(detector, HandDetector):
            self.detector = detector
        else:
            if detector is not None:
                det_spec, det_where = _detector_argument(detector, spec.detector, where)
            else:
                det_where = where
            self.detector = build_detector(det_spec, det_where)
        self.score_threshold = float(det_spec.score_threshold if score_threshold is None else
                                     _check_threshold(score_threshold))
        self.flip_test = self.model.flip_test if flip_test is None else _as_flag(flip_test, 'flip_test')
        self.max_batch = max(1, int(max_batch))
        self.min_keypoint_score = None if min_keypoint_score is None else _check_threshold(
            min_keypoint_score, 'min_keypoint_score')
        from .backends import KINDS
        if backend is not None and backend not in KINDS + ('auto', ):
            raise ValueError(f"unknown backend {backend!r}; choose one of {('auto', ) + KINDS}.")
        self.backend_kind = backend
        self._backend = None
        self._backend_signature = None
        from .detection.palm import PalmDetector
        if backend is not None and isinstance(self.detector, PalmDetector):
            # the palm detector follows an explicit choice (its network runs on OpenVINO / ONNX Runtime / torch)
            self.detector.backend = {'fused': 'eager'}.get(backend, backend)

    # ------------------------------------------------------------------ inference backend
    def _resolved_backend_kind(self) -> str:
        if self.backend_kind is not None:
            return self.backend_kind
        return 'auto' if self.model.device.type == 'cpu' else 'eager'

    @property
    def backend(self):
        """The keypoint-network backend (:mod:`modelscope_handkp.backends`), built on first use.

        On CPU the default is ``'auto'`` (the fastest installed backend that passes a self-check,
        falling back to eager PyTorch); on a GPU the eager model on that device is used.
        """
        net = self.model.hand_model
        signature = _weights_signature(net)
        if self._backend is not None and signature != self._backend_signature:
            # the fused / ONNX Runtime / OpenVINO backends hold a copy of the weights made when they were
            # built: weights changed since (load_state_dict, fine-tuning) need a new one
            import logging
            logging.getLogger(__name__).info('the keypoint network changed since its backend was built; '
                                             'rebuilding the backend.')
            self._backend = None
        if self._backend is None:
            from .backends import make_backend
            kind = self._resolved_backend_kind()
            if kind != 'eager' and self.model.device.type != 'cpu':
                raise ValueError(f'backend {kind!r} runs on the CPU, but the model is on {self.model.device}; '
                                 "use backend='eager' (the default on GPUs) or device='cpu'.")
            net.eval()
            self._backend = make_backend(net, kind)
            self._backend_signature = signature
        return self._backend

    # ------------------------------------------------------------------ ModelScope hooks
    def _sanitize_parameters(self, boxes=None, flip_test=None, score_threshold=None, input_color=None,
                             **unknown):
        if unknown:
            raise TypeError(f'unexpected argument(s) {sorted(unknown)} for the hand keypoint pipeline; accepted: '
                            'boxes=, flip_test=, score_threshold=, input_color=, batch_size=.')
        pre = {} if input_color is None else {'input_color': _check_color(input_color)}
        fwd = {}
        if boxes is not None:
            fwd['boxes'] = boxes
        if flip_test is not None:
            fwd['flip_test'] = _as_flag(flip_test, 'flip_test')
        if score_threshold is not None:
            fwd['score_threshold'] = _check_threshold(score_threshold)
        return pre, fwd, {}

    def _check_input(self, input):
        from PIL import Image

        from .preprocessor import image_of
        image = image_of(input)  # a dict (an MsDataset row) holds its image under 'image', 'img', ...
        if not isinstance(image, (str, os.PathLike, np.ndarray, Image.Image, bytes, bytearray, memoryview)):
            raise TypeError(f'unsupported image input of type {type(image).__name__}; pass a file path, a PIL.Image, '
                            "a numpy array (H, W, 3) in BGR order (input_color='rgb' for RGB), encoded image bytes, "
                            "a dict {'image': one of these} (e.g. an MsDataset row), or a list of these"
                            + (' (ModelScope pipelines take lists, not iterators: pass list(...))'
                               if isinstance(image, (tuple, Iterator)) else '') + '.')

    def _collate_fn(self, data):
        return data  # the image stays a numpy array; crops are made and moved to the device in forward()

    # The signatures of preprocess / forward / postprocess are read by ModelScope's service schema
    # (modelscope.utils.input_output parses them as source): plain annotations only (no ``X | None``,
    # no Optional), ``None`` meaning "as configured".
    def preprocess(self, inputs: object, input_color: str = None) -> dict:
        return self.preprocessor(inputs, **({} if input_color is None else {'input_color': input_color}))

    def forward(self, inputs: dict, boxes: list = None, flip_test: bool = None, score_threshold: float = None) -> dict:
        return self.forward_many([inputs], boxes=boxes, flip_test=flip_test, score_threshold=score_threshold)[0]

    def postprocess(self, inputs: dict, **post_params) -> dict:
        return inputs

    def _process_batch(self, input, batch_size, **kwargs):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f'batch_size must be a positive integer (images per forward), got {batch_size!r}.')
        batch_size = int(batch_size)
        pre = kwargs.get('preprocess_params') or {}
        fwd = kwargs.get('forward_params') or {}
        post = kwargs.get('postprocess_params') or {}
        outputs = []
        for start in range(0, len(input), batch_size):
            chunk = input[start:start + batch_size]
            for item in chunk:
                self._check_input(item)
            prepared = [self.preprocess(item, **pre) for item in chunk]
            with torch.no_grad():
                results = self.forward_many(prepared, **fwd)
            outputs.extend(self.postprocess(r, **post) for r in results)
        return outputs

    # ------------------------------------------------------------------ the work
    def detect(self, image_rgb: np.ndarray, boxes=None, score_threshold: float | None = None) -> Detections:
        """Hands of one RGB image: the caller's ``boxes`` (checked) or the detector's, best first."""
        h, w = image_rgb.shape[:2]
        if boxes is not None:
            dets = as_detections(boxes)
            if len(dets):
                b = dets.boxes
                outside = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= w) | (b[:, 1] >= h)
                if outside.any():
                    i = int(np.flatnonzero(outside)[0])
                    raise ValueError(
                        f'box {i} {b[i].tolist()} lies entirely outside the {w}x{h} image; boxes are [x1, y1, x2, y2] '
                        'in pixels of this image (not normalised, not of another image).')
                if max(w, h) > 8 and float(np.abs(b).max()) <= 1.0:  # every box under a pixel: a 0-1 box
                    raise ValueError(
                        f'boxes {b.tolist()} have all coordinates within [0, 1]: they look normalised. Boxes are '
                        f'[x1, y1, x2, y2] in pixels of this {w}x{h} image: multiply x by {w} and y by {h}.')
            return dets
        if self.detector is None:
            raise NoDetectorError('this model directory has no hand detector (detector.type "none"); pass '
                                  "boxes=[[x1, y1, x2, y2], ...], or build the pipeline with detector='palm' / "
                                  "'whole_image' / a HandDetector.")
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        dets = self.detector.detect_hands(image_rgb, score_thr=thr)
        if not isinstance(dets, Detections):
            dets = as_detections(dets)
        keep = np.isfinite(dets.scores) & (dets.scores >= thr) & np.isfinite(dets.boxes).all(axis=1)
        keep &= (dets.boxes[:, 2] > dets.boxes[:, 0]) & (dets.boxes[:, 3] > dets.boxes[:, 1])
        dets = dets.take(np.flatnonzero(keep))
        order = np.argsort(-dets.scores, kind='stable')
        dets = dets.take(order)
        if getattr(dets, 'from_tiles', None) is not None:  # several palm hits on one small hand: one hand
            from .detection.tiling import distinct_tile_hands
            dets = dets.take(distinct_tile_hands(dets))
        return dets

    def forward_many(self, inputs: list[dict[str, Any]], boxes=None, flip_test: bool | None = None,
                     score_threshold: float | None = None) -> list[dict[str, Any]]:
        """Preprocessed images -> one result dict each; the hands of all of them share batched forwards."""
        from .transforms import box_to_center_scale, crop_to_tensor
        model = self.model
        flip = self.flip_test if flip_test is None else _as_flag(flip_test, 'flip_test')
        size = tuple(model.input_size)
        per_image = []
        crops, centers, scales, rots = [], [], [], []
        for item in inputs:
            img = item['img']
            dets = self.detect(img, boxes=boxes, score_threshold=score_threshold)
            per_image.append(dets)
            if len(dets) == 0:
                continue
            padding = 1.25 if boxes is not None or self.detector is None else \
                float(getattr(self.detector, 'crop_padding', 1.25))
            c, s = box_to_center_scale(dets.boxes, 'xyxy', image_size=size, padding=padding)
            c, s = np.asarray(c, np.float32).reshape(-1, 2), np.asarray(s, np.float32).reshape(-1, 2)
            r = dets.rotations.astype(np.float32)
            crops.append(crop_to_tensor(img, c, s, image_size=size, rotations=r if np.any(r) else None))
            centers.append(c)
            scales.append(s)
            rots.append(r)
        total = sum(len(d) for d in per_image)
        if total == 0:
            return [empty_result(model.num_keypoints) for _ in inputs]
        batch = torch.cat(crops, dim=0)
        centers, scales, rots = np.concatenate(centers), np.concatenate(scales), np.concatenate(rots)
        rots = rots if np.any(rots) else None
        if self._resolved_backend_kind() != 'eager':
            backend, parts = self.backend, []
            for i in range(0, total, self.max_batch):
                j = i + self.max_batch
                coords, scores = backend.predict(batch[i:j], centers[i:j], scales[i:j],
                                                 None if rots is None else rots[i:j], flip_test=flip)
                parts.append(np.concatenate([coords, scores], axis=-1))
            keypoints = np.concatenate(parts, axis=0).astype(np.float32, copy=False)
        else:
            with torch.no_grad():
                heatmaps = torch.cat([model.forward_heatmaps(batch[i:i + self.max_batch], flip_test=flip)
                                      for i in range(0, total, self.max_batch)], dim=0)
            keypoints = model.decode(heatmaps, centers, scales, rotations=rots)
        results, at = [], 0
        for dets in per_image:
            n = len(dets)
            if n == 0:
                results.append(empty_result(model.num_keypoints))
                continue
            kps = keypoints[at:at + n]
            at += n
            keep = self._verified(dets, kps) if boxes is None else None
            if keep is not None:
                if not keep.any():
                    results.append(empty_result(model.num_keypoints))
                    continue
                dets, kps = dets.take(np.flatnonzero(keep)), kps[keep]
            results.append({
                OutputKeys.KEYPOINTS: np.ascontiguousarray(kps, dtype=np.float32),
                OutputKeys.BOXES: enclosing_boxes(dets.boxes, dets.rotations),
                OutputKeys.SCORES: dets.scores.astype(np.float32).copy(),
                ROTATIONS: dets.rotations.astype(np.float32).copy(),
            })
        return results

    def _verified(self, dets: Detections, keypoints: np.ndarray) -> np.ndarray | None:
        """bool [M] hands that pass the keypoint-score check, or None when no check applies.

        A detected hand is dropped when the mean of its keypoint scores (heatmap maxima) is below
        ``min_keypoint_score`` (constructor option; every detected hand), or, for hands the palm
        detector found on zoomed-in tiles, below the detector's ``tiles.min_keypoint_score``
        (:mod:`modelscope_handkp.detection.tiling`).  Boxes given by the caller are never dropped."""
        mean = keypoints[..., 2].astype(np.float64).mean(axis=1)
        keep = np.ones(len(mean), bool)
        checked = False
        if self.min_keypoint_score is not None:
            keep &= mean >= self.min_keypoint_score
            checked = True
        tile_thr = getattr(dets, 'min_keypoint_score', None)
        from_tiles = getattr(dets, 'from_tiles', None)
        if tile_thr is not None and from_tiles is not None and from_tiles.any():
            keep &= ~(from_tiles & (mean < tile_thr))
            checked = True
        return keep if checked else None



def _weights_signature(net: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``net`` is replaced or modified in place (each tensor's
    identity and version counter): cheap enough to check on every call."""
    return tuple((id(t), t._version) for t in (*net.parameters(), *net.buffers()))


_DETECTOR_KEYS = {'none': {'type', 'score_threshold'}, 'whole_image': {'type', 'score_threshold'},
                  'ssdlite': {'type', 'score_threshold', 'config_file', 'checkpoint'},
                  'palm': {'type', 'score_threshold', 'variant', 'tiles'}}


def _detector_argument(detector, model_detector: md.DetectorSpec, where: str):
    """(spec, where) of the pipeline's ``detector=`` argument (a type name or a config object).

    Settings the argument leaves out come from the model directory's detector when the type is the same
    (``{'type': 'ssdlite', 'score_threshold': 0.3}`` keeps the directory's files); file paths given in the
    argument are relative to the current directory, not to the model directory.
    """
    if isinstance(detector, str):
        det_cfg = {'type': detector}
    elif isinstance(detector, Mapping):
        det_cfg = dict(detector)
    else:
        raise TypeError(f'detector= must be a HandDetector, a type name ({md.DETECTOR_TYPES}) or a config dict '
                        f"like {{'type': 'palm', 'score_threshold': 0.5}}, got {type(detector).__name__}.")
    arg = 'the detector argument'
    dtype = det_cfg['type'] = md.detector_type(det_cfg.get('type', 'none'))
    known = _DETECTOR_KEYS.get(dtype)
    unknown = sorted(str(k) for k in det_cfg if known is not None and k not in known)
    if unknown:
        raise ValueError(f'detector= {unknown} {"is not a setting" if len(unknown) == 1 else "are not settings"} '
                         f'of the {dtype!r} detector; its settings are {sorted(known)}.')
    if dtype == model_detector.type:
        merged = model_detector.to_config()  # its file paths are already absolute or relative to the CWD
        for key in ('config_file', 'checkpoint'):
            if det_cfg.get(key) is not None:
                merged[key] = os.path.abspath(os.path.expanduser(os.fspath(det_cfg[key])))
        merged.update({k: v for k, v in det_cfg.items() if k not in ('config_file', 'checkpoint')})
        if not any(det_cfg.get(key) is not None for key in ('config_file', 'checkpoint')):
            arg = f'the detector argument (with the detector of {where})'  # the files, if any, are the model's
        det_cfg = merged
    elif dtype == 'ssdlite' and 'config_file' not in det_cfg:
        raise md.ModelDirError(f"detector='ssdlite' needs detector files, but {where} names none; pass "
                               "detector={'type': 'ssdlite', 'config_file': ..., 'checkpoint': ...} (CLI: use a "
                               "--model directory that has the SSDLite files, or --detector palm / whole-image).")
    else:
        det_cfg.setdefault('score_threshold', model_detector.score_threshold)
    return md.detector_spec({'detector': det_cfg, 'handkp': {}}, os.getcwd(), md.FORMAT_HANDKP, arg), arg

def _check_threshold(value, name: str = 'score_threshold') -> float:
    try:
        thr = float(value)
    except (TypeError, ValueError):
        thr = float('nan')
    if not (0.0 <= thr <= 1.0):
        raise ValueError(f'{name} must be a number in [0, 1], got {value!r}.')
    return thr

