"""COCO-WholeBody hand keypoint datasets (EasyCV ``HandCocoWholeBodyDataset`` layout).

The annotation file is COCO-WholeBody JSON: ``images`` (``id``, ``file_name``) and
``annotations`` with ``lefthand_kpts`` / ``righthand_kpts`` (21 x (x, y, v)),
``lefthand_box`` / ``righthand_box`` ((x, y, w, h)) and ``lefthand_valid`` / ``righthand_valid``.
Every valid hand (``*_valid`` true and any of its 63 numbers > 0, as EasyCV) is one sample; its
visibility is ``min(1, v)``; its crop centre/scale come from the hand box with padding 1.25.
The JSON is read with the standard library (no pycocotools).

Bad data is never dropped silently: a missing image file or a malformed annotation raises
:class:`DatasetError` naming the file and the entry.  With ``skip_invalid=True`` such entries
are skipped, logged and counted (``dataset.skipped``).

Paths: ``ann_file`` / ``img_prefix`` may contain ``${data_root}`` (replaced as ModelScope does
for zip datasets) and relative paths are resolved against ``data_root`` when one is given.
:func:`resolve_split_folder` finds the annotation file and image folder of a dataset folder
(``annotations/<split>.json`` + ``images/``, COCO ``annotations/*_<split>*.json`` +
``<split>2017/``, or a single JSON next to its images).
"""
from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..transforms import box_to_center_scale
from .augment import TopDownAugmentation, random_square

logger = logging.getLogger('modelscope_handkp.datasets')

DATA_ROOT_PATTERN = '${data_root}'
SIDES = ('left', 'right')
TRAIN_SPLIT_WORDS = ('train', )
EVAL_SPLIT_WORDS = ('val', 'validation', 'test', 'eval')


class DatasetError(ValueError):
    """The dataset (annotation file, image folder or an entry of them) is unusable."""


# ---------------------------------------------------------------------------------------- paths
def substitute_data_root(value, data_root: str | None):
    """Replace ``${data_root}`` in a string (or recursively in a dict's strings)."""
    if isinstance(value, Mapping):
        return {k: substitute_data_root(v, data_root) for k, v in value.items()}
    if isinstance(value, str) and DATA_ROOT_PATTERN in value:
        if data_root is None:
            raise DatasetError(f'{value!r} uses {DATA_ROOT_PATTERN} but no data root is known; pass the dataset '
                               'as an MsDataset (its split folder is the data root) or give data_root=.')
        return value.replace(DATA_ROOT_PATTERN, str(data_root).rstrip(os.sep))
    return value


def _annotation_candidates(folder: str) -> list[str]:
    found = []
    for pattern in ('*.json', 'annotations/*.json', '*/annotations/*.json', '*/*.json'):
        found += sorted(glob.glob(os.path.join(folder, pattern)))
    return list(dict.fromkeys(os.path.normpath(p) for p in found))


def _pick_annotation(cands: list[str], split_words) -> list[str]:
    words = [w.lower() for w in split_words if w]
    stems = {p: os.path.splitext(os.path.basename(p))[0].lower() for p in cands}
    for w in words:  # exact stem first (annotations/val.json), then substring (coco_wholebody_val_v1.0.json)
        exact = [p for p in cands if stems[p] == w]
        if exact:
            return exact
    for w in words:
        sub = [p for p in cands if w in stems[p].replace('-', '_').split('_') or w in stems[p]]
        if sub:
            return sub
    return []


def find_image_prefix(ann_file: str, file_names: list[str], hints=()) -> str | None:
    """The folder in which the images' ``file_name`` entries exist (checks a few of them)."""
    base = os.path.dirname(os.path.abspath(ann_file))
    cands = list(hints) + [
        os.path.join(base, '..', 'images'),
        os.path.join(base, 'images'),
        base,
        os.path.join(base, '..'),
    ]
    for split in ('train2017', 'val2017', 'test2017'):
        cands += [os.path.join(base, '..', split), os.path.join(base, split)]
    probe = [f for f in file_names[:3] if isinstance(f, str)]
    if not probe:
        return None
    for c in cands:
        if c and all(os.path.isfile(os.path.join(c, f)) for f in probe):
            return os.path.normpath(c)
    return None


