"""``modelscope-handkp``: the command line interface (also ``python -m modelscope_handkp``).

Subcommands::

    modelscope-handkp predict INPUT... [--model DIR|ID] [--out DIR] [--boxes JSON] [--no-flip]
                                       [--score-thr F] [--detector {auto,ssdlite,palm,whole-image}]
                                       [--overwrite] [--json-only]
    modelscope-handkp video INPUT|CAMERA_INDEX --out FILE [--jsonl FILE] [--model DIR|ID] [--no-flip]
                                       [--max-frames N] [--overwrite]
    modelscope-handkp train --data DIR_OR_MSDATASET [--val ...] --work-dir DIR [--model DIR] [--epochs N]
                                       [--batch-size N] [--cfg-options k=v ...] [--resume] [--overwrite]
    modelscope-handkp eval --model DIR --data DIR_OR_ANN [--no-flip]
    modelscope-handkp export --model DIR --out FILE.onnx [--detector-out FILE.onnx] [--no-flip] [--overwrite]
    modelscope-handkp convert SRC DST [--overwrite]
    modelscope-handkp convert-palm-detector [--tflite PATH] [--out-dir DIR] [--variant full|lite] [--overwrite]

``predict`` writes one JSON line per image to stdout (and ``predictions.jsonl`` in ``--out``)::

    {"image": "photo.jpg", "width": 640, "height": 480,
     "hands": [{"box": [x1, y1, x2, y2], "score": 0.98, "rotation": 0.0,
                "keypoints": [[x, y, score], ... 21 rows]}]}

Coordinates are pixels of the original image (rounded to 0.001 px; scores to 1e-4); ``rotation`` is
the in-plane angle (degrees) of the hand crop (non-zero with the palm detector).  Images are read by the
CLI itself (OpenCV, EXIF orientation applied) and handed to the pipeline as RGB arrays
(``input_color='rgb'``), so the numbers equal ``pipeline(Tasks.hand_2d_keypoints, model=...)(path)``.

Model resolution when ``--model`` is absent: the starter model bundled with the package
(:func:`modelscope_handkp.starter_model_dir`), else the published hub model
``damo/cv_hrnetw18_hand-pose-keypoints_coco-wholebody`` (downloaded by ModelScope; needs network).

Exit codes: 0 success; 1 a runtime failure (an unreadable input, a missing model, an unreachable hub,
an existing output file) — ``predict`` goes on with the other inputs and returns 1 at the end;
2 bad arguments; 130 interrupted (Ctrl-C, or a video file stopped early); 143 terminated (SIGTERM).
Expected errors print ``error: ...`` on stderr without a traceback; ``--debug``
shows tracebacks.  Nothing is overwritten without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from .files import check_writable_folder, missing_folders, partial_path

PROG = 'modelscope-handkp'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
#: extensions a drawing keeps (OpenCV can encode them); any other input extension gives a .jpg drawing
WRITABLE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
DEFAULT_OUT = 'handkp_out'
PREDICTIONS_FILE = 'predictions.jsonl'
DETECTOR_CHOICES = ('auto', 'ssdlite', 'palm', 'whole-image')

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_GLOB_CHARS = re.compile(r'[*?\[]')
_DEVICE = re.compile(r'^(cpu|gpu|cuda)(:\d+)?$')
_HUB_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')


class CLIError(Exception):
    """An expected error: printed as ``error: <message>`` (no traceback), exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class UsageError(CLIError):
    """Bad arguments (exit code 2)."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


def _err(message: str) -> None:
    print(f'{PROG}: error: {message}', file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f'{PROG}: warning: {message}', file=sys.stderr, flush=True)


def _info(message: str) -> None:
    print(f'{PROG}: {message}', file=sys.stderr, flush=True)


# ============================================================================== model resolution
def hub_model_id() -> str:
    from .model_dir import HUB_MODEL_ID
    return HUB_MODEL_ID


def _download(model_id: str) -> str:
    """A local copy of hub model ``model_id``: the ModelScope cache first, then the network."""
    from modelscope.hub.snapshot_download import snapshot_download
    try:
        return snapshot_download(model_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: download
        pass
    return snapshot_download(model_id)


def resolve_model(model: str | None) -> str:
    """The local model directory for ``--model`` (a directory or a hub id; ``None``: the default)."""
    why_hub = ''
    if model is None:
        from . import starter_model_dir
        try:
            return starter_model_dir()
        except FileNotFoundError:
            model = hub_model_id()
            why_hub = ' (no --model given and no starter model is bundled with this installation)'
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CLIError(f'--model {model}: is a file, not a model directory; pass the folder that holds '
                           'configuration.json and pytorch_model.pt.')
        return str(path)
    if not _HUB_ID.match(model) or model.startswith(('.', '~')):
        raise CLIError(f'--model {model}: no such model directory; pass a local model directory (with '
                       'configuration.json and pytorch_model.pt) or a ModelScope hub model id such as '
                       f'{hub_model_id()}.')
    _info(f'downloading model {model} from the ModelScope hub{why_hub} ...')
    try:
        return _download(model)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - network errors of all kinds
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(
            f'cannot get model {model!r} from the ModelScope hub{why_hub}: {type(e).__name__}: {detail[:300]}. '
            'The hub is unreachable from this machine (or the id is wrong, or not a local folder). Pass a local '
            'model directory with --model DIR: one written by `modelscope-handkp train` (<work-dir>/output) or '
            '`modelscope-handkp convert`, or a copy of the hub model downloaded elsewhere with '
            f'modelscope.snapshot_download({hub_model_id()!r}).') from e


class _WarningsOnly(logging.Filter):
    """Drops ModelScope's records below WARNING: every ``modelscope.utils.logger.get_logger()`` call (the
    trainer's among them) sets the logger's level back to INFO, so a level alone does not keep it quiet."""

    def filter(self, record):
        return record.levelno >= logging.WARNING


_QUIET = _WarningsOnly()


def _quiet_modelscope(verbose: bool) -> None:
    logger = logging.getLogger('modelscope')
    if verbose:
        logger.removeFilter(_QUIET)
    else:
        logger.setLevel(logging.WARNING)
        logger.addFilter(_QUIET)


# ============================================================================== predict: inputs
@dataclass
class InputImage:
    path: str  # as the user gave it / as found (relative paths stay relative)
    rel: str  # output name relative to --out


def _is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


VIDEO_EXTENSIONS = ('.mp4', '.mov', '.m4v', '.avi', '.mkv', '.webm', '.mpg', '.mpeg', '.wmv', '.flv', '.3gp')


def _video_hint(paths) -> str:
    """'; it holds N video file(s) ... use `video`' for the no-images errors, or '' when none is a video."""
    videos = [p for p in paths if p.lower().endswith(VIDEO_EXTENSIONS)]
    if not videos:
        return ''
    return (f'; {len(videos)} video file(s) (e.g. {videos[0]}): videos are read by '
            '`modelscope-handkp video FILE --out OUT.mp4`, one video each')


def _same_folder(a: str, b: str | None) -> bool:
    return b is not None and os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, folder: str | None) -> bool:
    if folder is None:
        return False
    try:
        return os.path.commonpath([os.path.realpath(path), os.path.realpath(folder)]) == os.path.realpath(folder)
    except ValueError:
        return False


def _folder_images(folder: str, exclude: str | None) -> tuple[list[tuple[str, str]], int]:
    """(image path, path relative to ``folder``) of the images in ``folder``, and how many were skipped
    because they lie inside ``exclude`` (the output folder: earlier drawings)."""
    found = []
    skipped = 0
    visited = {os.path.realpath(folder)}  # symlinked folders are searched too, each real folder once (no loops)

    def keep(root: str, d: str) -> bool:
        nonlocal skipped
        full = os.path.join(root, d)
        if d.startswith('.'):
            return False
        if _inside(full, exclude):  # not searched; its images are counted as skipped
            skipped += sum(1 for _, _, names in os.walk(full) for n in names
                           if _is_image_file(n) and not n.startswith('.'))
            return False
        real = os.path.realpath(full)
        if real in visited:
            return False
        visited.add(real)
        return True

    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in sorted(dirs) if keep(root, d)]
        for name in sorted(files):
            if _is_image_file(name) and not name.startswith('.'):
                full = os.path.join(root, name)
                if _inside(full, exclude):
                    skipped += 1
                    continue
                found.append((full, os.path.relpath(full, folder)))
    return found, skipped


def output_name(rel: str) -> str:
    """The drawing's name for an input named ``rel``: its extension when OpenCV can write it, else ``.jpg``."""
    stem, ext = os.path.splitext(rel)
    return rel if ext.lower() in WRITABLE_EXTENSIONS else stem + '.jpg'


