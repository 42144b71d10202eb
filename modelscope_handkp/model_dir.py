"""Model directories: reading ``configuration.json``, telling the two formats apart, finding the
weight files, and converting the published (EasyCV) layout into this plugin's layout.

Two kinds of model directory are understood:

* **published / EasyCV format** — the hub model ``damo/cv_hrnetw18_hand-pose-keypoints_coco-wholebody``
  as EasyCV exported it: ``configuration.json`` with ``model.type = "HRNet-Hand2D-Keypoints"``,
  ``plugins: ["pai-easycv"]``, jsonplus-encoded tuples (``{"__class__": "tuple", "__value__": [...]}``),
  image/heatmap sizes in ``data_cfg`` and a ``DETECTION`` section pointing at an mmdet SSDLite
  detector (``detection/config.py`` + ``detection/detection_model.pth``); weights in
  ``pytorch_model.pt`` (``{'state_dict': ..., 'meta': ...}``).
* **this plugin's format** — ``configuration.json`` like the repository's top-level one:
  ``model.type = "handkp-topdown-hrnet"``, plain JSON lists, ``model.image_size`` /
  ``model.heatmap_size``, test settings in ``model.test_cfg``, a ``detector`` section
  (``{"type": "ssdlite", "config_file": ..., "checkpoint": ...}``, ``{"type": "palm"}``,
  ``{"type": "whole_image"}`` or ``{"type": "none"}``), no ``plugins`` entry; weights in
  ``pytorch_model.pt``.

Nothing in a model directory is ever executed: JSON is parsed, the mmdet ``config.py`` is read by
:mod:`modelscope_handkp.detection.mmdet_config` (an AST reader, no ``exec``) and checkpoints are
loaded with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FILE = 'configuration.json'
WEIGHTS_FILE = 'pytorch_model.pt'
MODEL_CARD_FILE = 'README.md'
TASK = 'hand-2d-keypoints'

FORMAT_EASYCV = 'easycv'
FORMAT_HANDKP = 'handkp'
FORMAT_VERSION = 1

# names this plugin registers with ModelScope
MODEL_TYPE = 'handkp-topdown-hrnet'
PIPELINE_TYPE = 'handkp-hand-2d-keypoints'
PREPROCESSOR_TYPE = 'handkp-hand-image'
# names of the published (EasyCV) model directory, served by this plugin when pai-easycv is absent
OFFICIAL_MODEL_TYPE = 'HRNet-Hand2D-Keypoints'
OFFICIAL_PIPELINE_TYPE = 'hrnetv2w18_hand-2d-keypoints_image'
OFFICIAL_PLUGIN = 'pai-easycv'
HUB_MODEL_ID = 'damo/cv_hrnetw18_hand-pose-keypoints_coco-wholebody'

DETECTOR_TYPES = ('ssdlite', 'palm', 'whole_image', 'none')
DEFAULT_SCORE_THRESHOLD = 0.5  # the published DETECTION.score_threshold
DEFAULT_IMAGE_SIZE = (256, 256)

_HOW_TO_GET = (f'use a complete model directory: the published model ({HUB_MODEL_ID}, downloaded with '
               'modelscope.snapshot_download), a directory written by modelscope_handkp.convert_model_dir '
               "or by build_trainer('easycv', ...), or modelscope_handkp.starter_model_dir()")


class ModelDirError(ValueError):
    """A model directory (or its configuration.json) is missing something or is malformed."""


class MissingWeightsError(ModelDirError, FileNotFoundError):
    """A model directory has no weights file."""


# ----------------------------------------------------------------------------- configuration.json
def decode_jsonplus(obj):
    """Plain Python values from EasyCV/ModelScope JSON: ``{"__class__": "tuple", "__value__": [...]}``
    becomes a tuple (``set``/``frozenset`` likewise); mappings (incl. ModelScope ``ConfigDict``)
    become plain dicts, recursively."""
    if isinstance(obj, Mapping):
        if set(obj.keys()) == {'__class__', '__value__'}:
            cls, value = obj['__class__'], obj['__value__']
            items = [decode_jsonplus(v) for v in value] if isinstance(value, (list, tuple)) else value
            if cls == 'tuple':
                return tuple(items)
            if cls in ('set', 'frozenset'):
                return set(items) if cls == 'set' else frozenset(items)
            raise ModelDirError(
                f'configuration.json holds a jsonplus value of class {cls!r} that this plugin does not '
                'decode (only tuple/set/frozenset); replace it with a plain JSON value.')
        return {str(k): decode_jsonplus(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(decode_jsonplus(v) for v in obj) if isinstance(obj, tuple) else [
            decode_jsonplus(v) for v in obj]
    return obj


def _plain_json(obj):
    """Tuples -> lists, for writing this plugin's configuration.json."""
    if isinstance(obj, Mapping):
        return {str(k): _plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain_json(v) for v in obj]
    return obj