def resolve_split_folder(folder: str, split: str | None = None, train: bool = True):
    """(ann_file, None, image-folder hints) of a COCO-WholeBody dataset folder for one split.

    ``split`` is the split name if known (``'train'``, ``'val'``, ``'subtrain'`` ...); otherwise
    the training or evaluation split is looked for by name.  A folder with a single annotation
    file uses it whatever its name, unless no split is given and the name is the other split's
    (``train.json`` when evaluation data is asked for, or the reverse): that is an error.
    """
    folder = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(folder):
        raise DatasetError(f'dataset folder {folder!r} does not exist.')
    cands = _annotation_candidates(folder)
    if not cands:
        raise DatasetError(f'no annotation file (*.json) found in {folder!r} or its annotations/ folder; '
                           'expected COCO-WholeBody annotations such as annotations/train.json.')
    words = ([split] if split else []) + list(TRAIN_SPLIT_WORDS if train else EVAL_SPLIT_WORDS)
    picked = cands if len(cands) == 1 else _pick_annotation(cands, words)
    if split is None and len(cands) == 1 and not _pick_annotation(cands, words) and \
            _pick_annotation(cands, EVAL_SPLIT_WORDS if train else TRAIN_SPLIT_WORDS):
        # the folder's only file is named for the other split: training on the evaluation data (or
        # reporting training-set numbers as validation) must be asked for explicitly
        name = os.path.relpath(cands[0], folder)
        mine, other = ('training', 'evaluation') if train else ('evaluation', 'training')
        raise DatasetError(
            f'{folder!r} holds only {name}, which is named for the {other} split, but the {mine} split was asked '
            f'for. Pass a folder with the {mine} split '
            f'(CLI: {"train --data" if train else "train --val / eval --data"}), or the annotation file itself '
            f'({cands[0]}) if you really mean to use it for {mine}.')
    if len(picked) != 1:
        what = 'training' if train else 'evaluation'
        names = [os.path.relpath(p, folder) for p in (picked or cands)]
        raise DatasetError(
            f'cannot tell which annotation file of {folder!r} is the {what} split'
            f'{" " + repr(split) if split else ""}: candidates {names}. '
            'Pass the annotation file path instead of the folder, or set dataset.train/val.data_source.ann_file.')
    ann_file = picked[0]
    return ann_file, None, split_prefix_hints(folder, split)


def has_split_file(folder: str, train: bool) -> bool:
    """Whether an annotation file of the dataset folder is named for the training (``train=True``) or the
    evaluation split -- one that :func:`resolve_split_folder` may still find ambiguous."""
    cands = _annotation_candidates(os.path.abspath(os.path.expanduser(folder)))
    return bool(_pick_annotation(cands, TRAIN_SPLIT_WORDS if train else EVAL_SPLIT_WORDS))


def split_prefix_hints(folder: str, split: str | None = None) -> list[str]:
    """Image folders to try, in order, for a dataset folder (``images/``, the folder, split folders)."""
    hints = [os.path.join(folder, 'images'), folder]
    if split:
        hints += [os.path.join(folder, split), os.path.join(folder, 'images', split),
                  os.path.join(folder, f'{split}2017')]
    return hints