def _unique_names(rels: list[str]) -> list[str]:
    """Output names for ``rels`` (normalised, writable extension), numbered ``stem_N.ext`` where names repeat.

    The first input of a name keeps it; a later one gets the smallest ``N >= 2`` whose name is neither
    another input's plain name nor already given, so no two inputs ever share a drawing.
    """
    plain = [output_name(os.path.normpath(r)) for r in rels]
    taken = {os.path.normcase(n) for n in plain}
    given: set[str] = set()
    out = []
    for name in plain:
        key = os.path.normcase(name)
        if key in given:
            stem, ext = os.path.splitext(name)
            n = 2
            while os.path.normcase(f'{stem}_{n}{ext}') in taken:
                n += 1
            name = f'{stem}_{n}{ext}'
            key = os.path.normcase(name)
            taken.add(key)
        given.add(key)
        out.append(name)
    return out


def collect_inputs(items: list[str], exclude_dir: str | None = None) -> tuple[list[InputImage], list[str]]:
    """Image files, folders (searched recursively) and globs -> (images in order, error messages).

    Explicit file paths are kept whatever their extension (a wrong file gives a clear read error
    later); folders and glob matches contribute files with an image extension
    (jpg/jpeg/png/bmp/webp/tif/tiff).  Files under ``exclude_dir`` (the output folder, i.e. earlier drawings) are
    skipped in folders and glob matches.  ``rel`` (the drawing's name) is unique: repeated names are
    numbered (``a_2.jpg``), and an extension OpenCV cannot write becomes ``.jpg``.
    """
    found: list[tuple[str, str]] = []
    errors: list[str] = []
    seen: set[str] = set()

    def add(path: str, rel: str):
        key = os.path.realpath(path)
        if key in seen:
            return
        seen.add(key)
        found.append((path, rel))

    for item in items:
        if os.path.isdir(item):
            # earlier drawings are skipped when the output folder is (inside) the folder searched; a folder
            # inside the output folder (predict proj/photos --out proj) holds inputs
            inner = exclude_dir if exclude_dir is not None and not _inside(item, exclude_dir) or \
                _same_folder(item, exclude_dir) else None
            images, skipped = _folder_images(item, inner)
            if not images and skipped:
                errors.append(f'{item}: all {skipped} images of this folder are inside the output folder '
                              f'{exclude_dir}, where drawings are written, and are skipped; pass the folder of the '
                              'input images, or another --out.')
            elif not images:
                videos = _video_hint(os.path.join(r, n) for r, _, names in os.walk(item) for n in sorted(names))
                errors.append(f'{item}: folder has no images ({"/".join(e[1:] for e in IMAGE_EXTENSIONS)}){videos}.')
            for full, rel in images:
                add(full, rel)
        elif os.path.exists(item):
            add(item, os.path.basename(item))
        elif _GLOB_CHARS.search(item):
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            if not matches:
                errors.append(f'{item}: no file matches this pattern.')
                continue
            hits = 0  # images the pattern matches, also those an earlier input already added
            skipped = 0
            for m in matches:
                if _inside(m, exclude_dir):
                    skipped += int(os.path.isdir(m) or _is_image_file(m))
                elif os.path.isdir(m):
                    images, n_skipped = _folder_images(m, exclude_dir)
                    skipped += n_skipped
                    hits += len(images)
                    for full, rel in images:
                        add(full, os.path.join(os.path.basename(os.path.normpath(m)), rel))
                elif _is_image_file(m):
                    hits += 1
                    add(m, os.path.basename(m))
            if not hits:
                why = (f'; {skipped} match(es) skipped: inside the output folder {exclude_dir}, where drawings are '
                       'written' if skipped else '')
                errors.append(f'{item}: the pattern matches no image files ({", ".join(IMAGE_EXTENSIONS)}){why}'
                              f'{_video_hint(matches)}.')
        else:
            errors.append(f'{item}: no such file or folder.')
    names = _unique_names([rel for _, rel in found])
    return [InputImage(path, rel) for (path, _), rel in zip(found, names)], errors


# ============================================================================== predict: --boxes
def _parse_box_list(value, where: str):
    """A list of [x1, y1, x2, y2(, score)] (or a single box) -> validated float array [M, 4|5]."""
    import numpy as np

    from .detection.base import as_detections
    if not isinstance(value, list) or any(isinstance(v, (dict, str, bool)) for v in value):
        raise UsageError(f'--boxes {where}: expected a list of [x1, y1, x2, y2] or [x1, y1, x2, y2, score] in '
                         f'image pixels, got {json.dumps(value)[:80]}.')
    if value and all(isinstance(v, (int, float)) for v in value):
        value = [value]  # a single box
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise UsageError(f'--boxes {where}: boxes must be lists of 4 or 5 numbers ({e}).') from e
    try:
        as_detections(arr)
    except ValueError as e:
        raise UsageError(f'--boxes {where}: {e}') from e
    return arr.reshape(-1, arr.shape[-1] if arr.size else 4)