def dumps_configuration(cfg: Mapping) -> str:
    """JSON text of a configuration: indented objects, lists of plain values on one line."""
    def fmt(obj, level):
        pad, inner = '  ' * level, '  ' * (level + 1)
        if isinstance(obj, Mapping):
            if not obj:
                return '{}'
            items = [f'{inner}{json.dumps(str(k))}: {fmt(v, level + 1)}' for k, v in obj.items()]
            return '{\n' + ',\n'.join(items) + '\n' + pad + '}'
        if isinstance(obj, (list, tuple)):
            if all(not isinstance(v, (Mapping, list, tuple)) for v in obj):
                return json.dumps(list(obj))
            return '[\n' + ',\n'.join(inner + fmt(v, level + 1) for v in obj) + '\n' + pad + ']'
        return json.dumps(obj)
    return fmt(_plain_json(cfg), 0) + '\n'


def _check_dir(model_dir) -> Path:
    if model_dir is None:
        raise ModelDirError(f'no model directory given; {_HOW_TO_GET}.')
    path = Path(os.fspath(model_dir)).expanduser()
    if not path.exists():
        raise ModelDirError(f'model directory {str(path)!r} does not exist; {_HOW_TO_GET}.')
    if not path.is_dir():
        raise ModelDirError(f'{str(path)!r} is a file, not a model directory; pass the folder that holds '
                            f'{CONFIG_FILE} and {WEIGHTS_FILE}.')
    return path


def new_file_mode(directory: bool = False) -> int:
    """The mode a new file (or folder) gets under the process umask: what ``tempfile.mkstemp`` /
    ``mkdtemp`` (always private, 0600 / 0700) should be given before they are renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def read_configuration(model_dir) -> dict:
    """The decoded ``configuration.json`` of ``model_dir`` (plain dicts, tuples decoded)."""
    path = _check_dir(model_dir)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise ModelDirError(f'{str(path)!r} is not a model directory: it has no {CONFIG_FILE}; {_HOW_TO_GET}.')
    try:
        text = cfg_file.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as e:
        raise ModelDirError(f'{cfg_file} cannot be read ({type(e).__name__}: {e}); restore the file.') from e
    if not text.strip():
        raise ModelDirError(f'{cfg_file} is empty; restore it (copy it from the model you downloaded, or '
                            'from the repository\'s configuration.json).')
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelDirError(f'{cfg_file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); '
                            'fix or restore the file.') from e
    if not isinstance(raw, dict):
        raise ModelDirError(f'{cfg_file} must hold a JSON object, found {type(raw).__name__}; restore the file.')
    return decode_jsonplus(raw)


def config_format(cfg: Mapping, where: str = CONFIG_FILE) -> str:
    """``'easycv'`` for the published layout, ``'handkp'`` for this plugin's layout."""
    model = cfg.get('model')
    mtype = model.get('type') if isinstance(model, Mapping) else None
    plugins = cfg.get('plugins') or []
    plugins = [plugins] if isinstance(plugins, str) else list(plugins)
    if 'handkp' in cfg or mtype == MODEL_TYPE:
        return FORMAT_HANDKP
    if (mtype == OFFICIAL_MODEL_TYPE or 'DETECTION' in cfg or any(OFFICIAL_PLUGIN in str(p) for p in plugins)
            or (isinstance(model, Mapping) and '__easycv_arch__' in model)):
        return FORMAT_EASYCV
    if not isinstance(model, Mapping):
        raise ModelDirError(f"{where} has no 'model' section, so it does not describe a hand keypoint model; "
                            f"restore the file ({_HOW_TO_GET}).")
    raise ModelDirError(
        f'{where} describes a model of type {mtype!r}, which is not a hand keypoint model of this plugin '
        f'(expected model.type {MODEL_TYPE!r} or the published {OFFICIAL_MODEL_TYPE!r}); {_HOW_TO_GET}.')