# ---------------------------------------------------------------------------------------- records
@dataclass
class HandRecords:
    """All hands of an annotation file, as arrays (one row per hand)."""
    image_files: list = field(default_factory=list)
    image_ids: np.ndarray = None
    ann_ids: np.ndarray = None
    sides: list = field(default_factory=list)
    joints: np.ndarray = None  # float32 [N, K, 2]
    visible: np.ndarray = None  # float32 [N, K]
    boxes: np.ndarray = None  # float32 [N, 4] (x, y, w, h)
    centers: np.ndarray = None  # float32 [N, 2]
    scales: np.ndarray = None  # float32 [N, 2]
    skipped: list = field(default_factory=list)  # messages of the entries skipped with skip_invalid
    img_prefix: str = ''

    def __len__(self):
        return len(self.image_files)


def _entry(ann, i) -> str:
    aid = ann.get('id', '?') if isinstance(ann, Mapping) else '?'
    return f'annotations[{i}] (id={aid})'


def _numbers(values, n, what, where) -> np.ndarray:
    if not isinstance(values, (list, tuple)) or len(values) != n:
        got = f'{len(values)} values' if isinstance(values, (list, tuple)) else type(values).__name__
        raise DatasetError(f'{where}: {what} must be a list of {n} numbers, got {got}')
    try:
        arr = np.asarray(values[:n], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f'{where}: {what} holds non-numeric values') from None
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f'{where}: {what} holds NaN or infinite values')
    return arr