def parse_boxes(text: str | None, images: list[InputImage]) -> dict[int, object]:
    """``--boxes`` (a JSON string or a JSON file) -> {input index: boxes array}.

    A list applies to the single input image; a dict maps image paths (as given or as found in a
    folder, or absolute) or file names to lists of boxes.  Images without an entry use the detector.
    """
    if text is None:
        return {}
    source = 'argument'
    if os.path.isdir(text):
        raise UsageError(f'--boxes {text} is a folder; pass a .json file, or the JSON itself.')
    if os.path.isfile(text):
        source = text
        try:
            text = Path(text).read_text(encoding='utf-8-sig')  # a byte-order mark (Windows editors) is no error
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f'--boxes: cannot read {source}: {e}') from e
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        hint = ('no such file, and not valid JSON' if source == 'argument' else 'the file is not valid JSON')
        raise UsageError(f'--boxes: {hint} ({e.msg} at line {e.lineno}, column {e.colno}); pass JSON like '
                         '\'[[x1, y1, x2, y2], ...]\' or \'{"image.jpg": [[x1, y1, x2, y2]]}\', or a .json file.') from e
    if isinstance(value, list):
        if len(images) != 1:
            raise UsageError(f'--boxes holds a list of boxes, which is for a single image, but {len(images)} images '
                             'were given; pass a dict {"image path or name": [[x1, y1, x2, y2], ...], ...}.')
        return {0: _parse_box_list(value, 'list')}
    if not isinstance(value, dict):
        raise UsageError('--boxes must be a JSON list of boxes (one image) or a JSON object {image: boxes}.')
    by_path: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for i, im in enumerate(images):
        for key in {im.path, os.path.normpath(im.path), os.path.realpath(im.path), os.path.normpath(im.rel)}:
            by_path.setdefault(key, i)
        by_name.setdefault(os.path.basename(im.path), []).append(i)
    out: dict[int, object] = {}
    key_of: dict[int, str] = {}
    for key, boxes in value.items():
        arr = _parse_box_list(boxes, f'entry {key!r}')
        idx = None
        if os.path.basename(key) != key:  # a path: as given, as found in a folder, or absolute
            for cand in (key, os.path.normpath(key), os.path.realpath(os.path.expanduser(key))):
                if cand in by_path:
                    idx = by_path[cand]
                    break
        else:  # a bare file name: must name exactly one input (drawing names like x_2.jpg are not keys)
            named = by_name.get(key, [])
            if len(named) > 1:
                raise UsageError(f'--boxes entry {key!r} is the file name of {len(named)} input images ('
                                 f'{", ".join(images[i].path for i in named[:3])}{", ..." if len(named) > 3 else ""}'
                                 '); key those entries by their paths.')
            idx = named[0] if named else None
        if idx is None:
            _warn(f'--boxes entry {key!r} matches none of the input images; ignored.')
            continue
        if idx in key_of:
            raise UsageError(f'--boxes entries {key_of[idx]!r} and {key!r} both name {images[idx].path}; '
                             'give each image one entry.')
        key_of[idx] = key
        out[idx] = arr
    return out


# ============================================================================== predict: results
def result_record(image: str, width: int, height: int, result: dict) -> dict:
    """One JSON-ready record for a pipeline result."""
    import numpy as np
    from modelscope.outputs import OutputKeys

    from .video import json_list  # non-finite numbers -> null (NaN / Infinity are not JSON)

    kps = np.asarray(result[OutputKeys.KEYPOINTS], np.float64)
    boxes = json_list(np.round(np.asarray(result[OutputKeys.BOXES], np.float64), 3))
    scores = json_list(np.round(np.asarray(result[OutputKeys.SCORES], np.float64), 4))
    rots = np.asarray(result.get('rotations', np.zeros(len(boxes))), np.float64)
    rots = json_list(np.round(rots, 3))
    kps_out = json_list(np.concatenate([np.round(kps[..., :2], 3), np.round(kps[..., 2:], 4)], axis=-1))
    hands = [{'box': boxes[i], 'score': scores[i], 'rotation': rots[i], 'keypoints': kps_out[i]}
             for i in range(len(boxes))]
    return {'image': image, 'width': int(width), 'height': int(height), 'hands': hands}


def _drawer():
    """``draw_hands`` of :mod:`modelscope_handkp.draw` (checked before any work is done)."""
    try:
        from .draw import draw_hands
    except ImportError as e:
        raise CLIError(f'drawing results needs modelscope_handkp.draw, which cannot be imported here ({e}); '
                       'pass --json-only to print the keypoints without drawing.') from e
    return draw_hands


def _finish_jsonl(tmp: str, final: str, written: int, overwrite: bool) -> None:
    """Move the temporary JSON lines file ``tmp`` to ``final`` (removed instead when it holds no line)."""
    if written == 0:
        os.remove(tmp)
        if os.path.exists(final):
            _warn(f'no results to write: {final} (from an earlier run) is left as it was.')
        return
    if not overwrite and os.path.exists(final):  # appeared while we worked: keep it
        raise CLIError(f'{final} was created by someone else while predicting; it is kept and this run\'s '
                       f'results are in {tmp} (pass --overwrite to replace it).')
    from .model_dir import new_file_mode
    os.chmod(tmp, new_file_mode())  # mkstemp made it private; the results get a plain file's permissions
    os.replace(tmp, final)


def _print_result(obj) -> None:
    """Print the JSON result of a command; a closed stdout (``| head``, ``| true``) is not a failure of
    the work, which is done and written by then."""
    try:
        print(json.dumps(obj, default=_json_default), flush=True)
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    """Point file descriptor 1 at os.devnull once stdout's reader is gone, so that no later write (nor
    the flush at exit) raises BrokenPipeError again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(fd, sys.stdout.fileno())
        finally:
            os.close(fd)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured in tests)
        pass


def _write_image(path: str, image_rgb, overwrite: bool) -> None:
    import cv2
    ext = os.path.splitext(path)[1].lower()
    if ext not in WRITABLE_EXTENSIONS:
        raise OSError(f'cannot write {path}: OpenCV does not write {ext or "extension-less"} images; '
                      f'use one of {", ".join(WRITABLE_EXTENSIONS)}')
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, bgr)
    if not ok:
        raise OSError(f'OpenCV cannot encode a {ext} image')
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb' if overwrite else 'xb') as f:
        f.write(buf.tobytes())


class _Progress:
    """A progress bar on stderr (tqdm, a dependency of modelscope) when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool, desc: str = 'images'):
        self.bar = None
        if enabled and total > 1 and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit='img', file=sys.stderr, leave=False,
                                dynamic_ncols=True)
            except ImportError:  # pragma: no cover
                self.bar = None

    def update(self):
        if self.bar is not None:
            self.bar.update(1)

    def write(self, message: str):
        if self.bar is not None:
            self.bar.clear()
        print(message, file=sys.stderr, flush=True)
        if self.bar is not None:
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _detector_arg(choice: str, model_dir: str, boxes_for_all: bool):
    """The pipeline's ``detector=`` for ``--detector`` (None: the model directory's own)."""
    from .model_dir import load_model_spec
    if choice == 'auto':
        if boxes_for_all:
            return 'none'
        spec = load_model_spec(model_dir, require_weights=False)
        # a model directory without a detector (e.g. trained models) -> the bundled palm detector
        return 'palm' if spec.detector.type == 'none' else None
    return 'whole_image' if choice == 'whole-image' else choice


def build_pipeline(model_dir: str, detector=None, flip_test: bool | None = None,
                   score_threshold: float | None = None, device: str | None = None):
    """``pipeline(Tasks.hand_2d_keypoints, model=model_dir, ...)`` taking RGB arrays."""
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    from . import model_dir as md
    kwargs = {'input_color': 'rgb'}
    if detector is not None:
        kwargs['detector'] = detector
    if flip_test is not None:
        kwargs['flip_test'] = flip_test
    if score_threshold is not None:
        kwargs['score_threshold'] = score_threshold
    if device is not None:
        kwargs['device'] = device
    # fail on a bad directory with this plugin's message before ModelScope's generic one
    md.load_model_spec(model_dir, require_weights=True)
    return pipeline(Tasks.hand_2d_keypoints, model=model_dir, **kwargs)


def check_device(device: str | None) -> str | None:
    """``--device`` (lower-cased) when it is ``cpu``, ``gpu``, ``cuda``, ``gpu:N`` or ``cuda:N``, else UsageError."""
    if device is None:
        return None
    value = device.strip().lower()
    if not _DEVICE.match(value) or value.startswith('cpu:'):
        raise UsageError(f'--device {device!r}: not a device; pass cpu, gpu (or cuda) for the first GPU, or gpu:N '
                         '(cuda:N) for GPU number N.')
    if value != 'cpu':  # ModelScope quietly runs on the CPU without CUDA, and fails late on a bad index
        import torch
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.split(':')[1]) if ':' in value else 0
        if n == 0:
            _warn(f'--device {device}: no CUDA GPU is available here (torch.cuda.is_available() is False); '
                  'running on the CPU.')
        elif index >= n:
            raise UsageError(f'--device {device}: there is no GPU number {index}; this machine has {n} '
                             f'(gpu:0{f" ... gpu:{n - 1}" if n > 1 else ""}).')
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text if text else type(e).__name__