# ----------------------------------------------------------------------------- model spec
@dataclass
class DetectorSpec:
    """Which hand detector a model directory asks for.

    ``type``: ``'ssdlite'`` (``config_file`` + ``checkpoint``), ``'palm'`` (``variant``),
    ``'whole_image'`` (the image is one hand) or ``'none'`` (the caller passes ``boxes=``).
    """

    type: str = 'none'
    config_file: str | None = None
    checkpoint: str | None = None
    variant: str = 'full'
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    tiles: object = None  # palm only: zoom-in pass for small hands, mode str or dict (detection/tiling.py); None = default

    def to_config(self, model_dir=None) -> dict:
        out = {'type': self.type}
        if self.type == 'ssdlite':
            out['config_file'] = _relative(self.config_file, model_dir)
            out['checkpoint'] = _relative(self.checkpoint, model_dir)
        if self.type == 'palm':
            out['variant'] = self.variant
            if self.tiles is not None:
                out['tiles'] = self.tiles if isinstance(self.tiles, str) else dict(self.tiles)
        if self.type in ('ssdlite', 'palm'):
            out['score_threshold'] = float(self.score_threshold)
        return out


@dataclass
class ModelSpec:
    """Everything needed to build and run the model of one directory."""

    model_dir: str | None
    format: str
    config: dict
    model_cfg: dict  # for modelscope_handkp.models.build_hand_model
    checkpoint: str | None
    flip_test: bool = True
    post_process: str | None = 'unbiased'
    kernel: int = 11
    detector: DetectorSpec = field(default_factory=DetectorSpec)

    @property
    def image_size(self):
        return tuple(self.model_cfg.get('image_size', DEFAULT_IMAGE_SIZE))

    @property
    def heatmap_size(self):
        size = self.image_size
        return tuple(self.model_cfg.get('heatmap_size', (size[0] // 4, size[1] // 4)))


def _relative(path, model_dir):
    if path is None:
        return None
    if model_dir is None:
        return str(path)
    try:
        return os.path.relpath(path, model_dir)
    except ValueError:
        return str(path)


def _require(mapping, key, where, what):
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise ModelDirError(f"{where} is missing the key {key!r} ({what}); restore it from the model's original "
                            f"configuration.json or the repository's configuration.json.")
    return mapping[key]


def _size_pair(value, where, key):
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) <= 0:
        raise ModelDirError(f'{where}: {key} must be [width, height] of positive integers, got {value!r}.')
    return pair


def keypoint_model_cfg(cfg: Mapping, fmt: str | None = None, where: str = CONFIG_FILE) -> dict:
    """The TopDown model dict (EasyCV layout + ``image_size``/``heatmap_size``) of a configuration."""
    fmt = fmt or config_format(cfg, where)
    model = _require(cfg, 'model', where, 'the keypoint network description')
    if not isinstance(model, Mapping):
        raise ModelDirError(f"{where}: 'model' must be a JSON object, got {type(model).__name__}.")
    model = copy.deepcopy(dict(model))
    _require(model, 'backbone', f'{where} model', 'the HRNet backbone description')
    _require(model, 'keypoint_head', f'{where} model', 'the heatmap head description')
    out = {k: v for k, v in model.items() if k not in ('type', 'pretrained', '__easycv_arch__', 'checkpoint')}
    out['type'] = 'TopDown'
    if fmt == FORMAT_EASYCV:
        data_cfg = cfg.get('data_cfg') or {}
        image_size = data_cfg.get('image_size', DEFAULT_IMAGE_SIZE)
        heatmap_size = data_cfg.get('heatmap_size')
    else:
        image_size = model.get('image_size', DEFAULT_IMAGE_SIZE)
        heatmap_size = model.get('heatmap_size')
    image_size = _size_pair(image_size, where, 'image_size')
    heatmap_size = (_size_pair(heatmap_size, where, 'heatmap_size') if heatmap_size is not None else
                    (image_size[0] // 4, image_size[1] // 4))
    out['image_size'] = list(image_size)
    out['heatmap_size'] = list(heatmap_size)
    out.setdefault('train_cfg', {})
    out['test_cfg'] = dict(out.get('test_cfg') or {})
    return out


def test_settings(model_cfg: Mapping, where: str | None = None):
    """(flip_test, post_process, kernel) of a model section's ``test_cfg``, checked; the one reader of
    these keys (``kernel`` is accepted as an alias of ``modulate_kernel``).  ``where`` (the
    configuration file) starts the error messages."""
    try:
        return _test_settings(model_cfg)
    except ModelDirError as e:
        if where is None:
            raise
        raise ModelDirError(f'{where}: {e}') from None


def _test_settings(model_cfg: Mapping):
    test_cfg = (model_cfg or {}).get('test_cfg') or {}
    post = test_cfg.get('post_process', 'unbiased')
    if post in ('none', 'None', False):
        post = None
    if post not in ('unbiased', 'default', None):
        raise ModelDirError(f"model.test_cfg.post_process must be 'unbiased', 'default' or null, got {post!r}.")
    raw_kernel = test_cfg.get('modulate_kernel', test_cfg.get('kernel', 11))
    try:
        if isinstance(raw_kernel, (bool, str)) or isinstance(raw_kernel, float) and not raw_kernel.is_integer():
            raise ValueError
        kernel = int(raw_kernel)
    except (TypeError, ValueError):
        kernel = None
    if kernel is None or kernel < 1 or kernel % 2 == 0:
        raise ModelDirError(f'model.test_cfg.modulate_kernel must be a positive odd integer, got {raw_kernel!r}.')
    for key in ('flip_test', 'shift_heatmap'):
        _check_flag(test_cfg.get(key, True), f'model.test_cfg.{key}')
    return bool(test_cfg.get('flip_test', True)), post, kernel


def _check_flag(value, where: str) -> None:
    """``value`` must be true/false (or 0/1): ``bool('false')`` is True, so a quoted "false" would switch
    the setting on."""
    if isinstance(value, bool) or type(value) is int and value in (0, 1):
        return
    raise ModelDirError(f'{where} must be true or false (JSON booleans, without quotes), got {value!r}.')


def _score_threshold(value, where):
    try:
        thr = float(value)
    except (TypeError, ValueError):
        thr = float('nan')
    if not (0.0 <= thr <= 1.0):
        raise ModelDirError(f'{where}: score_threshold must be a number in [0, 1], got {value!r}.')
    return thr


def _palm_tiles(value, where):
    """The palm detector's ``tiles`` setting (a mode string or an object), checked; None if absent."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = dict(value)
    elif not isinstance(value, str):
        raise ModelDirError(f'{where}: expected a mode ("fallback", "always", "off") or an object like '
                            f'{{"mode": "fallback", "tiles": 4}}, got {value!r}.')
    try:
        from .detection.tiling import tile_settings
        tile_settings(value)
    except (ValueError, TypeError) as e:
        raise ModelDirError(f'{where}: {e}') from e
    return value


def detector_type(value) -> str:
    """A detector type name as written (``'Whole-Image'``, ``'wholeimage'`` ...) -> its canonical form."""
    dtype = str(value).lower()
    return 'whole_image' if dtype in ('whole-image', 'wholeimage') else dtype


def detector_spec(cfg: Mapping, model_dir=None, fmt: str | None = None, where: str = CONFIG_FILE) -> DetectorSpec:
    """The detector a configuration asks for, with file paths made absolute."""
    fmt = fmt or config_format(cfg, where)
    base = Path(os.fspath(model_dir)) if model_dir is not None else None

    def resolve(p):
        if p is None:
            return None
        p = Path(os.fspath(p)).expanduser()
        return str(p if p.is_absolute() or base is None else base / p)

    if fmt == FORMAT_EASYCV:
        det = cfg.get('DETECTION')
        if not det:
            return DetectorSpec('none')
        if not isinstance(det, Mapping):
            raise ModelDirError(f"{where}: 'DETECTION' must be a JSON object.")
        return DetectorSpec(
            'ssdlite',
            config_file=resolve(_require(det, 'config_file', f'{where} DETECTION', 'the mmdet detector config')),
            checkpoint=resolve(_require(det, 'model_path', f'{where} DETECTION', 'the detector weights')),
            score_threshold=_score_threshold(det.get('score_threshold', DEFAULT_SCORE_THRESHOLD),
                                             f'{where} DETECTION'))
    det = cfg.get('detector')
    if det is None:
        return DetectorSpec('none')
    if isinstance(det, str):
        det = {'type': det}
    if not isinstance(det, Mapping):
        raise ModelDirError(f"{where}: 'detector' must be a JSON object like {{\"type\": \"palm\"}}.")
    dtype = detector_type(det.get('type', 'none'))
    if dtype not in DETECTOR_TYPES:
        raise ModelDirError(f'{where}: detector.type {det.get("type")!r} is not one of {DETECTOR_TYPES}.')
    thr = _score_threshold(det.get('score_threshold', DEFAULT_SCORE_THRESHOLD), f'{where} detector')
    if dtype == 'ssdlite':
        return DetectorSpec(
            'ssdlite',
            config_file=resolve(_require(det, 'config_file', f'{where} detector', 'the mmdet detector config')),
            checkpoint=resolve(_require(det, 'checkpoint', f'{where} detector', 'the detector weights')),
            score_threshold=thr)
    if dtype == 'palm':
        return DetectorSpec('palm', variant=str(det.get('variant', 'full')), score_threshold=thr,
                            tiles=_palm_tiles(det.get('tiles'), f'{where} detector.tiles'))
    return DetectorSpec(dtype, score_threshold=thr)


def _check_task(cfg: Mapping, where: str) -> None:
    task = cfg.get('task')
    if task is None:
        raise ModelDirError(f"{where} is missing the key 'task'; add \"task\": \"{TASK}\".")
    if task != TASK:
        raise ModelDirError(f'{where} is for task {task!r}, not {TASK!r}; pass a hand keypoint model directory.')


def validate_configuration(cfg: Mapping, where: str = CONFIG_FILE, model_dir=None) -> str:
    """Check every key ModelScope and this plugin read from a hand keypoint configuration; return its
    format.  Raises :class:`ModelDirError` naming the missing or malformed key and the fix."""
    cfg = decode_jsonplus(cfg)
    fmt = config_format(cfg, where)
    _check_task(cfg, where)
    if 'framework' not in cfg:
        raise ModelDirError(f"{where} is missing the key 'framework'; add \"framework\": \"pytorch\".")
    pipe = cfg.get('pipeline')
    if not isinstance(pipe, Mapping) or not pipe.get('type'):
        name = PIPELINE_TYPE if fmt == FORMAT_HANDKP else OFFICIAL_PIPELINE_TYPE
        raise ModelDirError(f"{where} is missing the key 'pipeline' (with its 'type'), which ModelScope's pipeline() "
                            f'needs; add "pipeline": {{"type": "{name}"}}.')
    model_cfg = keypoint_model_cfg(cfg, fmt, where)
    test_settings(model_cfg, where)
    detector_spec(cfg, model_dir, fmt, where)
    return fmt


def load_model_spec(model_dir, require_weights: bool = True, config: Mapping | None = None) -> ModelSpec:
    """Read and check ``model_dir``; raise :class:`ModelDirError` saying what is wrong and what to do.

    ``config``: an already-read (possibly overridden) configuration to use instead of the file.
    """
    path = _check_dir(model_dir)
    where = str(path / CONFIG_FILE)
    cfg = decode_jsonplus(config) if config is not None else read_configuration(path)
    fmt = config_format(cfg, where)
    _check_task(cfg, where)
    model_cfg = keypoint_model_cfg(cfg, fmt, where)
    flip, post, kernel = test_settings(model_cfg, where)
    checkpoint = path / WEIGHTS_FILE
    if not checkpoint.is_file():
        if require_weights:
            raise MissingWeightsError(
                f'model directory {str(path)!r} has no weights: {WEIGHTS_FILE} is missing. Copy the checkpoint '
                f'there (the published one is part of {HUB_MODEL_ID}), or train one with '
                "build_trainer('easycv', ...).")
        checkpoint = None
    elif checkpoint.stat().st_size == 0:
        raise MissingWeightsError(f'{checkpoint} is empty (0 bytes): the download or copy did not finish; '
                                  'copy the file again.')
    return ModelSpec(model_dir=str(path), format=fmt, config=cfg, model_cfg=model_cfg,
                     checkpoint=str(checkpoint) if checkpoint else None, flip_test=flip, post_process=post,
                     kernel=kernel, detector=detector_spec(cfg, path, fmt, where))


def check_detector_files(spec: DetectorSpec, where: str = 'the model directory') -> None:
    """Raise a clear error when an SSDLite detector's files are missing."""
    if spec.type != 'ssdlite':
        return
    for what, p in (('config', spec.config_file), ('weights', spec.checkpoint)):
        if not p or not Path(p).is_file():
            raise ModelDirError(
                f'the hand detector {what} file {p!r} named by {where} does not exist. Copy the detector files '
                f'(the published model ships them under detection/), or pass boxes=[[x1, y1, x2, y2], ...] '
                "with detector='none', or choose another detector: pipeline(..., detector='palm') / "
                "detector='whole_image'.")


# ----------------------------------------------------------------------------- our configuration
def handkp_configuration(model_cfg: Mapping | None = None, detector: DetectorSpec | Mapping | None = None,
                         base: Mapping | None = None) -> dict:
    """A configuration.json (this plugin's format) for a keypoint model dict and a detector.

    ``base``: a configuration (either format) whose train/evaluation/dataset sections are kept.
    """
    from .models import default_model_cfg
    mc = copy.deepcopy(dict(model_cfg if model_cfg is not None else default_model_cfg()))
    mc = {k: v for k, v in mc.items() if k not in ('type', 'pretrained', '__easycv_arch__')}
    model = {'type': MODEL_TYPE, **mc}
    image_size = list(model.get('image_size', DEFAULT_IMAGE_SIZE))
    model['image_size'] = image_size
    model.setdefault('heatmap_size', [image_size[0] // 4, image_size[1] // 4])
    model.setdefault('train_cfg', {})
    test_cfg = {'flip_test': True, 'post_process': 'unbiased', 'shift_heatmap': True, 'modulate_kernel': 11}
    test_cfg.update(model.get('test_cfg') or {})
    model['test_cfg'] = test_cfg
    if detector is None:
        det = {'type': 'none'}
    elif isinstance(detector, DetectorSpec):
        det = detector.to_config()
    else:
        det = dict(detector)
    out = {
        'framework': 'pytorch',
        'task': TASK,
        'handkp': {
            'format_version': FORMAT_VERSION,
            'usage': ('modelscope-handkp model directory: pip install modelscope-handkp, then '
                      '`import modelscope_handkp` before modelscope.pipelines.pipeline(Tasks.hand_2d_keypoints, '
                      'model=DIR) or build_trainer("easycv", ...).'),
        },
        'model': model,
        'preprocessor': {'type': PREPROCESSOR_TYPE},
        'pipeline': {'type': PIPELINE_TYPE},
        'detector': det,
    }
    for key in ('dataset', 'train', 'evaluation', 'data_cfg', 'channel_cfg'):
        if base is not None and key in base:
            out[key] = copy.deepcopy(base[key])
    return _plain_json(out)


def handkp_config_from_easycv(cfg: Mapping, where: str = CONFIG_FILE) -> dict:
    """Translate a published (EasyCV) configuration into this plugin's format (relative paths kept)."""
    cfg = decode_jsonplus(cfg)
    model_cfg = keypoint_model_cfg(cfg, FORMAT_EASYCV, where)
    det = detector_spec(cfg, None, FORMAT_EASYCV, where)
    return handkp_configuration(model_cfg, det.to_config(), base=cfg)


# ----------------------------------------------------------------------------- conversion
def _local_or_hub(src) -> Path:
    """A local directory as is; a hub id like ``owner/name`` that is not a local path is downloaded with
    ModelScope's ``snapshot_download`` (needs network; the error says what to do without)."""
    text = os.fspath(src) if src is not None else None
    if text is None or Path(text).expanduser().exists() or not re.fullmatch(r'[\w.-]+/[\w.-]+', text) \
            or text.startswith(('.', '~')):
        return _check_dir(src)
    try:
        from modelscope.hub.snapshot_download import snapshot_download
        return Path(snapshot_download(text))
    except Exception as e:  # noqa: BLE001 - network errors of all kinds
        raise ModelDirError(f'{text!r} is not a local folder and downloading it from the ModelScope hub failed '
                            f'({type(e).__name__}: {str(e)[:200]}); download the model directory elsewhere and '
                            'pass its local path.') from e


def convert_model_dir(src, dst, overwrite: bool = False, check: bool = True) -> str:
    """Write a copy of model directory ``src`` (published EasyCV layout or this plugin's; a local folder, or a
    hub id, downloaded) to ``dst`` in
    this plugin's format, and return ``dst``.

    * ``configuration.json`` is rewritten (plain JSON, ``model.type`` ``handkp-topdown-hrnet``, a
      ``detector`` section, no ``plugins`` entry, train/evaluation/dataset sections kept);
    * ``pytorch_model.pt`` is re-saved as ``{'state_dict': ..., 'meta': ...}`` after a safe read (and,
      with ``check``, after loading it into the network, so a wrong checkpoint fails here);
    * the detector files are copied byte for byte to ``detection/`` (``config.py`` is never executed);
    * the model card ``README.md``, if any, is copied.

    ``dst`` must not exist or be empty; an existing non-empty ``dst`` is only replaced with
    ``overwrite=True``.  The copy is written to a temporary folder next to ``dst`` and renamed into
    place, so a failed conversion leaves nothing behind.
    """
    src_path = _local_or_hub(src)
    spec = load_model_spec(src_path, require_weights=True)
    dst_path = Path(os.path.abspath(Path(os.fspath(dst)).expanduser()))
    check_target(dst_path, src_path, overwrite)
    check_detector_files(spec.detector, str(src_path / CONFIG_FILE))

    if check:
        from .checkpoint import load_checkpoint
        from .models import build_hand_model
        try:
            load_checkpoint(build_hand_model(spec.model_cfg), spec.checkpoint, strict=True)
        except Exception as e:
            raise ModelDirError(f'convert_model_dir: {spec.checkpoint} does not load into the network described by '
                                f'{src_path / CONFIG_FILE}: {e}') from e

    meta = {'converted_from': str(src_path), 'source_format': spec.format,
            'converted_by': 'modelscope_handkp.convert_model_dir'}
    return write_model_dir(spec, dst_path, lambda: read_plain_state_dict(spec.checkpoint), meta, overwrite=overwrite)


def check_target(dst_path: Path, src_path: Path | None, overwrite: bool) -> None:
    """Refuse to write a model directory at ``dst_path`` that is (or holds) the current folder or the source
    ``src_path``, is a file, or -- without ``overwrite`` -- is a folder with something in it."""
    dst_path = Path(dst_path)
    here = Path.cwd().resolve()
    if dst_path.resolve() == here or dst_path.resolve() in here.parents:
        raise ModelDirError(f'{dst_path} is the current folder (or contains it); a model directory is written as a '
                            'new folder, and replacing this one would delete everything in it. Pass a new folder, '
                            'e.g. ./my_model.')
    if src_path is not None and dst_path.resolve() == src_path.resolve():
        raise ModelDirError(f'{dst_path} is the source model directory; pass a new folder.')
    if src_path is not None and dst_path.resolve() in src_path.resolve().parents:
        raise ModelDirError(f'{dst_path} contains the source model directory {src_path}; replacing it would delete '
                            'the source. Pass a new folder.')
    if dst_path.exists():
        if not dst_path.is_dir():
            raise FileExistsError(f'{dst_path} exists and is a file; pass a new folder.')
        if any(dst_path.iterdir()) and not overwrite:
            raise FileExistsError(f'{dst_path} already exists and is not empty; pass another folder, or '
                                  'overwrite=True to replace it.')


def _plugin_configuration(spec: ModelSpec) -> dict:
    """``spec``'s configuration in this plugin's format (detector files named under ``detection/``)."""
    # spec.model_cfg, not the file's model section: it holds the overrides the model was built with
    new_cfg = handkp_configuration(spec.model_cfg, None, base=spec.config)
    if spec.format != FORMAT_EASYCV:
        new_cfg['handkp'].update({k: v for k, v in (spec.config.get('handkp') or {}).items()
                                  if k not in ('format_version', 'usage')})
    det = spec.detector
    if det.type == 'ssdlite':
        cfg_name = 'config' + (Path(det.config_file).suffix or '.py')
        new_cfg['detector'] = {'type': 'ssdlite', 'config_file': f'detection/{cfg_name}',
                               'checkpoint': 'detection/' + Path(det.checkpoint).name,
                               'score_threshold': float(det.score_threshold)}
    else:
        new_cfg['detector'] = det.to_config()
    return new_cfg


def read_plain_state_dict(path) -> dict:
    """The tensors of a checkpoint file, detached and contiguous (a safe read)."""
    from .checkpoint import read_state_dict
    return {k: v.detach().clone().contiguous() for k, v in read_state_dict(str(path)).items()}


def write_model_dir(spec: ModelSpec, dst, state_dict, meta: dict, overwrite: bool = False,
                    config: Mapping | None = None) -> str:
    """Write ``spec`` with the weights ``state_dict`` (a dict, or a function returning one) as a model
    directory of this plugin at ``dst``: configuration.json (``spec``'s, in this plugin's format; the
    dataset / train / evaluation sections of ``config`` replace its own when given), pytorch_model.pt,
    the SSDLite detector files under ``detection/`` and the model card.

    An existing non-empty ``dst`` is only replaced with ``overwrite=True``.  Everything is written to a
    temporary folder next to ``dst`` and renamed into place, so a failure leaves nothing behind.
    """
    dst_path = Path(os.path.abspath(Path(os.fspath(dst)).expanduser()))  # '.' / 'a/..' have no usable name
    src_path = Path(spec.model_dir) if spec.model_dir else None
    check_target(dst_path, src_path, overwrite)
    new_cfg = _plugin_configuration(spec)
    for key in ('dataset', 'train', 'evaluation'):
        if config is not None and key in config:
            new_cfg[key] = _plain_json(decode_jsonplus(copy.deepcopy(dict(config))[key]))
    det = spec.detector
    files = []
    if det.type == 'ssdlite':
        check_detector_files(det, str(src_path / CONFIG_FILE) if src_path else 'the model configuration')
        files = [(det.config_file, new_cfg['detector']['config_file']),
                 (det.checkpoint, new_cfg['detector']['checkpoint'])]
    if src_path is not None and (src_path / MODEL_CARD_FILE).is_file():  # the card travels with the weights
        files.append((src_path / MODEL_CARD_FILE, MODEL_CARD_FILE))
    return publish_model_folder(dst_path, new_cfg, state_dict, meta, files)


def publish_model_folder(dst, configuration: Mapping, state_dict, meta: Mapping, files=()) -> str:
    """Write a model directory -- ``configuration`` as configuration.json, ``{'state_dict', 'meta'}`` as
    pytorch_model.pt (``state_dict`` a dict of tensors or a function returning one) and each ``(src, rel)``
    of ``files`` copied to ``rel`` -- into a temporary folder next to ``dst``, then rename it into place.
    An existing ``dst`` is swapped out only once the new folder is complete, so a reader never sees half a
    model directory (the weights of one state with the configuration of another) and a failure leaves
    ``dst`` as it was. The caller decides whether ``dst`` may be replaced."""
    import torch

    dst_path = Path(os.path.abspath(os.fspath(dst)))
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{dst_path.name}.', dir=str(dst_path.parent)))
    try:
        sd = state_dict() if callable(state_dict) else state_dict
        torch.save({'state_dict': {k: v.detach().cpu().clone().contiguous() for k, v in sd.items()},
                    'meta': dict(meta)}, str(tmp / WEIGHTS_FILE))
        for src, rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        (tmp / CONFIG_FILE).write_text(dumps_configuration(configuration), encoding='utf-8')
        os.chmod(tmp, new_file_mode(directory=True))  # mkdtemp made it private (0700)
        if dst_path.exists():
            # the old folder moves into a fresh private holder (never a fixed name that could be someone's)
            holder = Path(tempfile.mkdtemp(prefix=f'.{dst_path.name}.replaced.', dir=str(dst_path.parent)))
            try:
                os.replace(dst_path, holder / dst_path.name)
            except OSError:
                holder.rmdir()
                raise
            try:
                os.replace(tmp, dst_path)
            except OSError:
                os.replace(holder / dst_path.name, dst_path)
                holder.rmdir()
                raise
            shutil.rmtree(holder, ignore_errors=True)
        else:
            os.replace(tmp, dst_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dst_path)