def load_coco_wholebody_hands(ann_file: str, img_prefix: str | None, num_joints: int = 21, image_size=(256, 256),
                              padding: float = 1.25, skip_invalid: bool = False, check_images: bool = True,
                              prefix_hints=()) -> HandRecords:
    """Read every valid hand of a COCO-WholeBody annotation file (see module docs).

    ``img_prefix=None`` looks for the image folder (``prefix_hints`` first, then the usual
    places next to the annotation file).
    """
    ann_file = os.fspath(ann_file)
    if not os.path.isfile(ann_file):
        raise DatasetError(f'annotation file {ann_file!r} does not exist; check the path (ann_file / '
                           'data_root) or pass the dataset folder.')
    try:
        with open(ann_file, 'r', encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f'annotation file {ann_file!r} is not valid JSON: {e}') from None
    except UnicodeDecodeError as e:
        raise DatasetError(f'annotation file {ann_file!r} is not UTF-8 text: {e}') from None
    if not isinstance(data, Mapping) or not isinstance(data.get('images'), list) \
            or not isinstance(data.get('annotations'), list):
        raise DatasetError(f'annotation file {ann_file!r} is not COCO-WholeBody JSON: expected an object with '
                           '"images" and "annotations" lists.')

    if img_prefix is None:
        names = [im.get('file_name') for im in data['images'][:3] if isinstance(im, Mapping)]
        img_prefix = find_image_prefix(ann_file, names, prefix_hints) or os.path.dirname(os.path.abspath(ann_file))
    img_prefix = os.fspath(img_prefix)
    skipped: list[str] = []

    def bad(msg):
        if not skip_invalid:
            raise DatasetError(f'{ann_file}: {msg}. Fix the entry, or pass skip_invalid=True (CLI: --skip-invalid) '
                               'to skip such entries (they are logged and counted).')
        skipped.append(msg)

    id2name: dict = {}
    for i, im in enumerate(data['images']):
        if not isinstance(im, Mapping) or 'id' not in im or not isinstance(im.get('file_name'), str) \
                or not im['file_name']:
            bad(f'images[{i}] needs an "id" and a non-empty "file_name", got {im!r:.200}')
            continue
        if im['id'] in id2name:
            bad(f'images[{i}]: duplicate image id {im["id"]!r}')
            continue
        id2name[im['id']] = im['file_name']

    exists: dict = {}
    rec = dict(image_files=[], image_ids=[], ann_ids=[], sides=[], joints=[], visible=[], boxes=[])
    k3 = num_joints * 3
    for i, ann in enumerate(data['annotations']):
        where = _entry(ann, i)
        if not isinstance(ann, Mapping):
            bad(f'{where} is not an object')
            continue
        img_id = ann.get('image_id')
        if img_id not in id2name:
            bad(f'{where}: image_id {img_id!r} is not in "images"')
            continue
        hands = []
        try:
            for side in SIDES:
                if not ann.get(f'{side}hand_valid', False):
                    continue
                kp = _numbers(ann.get(f'{side}hand_kpts'), k3, f'{side}hand_kpts', where)
                if not kp.max() > 0:  # EasyCV: valid and any of the 63 numbers > 0
                    continue
                box = _numbers(ann.get(f'{side}hand_box'), 4, f'{side}hand_box', where)
                if box[2] <= 0 or box[3] <= 0:
                    raise DatasetError(f'{where}: {side}hand_box {box.tolist()} has no area (w, h must be > 0)')
                kp = kp.reshape(num_joints, 3)
                if np.any(kp[:, 2] < 0):
                    raise DatasetError(f'{where}: {side}hand_kpts has negative visibility flags')
                hands.append((side, kp, box))
        except DatasetError as e:
            bad(str(e))
            continue
        if not hands:
            continue
        path = os.path.join(img_prefix, id2name[img_id])
        if check_images:
            if path not in exists:
                # with skip_invalid every image is decoded once here (at 1/8 size, quick): a corrupt file found
                # in __getitem__ would stop a run hours in, or could only be dropped from an evaluation unseen
                exists[path] = image_file_problem(path) if skip_invalid else \
                    (None if os.path.isfile(path) else 'does not exist')
            problem = exists[path]
            if problem == 'does not exist':
                bad(f'{where}: image file {path!r} (images id={img_id!r}, file_name={id2name[img_id]!r}) does not '
                    f'exist; check img_prefix={img_prefix!r}')
                continue
            if problem is not None:
                bad(f'{where}: image file {path!r} (images id={img_id!r}) {problem}')
                continue
        for side, kp, box in hands:
            rec['image_files'].append(path)
            rec['image_ids'].append(img_id if isinstance(img_id, (int, np.integer)) else -1)
            rec['ann_ids'].append(ann.get('id', i) if isinstance(ann.get('id', i), (int, np.integer)) else i)
            rec['sides'].append(side)
            rec['joints'].append(kp[:, :2])
            rec['visible'].append(np.minimum(1.0, kp[:, 2]))
            rec['boxes'].append(box)

    n = len(rec['image_files'])
    joints = np.asarray(rec['joints'], np.float32).reshape(n, num_joints, 2)
    boxes = np.asarray(rec['boxes'], np.float32).reshape(n, 4)
    if n:
        centers, scales = box_to_center_scale(boxes, 'xywh', image_size=image_size, padding=padding)
    else:
        centers = scales = np.zeros((0, 2), np.float32)
    out = HandRecords(image_files=rec['image_files'], image_ids=np.asarray(rec['image_ids'], np.int64),
                      ann_ids=np.asarray(rec['ann_ids'], np.int64), sides=rec['sides'], joints=joints,
                      visible=np.asarray(rec['visible'], np.float32).reshape(n, num_joints), boxes=boxes,
                      centers=np.asarray(centers, np.float32).reshape(n, 2),
                      scales=np.asarray(scales, np.float32).reshape(n, 2), skipped=skipped,
                      img_prefix=img_prefix)
    if skipped:
        logger.warning('%s: skipped %d invalid entries (skip_invalid=True); first: %s', ann_file, len(skipped),
                       '; '.join(skipped[:3]))
    return out


_SKIP_HINT = (', or pass skip_invalid=True (CLI: --skip-invalid), which checks every image when the annotations '
              'are loaded and skips the unusable ones')


_TRUNCATED = 'is a truncated JPEG (its end-of-image marker is missing)'
_UNDECODABLE = 'cannot be decoded (corrupt or not an image?)'