def _warn_whole_image_thr(args) -> None:
    if args.detector == 'whole-image' and args.score_thr is not None:
        _warn('--score-thr ignored: --detector whole-image has no scores to threshold (each image is one hand).')


def cmd_predict(args) -> int:
    import cv2

    from .preprocessor import ImageReadError, read_image_file

    if args.score_thr is not None and not (0.0 <= args.score_thr <= 1.0):
        raise UsageError(f'--score-thr must be in [0, 1], got {args.score_thr}.')
    write_images = not args.json_only
    out_dir = args.out if args.out is not None else (None if args.json_only else DEFAULT_OUT)
    images, input_errors = collect_inputs(args.inputs, exclude_dir=out_dir)
    for msg in input_errors:
        _err(msg)
    if not images:
        _err('no input images to process.')
        return EXIT_FAILED
    boxes = parse_boxes(args.boxes, images)
    if len(boxes) == len(images):
        ignored = [o for o, given in (('--score-thr', args.score_thr is not None),
                                       ('--detector', args.detector != 'auto')) if given]
        if ignored:
            _warn(f'{" and ".join(ignored)} ignored: --boxes gives the boxes of every input image, so no detector '
                  'runs.')
    else:
        _warn_whole_image_thr(args)

    # output files: refuse to overwrite anything without --overwrite, and never an input image
    jsonl_path = os.path.join(out_dir, PREDICTIONS_FILE) if out_dir is not None else None
    targets = ([jsonl_path] if jsonl_path else []) + (
        [os.path.join(out_dir, im.rel) for im in images] if write_images and out_dir is not None else [])
    inputs_real = {os.path.realpath(im.path) for im in images}
    for t in targets:
        if os.path.realpath(t) in inputs_real:
            raise UsageError(f'the output {t} would replace the input image of the same path; pass another --out.')
    if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f'--out {out_dir} is a file; pass a folder.')
    if out_dir is not None:  # before the (slow) model loading
        existing_dir = missing_folders(out_dir)[1]
        if os.path.isdir(existing_dir):
            check_writable_folder(existing_dir, f'--out {out_dir}')
    if not args.overwrite:
        existing = [t for t in targets if os.path.exists(t)]
        if existing:
            more = f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''
            raise CLIError(f'{existing[0]} already exists{more}; pass --overwrite to replace, or another --out.')

    draw = _drawer() if write_images and out_dir is not None else None
    model_dir = resolve_model(args.model)
    detector = _detector_arg(args.detector, model_dir, boxes_for_all=len(boxes) == len(images))
    pipe = build_pipeline(model_dir, detector=detector, flip_test=False if args.no_flip else None,
                          score_threshold=args.score_thr, device=args.device)

    failed = len(input_errors)
    not_done = 0  # inputs left out because stdout was closed (nothing else would take their results)
    stdout_closed = False
    jsonl = jsonl_tmp = None
    written = 0
    created: list[str] = []
    if jsonl_path is not None:
        # a hidden temporary file, moved into place at the end: a run without results leaves none behind,
        # nor the folders it made
        created = missing_folders(out_dir)[0]
        os.makedirs(out_dir, exist_ok=True)
        fd, jsonl_tmp = tempfile.mkstemp(prefix=f'.{PREDICTIONS_FILE}.', suffix='.partial', dir=out_dir)
        jsonl = open(fd, 'w', encoding='utf-8')
    progress = _Progress(len(images), enabled=not args.no_progress)
    try:
        for i, im in enumerate(images):
            try:
                rgb = read_image_file(im.path)
                result = pipe(rgb, boxes=boxes[i]) if i in boxes else pipe(rgb)
                record = result_record(im.path, rgb.shape[1], rgb.shape[0], result)
                if draw is not None:  # before the JSON line: a failed drawing is a failed image
                    _write_image(os.path.join(out_dir, im.rel), draw(rgb, result), args.overwrite)
                line = json.dumps(record)
                if not stdout_closed:
                    try:
                        print(line, flush=True)
                    except BrokenPipeError:  # e.g. `| head -1`: not this image's failure
                        stdout_closed = True
                        _stdout_to_devnull()
                if jsonl is not None:
                    jsonl.write(line + '\n')
                    jsonl.flush()
                    written += 1
                elif stdout_closed:  # the results have nowhere to go: stop
                    not_done = len(images) - i
                    progress.write(f'{PROG}: stdout was closed (broken pipe); stopped, {not_done} '
                                   'input(s) not processed (their results had nowhere to go; not a failure).')
                    break
            except (ImageReadError, OSError, ValueError, cv2.error) as e:
                failed += 1
                progress.write(f'{PROG}: error: {im.path}: {_first_line(e)}')
                if args.debug:
                    traceback.print_exc()
            progress.update()
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the results so far are kept, and said to be partial
        if jsonl is not None and written:
            progress.write(f'{PROG}: stopped after {written} of {len(images)} images: {jsonl_path} holds their '
                           'results only.')
        raise
    finally:
        progress.close()
        if jsonl is not None:
            jsonl.close()
            _finish_jsonl(jsonl_tmp, jsonl_path, written, args.overwrite)
            if written == 0:
                for folder in created:  # innermost first; only empty folders go
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)
    done = len(images) - (failed - len(input_errors)) - not_done
    where = f'; results in {out_dir}' if out_dir is not None and (written or jsonl_path is None) else ''
    _info(f'{done} of {len(images) + len(input_errors)} inputs processed{where}.')
    if failed:
        _err(f'{failed} input(s) failed (see the messages above).')
        return EXIT_FAILED
    return EXIT_OK  # inputs left undone only because the reader closed stdout (`| head`) are no failure


# ============================================================================== video
def _video_source(text: str):
    """A camera index for an all-digit ``text`` -- unless a file of that name exists, which is preferred."""
    return int(text) if re.fullmatch(r'\d+', text) and not os.path.exists(text) else text


def cmd_video(args) -> int:
    from . import video as video_mod

    if args.score_thr is not None and not (0.0 <= args.score_thr <= 1.0):
        raise UsageError(f'--score-thr must be in [0, 1], got {args.score_thr}.')
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f'--max-frames must be >= 1, got {args.max_frames}.')
    _warn_whole_image_thr(args)
    if args.jsonl is not None and os.path.abspath(args.jsonl) == os.path.abspath(args.out):
        raise UsageError(f'--out and --jsonl are the same file ({args.out}); pass two paths.')
    source = _video_source(args.input)
    if isinstance(source, str) and not os.path.exists(source) and '://' not in source:
        raise CLIError(f'{source}: no such video file; pass a video file, a stream URL or a camera index (0, 1, ...).')
    for p in (args.out, args.jsonl):  # what --overwrite cannot help with first
        if p is None:
            continue
        if isinstance(source, str) and os.path.exists(source) and os.path.realpath(p) == os.path.realpath(source):
            raise UsageError(f'{p} is the input video; pass another output path.')
        if os.path.isdir(p):
            raise UsageError(f'{p} is a folder; give the path of the file to write '
                             f'(e.g. {os.path.join(p, "out.mp4")}).')
    problem = video_mod.extension_problem(args.out)
    if problem is not None:
        raise UsageError(problem)
    for p in (args.out, args.jsonl):
        if p is not None and os.path.exists(p) and not args.overwrite:
            raise CLIError(f'{p} already exists; pass --overwrite to replace it, or another path.')
    video_mod.check_outputs(source, args.out, args.jsonl, args.overwrite)  # before the (slow) model loading
    model_dir = resolve_model(args.model)
    detector = _detector_arg(args.detector, model_dir, boxes_for_all=False)
    pipe = build_pipeline(model_dir, detector=detector, flip_test=False if args.no_flip else None,
                          score_threshold=args.score_thr, device=args.device)

    def predict_fn(frame_rgb):
        return pipe(frame_rgb)

    summary = video_mod.process_video(source, predict_fn, args.out, args.jsonl, overwrite=args.overwrite,
                                      smoothing=not args.no_smoothing, max_frames=args.max_frames,
                                      progress=not args.no_progress)
    if summary is not None:
        try:
            _print_result(summary)
        except TypeError:
            pass
    wrote = f'{args.out}' + (f' and {args.jsonl}' if args.jsonl else '')
    if summary is not None and summary.get('interrupted') and _SIGTERM_SEEN:  # a camera run too
        _err(f'terminated (SIGTERM) after {summary.get("frames")} frames: {wrote} hold(s) the frames processed '
             'so far.')
        return 143
    if summary is not None and summary.get('interrupted') and not isinstance(source, int):
        # Ctrl-C is how a camera run ends; a video file stopped early gives a shorter output, and says so
        _err(f'interrupted after {summary.get("frames")} frames: {wrote} hold(s) only the frames processed so far.')
        return 130
    _info(f'wrote {wrote}')
    return EXIT_OK


# ============================================================================== train / eval
def _json_default(obj):
    import numpy as np
    if isinstance(obj, (np.generic, )):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, 'item'):
        return obj.item()
    return str(obj)


def parse_cfg_options(items: list[str] | None) -> dict:
    """``['a.b=1', 'c=[1, 2]', 'd=text']`` -> ``{'a.b': 1, 'c': [1, 2], 'd': 'text'}`` (JSON values, else strings)."""
    out = {}
    for item in items or []:
        if '=' not in item:
            raise UsageError(f'--cfg-options {item!r}: expected key=value (e.g. train.optimizer.lr=0.001).')
        key, raw = item.split('=', 1)
        key = key.strip()
        if not key:
            raise UsageError(f'--cfg-options {item!r}: empty key.')
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            low = raw.strip().lower()
            value = {'true': True, 'false': False, 'none': None, 'null': None}.get(low, raw)
        out[key] = value
    return out


def _dataset_arg(value: str | None, split: str, img_prefix: str | None = None):
    """A path is passed as it is (an annotation file with ``img_prefix`` as
    ``{'ann_file', 'img_prefix'}``); an ``owner/name`` that is no local path is loaded as an MsDataset."""
    if value is None:
        return None
    if os.path.exists(value):
        if img_prefix is not None and os.path.isdir(value):
            raise UsageError(f'--img-prefix is for annotation files; {value} is a dataset folder, whose images/ '
                             'folder is used. Pass the annotation file (e.g. '
                             f'{os.path.join(value, "annotations", "val.json")}) with --img-prefix, or drop it.')
        if img_prefix is not None and os.path.isfile(value):
            if not os.path.isdir(img_prefix):
                raise CLIError(f'--img-prefix {img_prefix}: no such folder.')
            return {'ann_file': os.path.abspath(value), 'img_prefix': os.path.abspath(img_prefix)}
        return os.path.abspath(value)
    if _HUB_ID.match(value):
        from modelscope.msdatasets import MsDataset
        namespace, name = value.split('/', 1)
        _info(f'loading dataset {value} (split {split}) with MsDataset.load ...')
        try:
            return MsDataset.load(name, namespace=namespace, split=split)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001
            raise CLIError(f'cannot load dataset {value!r} (split {split!r}) from the ModelScope hub: '
                           f'{type(e).__name__}: {_first_line(e)[:300]}. Pass a local dataset folder '
                           '(annotations/*.json + images/) or a COCO-WholeBody annotation file.') from e
    raise CLIError(f'{value}: no such dataset folder or annotation file; pass a folder (annotations/*.json + '
                   'images/), a COCO-WholeBody annotation file, or a ModelScope dataset id owner/name.')


def _build_trainer(default_args: dict):
    from modelscope.metainfo import Trainers
    from modelscope.trainers import build_trainer
    return build_trainer(Trainers.easycv, default_args=default_args)


def _scaled_lr_steps(model_dir: str, epochs: int) -> tuple[list[int] | int, list[int] | int] | None:
    """(old, new) ``train.lr_scheduler.step`` of ``model_dir``'s step schedule rescaled from its
    ``train.max_epochs`` to ``epochs`` (None: nothing to rescale).  Epoch lists stay increasing and
    below ``epochs`` (steps that do not fit are dropped); an interval stays >= 1."""
    from .model_dir import read_configuration
    try:
        train = read_configuration(model_dir).get('train') or {}
        old_max = int(train['max_epochs'])
        lr = train.get('lr_scheduler') or {}
        step = lr['step']
    except (ValueError, KeyError, TypeError, AttributeError):  # ModelDirError is a ValueError
        return None  # no such schedule (the trainer reports a broken configuration itself)
    if str(lr.get('policy', '')).lower() != 'step' or old_max < 1 or old_max == epochs:
        return None
    if isinstance(step, (int, float)) and not isinstance(step, bool):
        return int(step), max(1, int(step * epochs / old_max + 0.5))
    if not isinstance(step, (list, tuple)):
        return None
    new: list[int] = []
    for s in step:
        e = max(1, int(float(s) * epochs / old_max + 0.5))
        if new and e <= new[-1]:
            e = new[-1] + 1
        if e >= epochs:
            break
        new.append(e)
    return [int(s) for s in step], new


def train_cfg_options(args, model_dir: str) -> dict:
    """The ``cfg_options`` of ``train``: --epochs, --batch-size, --workers, --cfg-options, and the LR step
    epochs of ``model_dir``'s schedule rescaled to --epochs (unless --cfg-options sets them)."""
    opts = {}
    if args.epochs is not None:
        opts['train.max_epochs'] = args.epochs
    if args.batch_size is not None:
        opts['train.dataloader.batch_size_per_gpu'] = args.batch_size
    if args.workers is not None:
        opts['train.dataloader.workers_per_gpu'] = args.workers
        opts['evaluation.dataloader.workers_per_gpu'] = args.workers
    user = parse_cfg_options(args.cfg_options)
    opts.update(user)
    own_steps = any(k in ('train', 'train.lr_scheduler') or k.startswith('train.lr_scheduler.') for k in user)
    if args.epochs is not None and not own_steps and 'train.max_epochs' not in user:
        scaled = _scaled_lr_steps(model_dir, args.epochs)
        if scaled is not None:
            old, new = scaled
            opts['train.lr_scheduler.step'] = new
            _info(f'--epochs {args.epochs}: the learning-rate step epochs {old} of {model_dir} are rescaled to '
                  f'{new} for {args.epochs} epochs (pass --cfg-options train.lr_scheduler.step=[...] to choose '
                  'them).')
    return opts