def _image_bytes(path: str):
    """(the file's bytes, None), or (None, why it cannot be used): missing, unreadable or a truncated JPEG."""
    from ..preprocessor import _jpeg_truncated
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        return None, 'does not exist'
    except OSError as e:
        return None, f'cannot be read ({e.strerror or e})'
    return (None, _TRUNCATED) if _jpeg_truncated(data) else (data, None)


def image_file_problem(path: str) -> str | None:
    """Why the image file cannot be used ('does not exist', 'is a truncated JPEG', ...), or None.  Decodes
    at 1/8 size (JPEG decoders skip most of the work), so checking a data set's images costs little."""
    data, why = _image_bytes(path)
    if why is None and (not data or cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
                        is None):
        why = _UNDECODABLE
    return why


def read_image_rgb(path: str, context: str = '') -> np.ndarray:
    """uint8 RGB [H, W, 3] (EXIF orientation applied, as OpenCV/mmcv do); clear error if unreadable.

    A truncated JPEG is an error too, as in the pipeline: OpenCV decodes one with grey rows and only a
    warning on stderr, which would train on (or score) a damaged image without a word."""
    where = f'image {path!r}{" (" + context + ")" if context else ""}'
    data, why = _image_bytes(path)
    if why == _TRUNCATED:
        raise DatasetError(f'{where} {_TRUNCATED}: the file was not copied or downloaded completely; get the '
                           f'complete file, or remove it from the annotation file{_SKIP_HINT}.')
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise DatasetError(f'{where} {why or _UNDECODABLE}; fix or remove it from the annotation file{_SKIP_HINT}.')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------- dataset
class CocoWholeBodyHandDataset(Dataset):
    """Top-down hand samples from a COCO-WholeBody annotation file.

    Args:
        ann_file, img_prefix: annotation JSON and image folder (EasyCV ``data_source`` fields);
            ``${data_root}`` is substituted and relative paths are taken relative to ``data_root``
            when given.
        data_cfg: EasyCV ``data_cfg`` (``image_size``, ``heatmap_size``, ``num_joints``).
        pipeline: EasyCV pipeline list (see :meth:`TopDownAugmentation.from_pipeline`); ``None``
            uses the published training pipeline in train mode and a plain crop in test mode.
        test_mode: evaluation samples (no augmentation, ground truth returned) instead of
            training samples (augmented crop, heatmap targets).
        skip_invalid: skip (and count, log) missing images and malformed entries instead of
            raising.
        seed: augmentation seed; sample ``i`` of epoch ``e`` uses ``default_rng((seed, e, i))``.

    Train samples: ``{'img': [3,H,W], 'target': [K,h,w], 'target_weight': [K,1]}`` (what the
    model's ``forward(img, target, target_weight)`` takes).  Test samples: ``img`` plus
    ``center``, ``scale``, ``joints`` [K,2], ``visible`` [K], ``bbox`` [4] (x, y, w, h),
    ``image_id``, ``index``.
    """

    PUBLISHED_TRAIN_PIPELINE = [
        dict(type='TopDownRandomFlip', flip_prob=0.5),
        dict(type='TopDownGetRandomScaleRotation', rot_factor=30, scale_factor=0.25),
        dict(type='TopDownAffine'),
        dict(type='MMToTensor'),
        dict(type='NormalizeTensor', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        dict(type='TopDownGenerateTarget', sigma=3),
    ]

    def __init__(self, ann_file: str, img_prefix: str | None = None, data_cfg: Mapping | None = None,
                 pipeline=None, test_mode: bool = False, skip_invalid: bool = False, seed: int = 0,
                 data_root: str | None = None, padding: float = 1.25, check_images: bool = True,
                 prefix_hints=(), **unused):
        ann_file = substitute_data_root(os.fspath(ann_file), data_root)
        img_prefix = substitute_data_root(os.fspath(img_prefix), data_root) if img_prefix else None
        if data_root is not None:
            if not os.path.isabs(ann_file):
                ann_file = os.path.join(data_root, ann_file)
            if img_prefix is not None and not os.path.isabs(img_prefix):
                img_prefix = os.path.join(data_root, img_prefix)
        data_cfg = dict(data_cfg or {})
        self.image_size = tuple(int(v) for v in data_cfg.get('image_size', (256, 256)))
        hm = data_cfg.get('heatmap_size')
        self.heatmap_size = tuple(int(v) for v in hm) if hm is not None else (self.image_size[0] // 4,
                                                                               self.image_size[1] // 4)
        self.num_joints = int(data_cfg.get('num_joints', 21))
        self.test_mode = bool(test_mode)
        self.records = load_coco_wholebody_hands(ann_file, img_prefix, self.num_joints, self.image_size, padding,
                                                 skip_invalid=skip_invalid, check_images=check_images,
                                                 prefix_hints=prefix_hints)
        self.ann_file = ann_file
        self.img_prefix = self.records.img_prefix
        self.skipped = len(self.records.skipped)
        if not len(self.records):
            raise DatasetError(
                f'{ann_file} holds no usable hand ({self.skipped} invalid entries skipped): a hand needs '
                '"lefthand_valid"/"righthand_valid" true, keypoints with a value > 0 and a box with area. '
                'Check that this is a COCO-WholeBody annotation file with hand annotations.')
        if pipeline is None:
            pipeline = [] if self.test_mode else self.PUBLISHED_TRAIN_PIPELINE
        self.augment = TopDownAugmentation.from_pipeline(pipeline, self.image_size, self.heatmap_size,
                                                         train=not self.test_mode)
        self.seed = int(seed)
        # shared memory: DataLoader workers (also persistent ones) see set_epoch() of the main process
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._hand_boxes = None  # {image file: hand boxes xywh}, for donor_region
        self._image_sizes: dict = {}
        if unused:
            logger.debug('CocoWholeBodyHandDataset ignores %s', sorted(unused))

    def __len__(self):
        return len(self.records)

    def __repr__(self):
        return (f'CocoWholeBodyHandDataset({self.ann_file!r}, hands={len(self)}, test_mode={self.test_mode}, '
                f'skipped={self.skipped}, image_size={self.image_size})')

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int):
        """Select the augmentation draws of an epoch (the trainer calls this before each epoch)."""
        self._epoch.fill_(int(epoch))

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, int(index)))

    DONOR_TRIES = 12
    DONOR_MAX_GREEN = 0.2

    def donor_region(self, rng: np.random.Generator) -> np.ndarray | None:
        """Pixels for the background/occlusion augmentation steps: a random square (side 25-75 % of
        the shorter image side) of a random training image that overlaps none of that image's hand
        boxes and is not mostly green screen (at most :attr:`DONOR_MAX_GREEN` of its pixels in the
        chroma-key range), uint8 RGB; ``None`` after :attr:`DONOR_TRIES` draws without one (e.g. images that are
        all hand).  Deterministic in ``rng`` (image sizes are cached, so a rejected draw need not
        read the image again)."""
        r = self.records
        if not len(r):
            return None
        if self._hand_boxes is None:
            by_image: dict = {}
            for f, b in zip(r.image_files, r.boxes):
                by_image.setdefault(f, []).append(b)
            self._hand_boxes = {f: np.asarray(b, np.float32).reshape(-1, 4) for f, b in by_image.items()}
        for _ in range(self.DONOR_TRIES):
            path = r.image_files[int(rng.integers(len(r)))]
            u = rng.random(3)
            img = None
            if path not in self._image_sizes:
                img = read_image_rgb(path, 'donor image of the background/occlusion augmentation')
                self._image_sizes[path] = img.shape[:2]
            x, y, side = random_square(*self._image_sizes[path], u)
            b = self._hand_boxes[path]
            if np.any((b[:, 0] < x + side) & (b[:, 0] + b[:, 2] > x) & (b[:, 1] < y + side) & (b[:, 1] + b[:, 3] > y)):
                continue
            if img is None:
                img = read_image_rgb(path, 'donor image of the background/occlusion augmentation')
            region = img[y:y + side, x:x + side]
            small = cv2.resize(region, (32, 32), interpolation=cv2.INTER_AREA)
            if TopDownAugmentation.green_mask(small).mean() > self.DONOR_MAX_GREEN:
                continue
            return region.copy()
        return None

    def ground_truth(self):
        """(joints [N,K,2], visible [N,K], boxes xywh [N,4]) of all samples."""
        r = self.records
        return r.joints, r.visible, r.boxes

    def __getitem__(self, index: int) -> dict:
        r = self.records
        if index < 0:
            index += len(r)
        image = read_image_rgb(r.image_files[index], f'annotation id={int(r.ann_ids[index])}, '
                               f'{r.sides[index]} hand, in {self.ann_file}')
        out = self.augment(image, r.joints[index], r.visible[index], r.centers[index], r.scales[index],
                           self.rng(index) if not self.test_mode else None, donor=self.donor_region)
        if not self.test_mode:
            return {'img': out['img'], 'target': out['target'], 'target_weight': out['target_weight']}
        return {
            'img': out['img'],
            'center': torch.from_numpy(r.centers[index].copy()),
            'scale': torch.from_numpy(r.scales[index].copy()),
            'joints': torch.from_numpy(r.joints[index].copy()),
            'visible': torch.from_numpy(r.visible[index].copy()),
            'bbox': torch.from_numpy(r.boxes[index].copy()),
            'image_id': int(r.image_ids[index]),
            'index': int(index),
        }