def _check_loader_args(args) -> None:
    """--batch-size >= 1 and --workers >= 0, before any (slow) model loading."""
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f'--batch-size must be >= 1, got {args.batch_size}.')
    if args.workers is not None and args.workers < 0:
        raise UsageError(f'--workers must be >= 0 (0: load data in the main process), got {args.workers}.')


def cmd_train(args) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f'--epochs must be >= 1, got {args.epochs}.')
    _check_loader_args(args)
    parse_cfg_options(args.cfg_options)  # bad arguments first
    if args.resume and args.overwrite:
        raise UsageError('--resume and --overwrite exclude each other.')
    model_dir = resolve_model(args.model)
    opts = train_cfg_options(args, model_dir)
    train_ds = _dataset_arg(args.data, args.train_split, args.img_prefix)
    if args.val is not None:
        val_ds = _dataset_arg(args.val, args.val_split, args.img_prefix)
    elif isinstance(train_ds, str) and os.path.isdir(train_ds):
        val_ds = train_ds  # the trainer picks the folder's val split
        from .datasets.coco_wholebody_hand import DatasetError, has_split_file, resolve_split_folder
        try:
            resolve_split_folder(train_ds, None, train=False)
        except DatasetError as e:  # e.g. a folder with train.json only: train without evaluation, and say so
            if has_split_file(train_ds, train=False):
                raise  # it has a val split, only an ambiguous one (val_a.json, val_b.json): not "no val split"
            val_ds = None
            print(f'modelscope-handkp: warning: no validation split in --data {args.data} ({e}) Training runs '
                  'without evaluation: no metrics and no output_best/; pass --val DIR_OR_ANN to evaluate.',
                  file=sys.stderr)
    else:
        val_ds = None
    work_dir = os.path.abspath(args.work_dir)
    existing = missing_folders(work_dir)[1]  # the work_dir, or the folder it will be created in
    if os.path.isdir(existing):
        check_writable_folder(existing, f'--work-dir {args.work_dir}')  # before the (slow) trainer build
    trainer = _build_trainer(dict(model=model_dir, train_dataset=train_ds, eval_dataset=val_ds, work_dir=work_dir,
                                  resume=args.resume, overwrite=args.overwrite, device=args.device,
                                  skip_invalid=args.skip_invalid, cfg_options=opts))
    trainer.train()  # a work_dir it created is removed again when the run fails before writing anything
    from .hooks import BEST_OUTPUT_DIR, OUTPUT_DIR
    out = {'work_dir': work_dir, 'model_dir': os.path.join(work_dir, OUTPUT_DIR)}
    if os.path.isdir(os.path.join(work_dir, BEST_OUTPUT_DIR)):
        out['best_model_dir'] = os.path.join(work_dir, BEST_OUTPUT_DIR)
    out['epochs'] = int(getattr(trainer, 'epoch', 0))  # epochs completed
    out['metrics'] = dict(getattr(trainer, 'metric_values', None) or {}) or _last_logged_metrics(work_dir)
    _print_result(out)
    return EXIT_OK


def _last_logged_metrics(work_dir: str) -> dict:
    """The metrics of the last evaluation in ``work_dir/train_log.jsonl`` (a --resume of a finished run
    evaluates nothing; its result then reports the run's last metrics), {} when there are none."""
    from .hooks import TRAIN_LOG, read_train_log
    try:
        records = read_train_log(os.path.join(work_dir, TRAIN_LOG))
    except (OSError, ValueError):
        return {}
    evals = [r for r in records if isinstance(r, dict) and r.get('mode') == 'eval']
    return {k.split('/', 1)[1]: v for k, v in evals[-1].items() if k.startswith('evaluation/')} if evals else {}


def cmd_eval(args) -> int:
    _check_loader_args(args)
    opts = parse_cfg_options(args.cfg_options)  # bad arguments first
    model_dir = resolve_model(args.model)
    data = _dataset_arg(args.data, args.split, args.img_prefix)
    if args.no_flip:
        opts['model.test_cfg.flip_test'] = False
    if args.batch_size is not None:
        opts['evaluation.dataloader.batch_size_per_gpu'] = args.batch_size
    opts.setdefault('evaluation.dataloader.workers_per_gpu', args.workers if args.workers is not None else 0)
    with tempfile.TemporaryDirectory(prefix='handkp-eval-') as work_dir:
        trainer = _build_trainer(dict(model=model_dir, train_dataset=None, eval_dataset=data, work_dir=work_dir,
                                      device=args.device, skip_invalid=args.skip_invalid, cfg_options=opts))
        metrics = trainer.evaluate()
        n = len(trainer.eval_dataset) if getattr(trainer, 'eval_dataset', None) is not None else None
        flip_test = bool(trainer.hand_net.flip_test)  # what ran: --no-flip, --cfg-options or the model's own
    out = {'model': model_dir, 'data': args.data, 'flip_test': flip_test, 'num_hands': n,
           'metrics': dict(metrics or {})}
    _print_result(out)
    return EXIT_OK


# ============================================================================== export / convert
def cmd_export(args) -> int:
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise CLIError('ONNX export needs the onnx package: pip install "modelscope-handkp[onnx]" '
                       '(or pip install onnx).') from e
    from .export import check_opset
    try:
        check_opset(args.opset)
    except ValueError as e:
        raise UsageError(f'--opset: {e}') from None
    targets = [p for p in (args.out, args.detector_out) if p is not None]
    if args.detector_out is not None and os.path.abspath(args.detector_out) == os.path.abspath(args.out):
        raise UsageError('--out and --detector-out are the same file; pass two paths.')
    for p in targets:
        if os.path.isdir(p):
            raise UsageError(f'{p} is a folder; give the path of the .onnx file to write.')
        if os.path.exists(p) and not args.overwrite:
            raise CLIError(f'{p} already exists; pass --overwrite to replace it, or another path.')
        parent = missing_folders(os.path.dirname(os.path.abspath(p)))[1]  # must be a folder
        if not os.path.isdir(parent):
            raise UsageError(f'{p}: {parent} is a file, not a folder; pass another path.')
        check_writable_folder(parent, p)
    for p in targets:
        if not str(p).lower().endswith('.onnx'):
            _warn(f'{p} does not end in .onnx; it is written as an ONNX graph all the same (tools such as '
                  'Netron and model zoos go by the .onnx suffix).')
    model_dir = resolve_model(args.model)
    from . import model_dir as md
    from .export import export_detector_onnx, export_keypoint_onnx
    from .modelscope_model import HandKeypointsModel

    spec = md.load_model_spec(model_dir, require_weights=True)
    detector = None
    if args.detector_out is not None:  # check before the (slow) keypoint export
        if spec.detector.type not in ('ssdlite', 'palm'):
            raise CLIError(f'--detector-out: the model directory {model_dir} has detector type '
                           f'{spec.detector.type!r}, which has no network; only the SSDLite hand detector '
                           '(detector.type "ssdlite") and the palm detector ("palm") can be exported to ONNX.')
        from .pipeline import build_detector
        detector = build_detector(spec.detector, os.path.join(model_dir, md.CONFIG_FILE))
    net = HandKeypointsModel(model_dir).hand_model.eval()
    rotations = args.rotations if args.rotations is not None else spec.detector.type == 'palm'
    # all or nothing: with a detector graph to write as well, an existing keypoint graph (--overwrite) is
    # only replaced once both exports succeeded, and a new one is removed when the detector fails
    existed = os.path.exists(args.out)
    staged = detector is not None and existed
    kp_target = partial_path(args.out) if staged else args.out
    flip = bool(spec.flip_test) and not args.no_flip  # the model's test_cfg.flip_test, as in predict
    path = export_keypoint_onnx(net, kp_target, flip_test=flip, rotations=rotations,
                                opset=args.opset, overwrite=args.overwrite and not staged)
    out = {'keypoints_onnx': str(args.out), 'flip_test': flip, 'rotations_input': bool(rotations)}
    try:
        if detector is not None:
            out['detector_onnx'] = str(export_detector_onnx(detector, args.detector_out, opset=args.opset,
                                                            overwrite=args.overwrite))
        if staged:
            os.replace(path, args.out)
    except BaseException:
        if staged or not existed:  # a retry must not find half the result in its way
            with contextlib.suppress(OSError):
                os.remove(path)
        raise
    _print_result(out)
    return EXIT_OK


def cmd_convert(args) -> int:
    from . import convert_model_dir
    src = Path(args.src).expanduser()
    if not src.is_dir():
        raise CLIError(f'{args.src}: no such model directory; pass the folder of the published model '
                       '(configuration.json, pytorch_model.pt, detection/).')
    dst = Path(args.dst).expanduser()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not args.overwrite:
        raise CLIError(f'{args.dst} already exists and is not empty; pass --overwrite to replace it, or another DST.')
    path = convert_model_dir(str(src), str(dst), overwrite=args.overwrite)
    _print_result({'model_dir': str(path)})
    _info(f'wrote {path}: use it with --model {path}')
    return EXIT_OK


def cmd_convert_palm(args) -> int:
    from .detection.tflite_convert import convert_palm_detector
    if args.tflite is not None and not os.path.isfile(args.tflite):
        raise CLIError(f'--tflite {args.tflite}: no such file; pass the path of palm_detection_{args.variant}.tflite '
                       '(from the mediapipe==0.10.21 wheel), or leave --tflite out to fetch it with pip.')
    for name in (f'palm_detection_{args.variant}.pt', f'palm_detection_{args.variant}.json'):
        p = os.path.join(args.out_dir, name)
        if os.path.exists(p) and not args.overwrite:
            raise CLIError(f'{p} already exists; pass --overwrite to replace it, or another --out-dir.')
    path = convert_palm_detector(args.tflite, args.out_dir, variant=args.variant, overwrite=args.overwrite)
    _print_result({'weights': str(path)})
    return EXIT_OK


# ============================================================================== parser
def _add_model(p, required=False, help_extra=''):
    p.add_argument('--model', required=required, metavar='DIR|ID',
                   help='model directory (configuration.json + pytorch_model.pt) or ModelScope hub id' + help_extra)