class HandCocoWholeBodyDataset(CocoWholeBodyHandDataset):
    """The published configuration's ``dataset.train/val`` entry (``type: HandCocoWholeBodyDataset``)
    as ModelScope builds it for an ``MsDataset`` (``to_custom_dataset``): EasyCV ``data_source`` +
    ``pipeline``, with ``split_config`` ({split: local folder}) supplying ``${data_root}``.

    When the configured ``ann_file`` is not inside the split folder (the published configuration
    names EasyCV's original ``data/coco/...`` paths), the folder's own annotation file is used
    (see :func:`resolve_split_folder`).
    """

    def __init__(self, data_source=None, pipeline=None, split_config=None, preprocessor=None, mode=None, **kwargs):
        if preprocessor is not None:  # ModelScope passes the configuration's (inference) preprocessor
            logger.debug('HandCocoWholeBodyDataset does its own preprocessing; ignoring %r', preprocessor)
        src = dict(data_source or {})
        src.pop('type', None)
        split, data_root = (next(iter(split_config.items())) if split_config else (None, None))
        data_root = str(data_root).rstrip(os.sep) if data_root else None
        test_mode = bool(src.pop('test_mode', mode not in (None, 'train')))
        ann, prefix = src.pop('ann_file', None), src.pop('img_prefix', None)
        hints = ()
        if data_root is not None and (not ann or (DATA_ROOT_PATTERN not in str(ann)
                                                  and not os.path.isfile(os.path.join(data_root, str(ann))))):
            ann, prefix, hints = resolve_split_folder(data_root, split, train=not test_mode)
            data_root = None
        if not ann:
            raise DatasetError('HandCocoWholeBodyDataset needs data_source.ann_file (or an MsDataset split folder).')
        keep = {k: kwargs[k] for k in ('skip_invalid', 'seed', 'padding', 'check_images') if k in kwargs}
        super().__init__(ann, prefix, data_cfg=src.pop('data_cfg', None), pipeline=None if not test_mode else [],
                         test_mode=test_mode, data_root=data_root, prefix_hints=hints, **keep)
        if pipeline is not None and not test_mode:
            self.augment = TopDownAugmentation.from_pipeline(pipeline, self.image_size, self.heatmap_size, train=True)