def _add_device(p):
    p.add_argument('--device', default=None,
                   help="'cpu', 'gpu' (or 'cuda'), or 'gpu:N' / 'cuda:N' (default: a GPU when available)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                        help='show tracebacks of errors')
    common.add_argument('--verbose', action='store_true', default=argparse.SUPPRESS,
                        help="show ModelScope's log messages")

    default_model = ('; default: the bundled starter model, else the hub model '
                     'damo/cv_hrnetw18_hand-pose-keypoints_coco-wholebody')
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description='2D hand keypoints (21 per hand) with ModelScope: detect, draw, train, evaluate, export.',
        epilog=f'Run "{PROG} COMMAND --help" for the options of a command.')
    from . import __version__
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')

    p = sub.add_parser('predict', parents=[common], help='keypoints of the hands in images (JSON lines + drawings)',
                       description='Detect hands and their 21 keypoints in images; print one JSON line per image '
                                   f'and write a drawn image per input and {PREDICTIONS_FILE} to --out.')
    p.add_argument('inputs', nargs='+', metavar='INPUT',
                   help='image files, folders (searched recursively for jpg/jpeg/png/bmp/webp/tif/tiff) or glob '
                   'patterns')
    _add_model(p, help_extra=default_model)
    p.add_argument('--out', default=None, metavar='DIR',
                   help=f'output folder for drawn images and {PREDICTIONS_FILE} (default: ./{DEFAULT_OUT}; with '
                        '--json-only nothing is written unless --out is given)')
    p.add_argument('--boxes', default=None, metavar='JSON',
                   help='hand boxes instead of the detector: JSON (or a .json file) with a list '
                        '[[x1, y1, x2, y2(, score)], ...] for one image, or {"image path or name": [[...]], ...} '
                        '(a bare file name must name a single input)')
    p.add_argument('--no-flip', action='store_true', help='no flip test (faster, slightly less accurate)')
    p.add_argument('--score-thr', type=float, default=None, metavar='F',
                   help="detector score threshold in [0, 1] (default: the model directory's)")
    p.add_argument('--detector', choices=DETECTOR_CHOICES, default='auto',
                   help="hand detector (default auto: the model directory's, or the bundled palm detector when it "
                        "names none; whole-image: every image is one hand)")
    p.add_argument('--overwrite', action='store_true', help='replace existing output files')
    p.add_argument('--json-only', action='store_true', help='print JSON lines only, draw no images')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    _add_device(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser('video', parents=[common], help='keypoints in a video or camera stream, tracked and smoothed',
                       description='Per-frame hand keypoints, hands tracked across frames, one-euro smoothing; '
                                   'writes an annotated video (and JSON lines with --jsonl).')
    p.add_argument('input', metavar='INPUT|CAMERA_INDEX',
                   help='video file, stream URL, or camera index (0, 1, ...); a number is a camera index unless a '
                        'file of that name exists, which is read instead')
    p.add_argument('--out', required=True, metavar='FILE', help='annotated output video (.mp4, .avi)')
    p.add_argument('--jsonl', default=None, metavar='FILE', help='per-frame results as JSON lines')
    _add_model(p, help_extra=default_model)
    p.add_argument('--no-flip', action='store_true', help='no flip test')
    p.add_argument('--max-frames', type=int, default=None, metavar='N', help='stop after N frames')
    p.add_argument('--detector', choices=DETECTOR_CHOICES, default='auto', help='hand detector (see predict)')
    p.add_argument('--score-thr', type=float, default=None, metavar='F', help='detector score threshold')
    p.add_argument('--no-smoothing', action='store_true', help='no one-euro smoothing of keypoints')
    p.add_argument('--overwrite', action='store_true', help='replace existing output files')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    _add_device(p)
    p.set_defaults(func=cmd_video)

    p = sub.add_parser('train', parents=[common], help="train with build_trainer('easycv', ...)",
                       description="Train a hand keypoint model with ModelScope's build_trainer('easycv', ...). "
                                   'Results: <work-dir>/output (last) and output_best (best PCK) model directories.')
    p.add_argument('--data', required=True, metavar='DIR_OR_MSDATASET',
                   help='training data: dataset folder (annotations/*.json + images/), annotation file, or '
                        'ModelScope dataset id owner/name')
    p.add_argument('--val', default=None, metavar='DIR_OR_MSDATASET',
                   help='validation data (default: the val split of a --data folder; none: no evaluation)')
    p.add_argument('--img-prefix', default=None, metavar='DIR',
                   help='image folder of annotation files given to --data/--val (default: found next to them)')
    p.add_argument('--train-split', default='train', help='split of a hub --data (default: train)')
    p.add_argument('--val-split', default='validation', help='split of a hub --val (default: validation)')
    p.add_argument('--work-dir', required=True, metavar='DIR', help='checkpoints, logs and output model directories')
    _add_model(p, help_extra='; the network and settings to train (its weights are the start)' + default_model)
    p.add_argument('--epochs', type=int, default=None, metavar='N', help='train.max_epochs')
    p.add_argument('--batch-size', type=int, default=None, metavar='N', help='train.dataloader.batch_size_per_gpu')
    p.add_argument('--workers', type=int, default=None, metavar='N', help='data loader worker processes')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                   help='override configuration keys, e.g. train.optimizer.lr=0.001 (values parsed as JSON)')
    p.add_argument('--resume', action='store_true', help='continue the run in --work-dir')
    p.add_argument('--skip-invalid', action='store_true',
                   help='skip (log and count) missing, corrupt or truncated images and malformed annotations '
                        'instead of stopping (every image is checked when the annotations are loaded)')
    p.add_argument('--overwrite', action='store_true', help='replace a previous run in --work-dir')
    _add_device(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('eval', aliases=['evaluate'], parents=[common], help='PCK / AUC / EPE / NME on a dataset with its GT boxes',
                       description='Evaluate a model on COCO-WholeBody hand annotations (GT boxes); prints JSON.')
    _add_model(p, required=True)
    p.add_argument('--data', required=True, metavar='DIR_OR_ANN',
                   help='dataset folder (its val split), annotation file, or ModelScope dataset id owner/name')
    p.add_argument('--img-prefix', default=None, metavar='DIR',
                   help='image folder of an annotation file given to --data (default: found next to it)')
    p.add_argument('--split', default='validation', help='split of a hub --data (default: validation)')
    p.add_argument('--no-flip', action='store_true', help='no flip test')
    p.add_argument('--skip-invalid', action='store_true',
                   help='skip (log and count) missing, corrupt or truncated images and malformed annotations '
                        'instead of stopping (every image is checked when the annotations are loaded)')
    p.add_argument('--batch-size', type=int, default=None, metavar='N')
    p.add_argument('--workers', type=int, default=None, metavar='N')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE')
    _add_device(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser('export', parents=[common], help='ONNX graphs of the keypoint network (and detector)',
                       description='Write the keypoint graph (flip test + DARK decoding inside: crops, centers, '
                                   'scales -> keypoints, scores) and optionally the detector network (SSDLite or '
                                   'palm detector, raw outputs).')
    _add_model(p, help_extra='; default: the bundled starter model, else the hub model ' + hub_model_id())
    p.add_argument('--out', required=True, metavar='FILE.onnx', help='keypoint graph')
    p.add_argument('--detector-out', default=None, metavar='FILE.onnx', help='detector graph (raw outputs): SSDLite or palm detector')
    p.add_argument('--no-flip', action='store_true',
                   help="no flip test inside the graph (default: the model's test_cfg.flip_test)")
    rot = p.add_mutually_exclusive_group()
    rot.add_argument('--rotations', dest='rotations', action='store_true', default=None,
                     help='add a 4th input, crop rotations in degrees (default: on for palm-detector models)')
    rot.add_argument('--no-rotations', dest='rotations', action='store_false', help='no rotations input')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    p.add_argument('--overwrite', action='store_true', help='replace existing files')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('convert', parents=[common], help='published (EasyCV) model directory -> this plugin\'s format',
                       description='Copy a model directory (the published EasyCV one or this plugin\'s) into '
                                   'this plugin\'s format: plain configuration.json, re-saved weights, detector files.')
    p.add_argument('src', metavar='SRC', help='model directory to convert')
    p.add_argument('dst', metavar='DST', help='new model directory')
    p.add_argument('--overwrite', action='store_true', help='replace a non-empty DST')
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser('convert-palm-detector', parents=[common],
                       help="MediaPipe's palm_detection .tflite -> PyTorch weights",
                       description='Convert palm_detection_{full,lite}.tflite (mediapipe==0.10.21) to '
                                   'palm_detection_<variant>.pt (+ .json provenance). Needs the tflite package.')
    p.add_argument('--tflite', default=None, metavar='PATH',
                   help='the .tflite file (default: fetched with pip download mediapipe==0.10.21 --no-deps)')
    p.add_argument('--out-dir', default='.', metavar='DIR', help='output folder (default: .)')
    p.add_argument('--variant', choices=('full', 'lite'), default='full')
    p.add_argument('--overwrite', action='store_true', help='replace existing files')
    p.set_defaults(func=cmd_convert_palm)
    return parser


# ============================================================================== main
def _expected_errors() -> tuple:
    errors = [CLIError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
              PermissionError]
    try:
        from .model_dir import ModelDirError
        errors.append(ModelDirError)
    except ImportError:  # pragma: no cover
        pass
    for mod, name in (('.preprocessor', 'ImageReadError'), ('.pipeline', 'NoDetectorError'),
                      ('.datasets.coco_wholebody_hand', 'DatasetError'), ('.backends', 'BackendError'),
                      ('.detection.mmdet_config', 'UnsafeConfigError'), ('.video', 'VideoError')):
        try:
            import importlib
            errors.append(getattr(importlib.import_module(mod, __package__), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help / --version (0) or bad arguments (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, 'func', None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.debug = bool(getattr(args, 'debug', False))
    args.verbose = bool(getattr(args, 'verbose', False))
    _quiet_modelscope(args.verbose or args.command == 'train')
    previous = None
    global _SIGTERM_SEEN
    _SIGTERM_SEEN = False
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args)
    finally:
        logging.getLogger('modelscope').removeFilter(_QUIET)  # in-process callers get their logging back
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: Path arguments (attribute, option) that must not be empty strings.
_PATH_OPTIONS = (('out', '--out'), ('jsonl', '--jsonl'), ('work_dir', '--work-dir'), ('detector_out', '--detector-out'),
                 ('out_dir', '--out-dir'), ('src', 'SRC'), ('dst', 'DST'), ('data', '--data'), ('model', '--model'),
                 ('tflite', '--tflite'), ('boxes', '--boxes'), ('img_prefix', '--img-prefix'))


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a cancelled job), raised like Ctrl-C so that the same cleanup runs."""


#: set by the SIGTERM handler: code that catches the interrupt itself (process_video keeps the frames done)
#: reports a termination, not a Ctrl-C
_SIGTERM_SEEN = False


def _on_sigterm(signum, frame):  # pragma: no cover - exercised in a subprocess
    global _SIGTERM_SEEN
    _SIGTERM_SEEN = True
    raise _Terminated()


def _run(args) -> int:
    try:
        for attr, option in _PATH_OPTIONS:
            if isinstance(getattr(args, attr, None), str) and not getattr(args, attr).strip():
                raise UsageError(f'{option} is empty; pass a path.')
        for value in (getattr(args, 'inputs', None) or []) + [getattr(args, 'input', None)]:
            if isinstance(value, str) and not value.strip():
                raise UsageError('an INPUT is empty; pass an image, folder, glob or video path.')
        if hasattr(args, 'device'):
            args.device = check_device(args.device)  # before any (slow) model loading
        return int(args.func(args))
    except _Terminated:
        _err('terminated (SIGTERM).')
        return 143
    except KeyboardInterrupt:
        _err('interrupted.')
        return 130
    except CLIError as e:
        if args.debug:
            traceback.print_exc()
        _err(str(e))
        return e.code
    except _expected_errors() as e:
        if args.debug:
            traceback.print_exc()
        _err(_first_line(e))
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - anything else: short message, traceback with --debug
        if args.debug:
            traceback.print_exc()
            _err(f'{type(e).__name__}: {_first_line(e)}')
        else:
            _err(f'{type(e).__name__}: {_first_line(e)} (run with --debug for the traceback)')
        return EXIT_FAILED


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
