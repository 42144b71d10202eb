"""Hand keypoints in videos and camera streams: per-frame results, tracking, smoothing, annotated output.

:func:`process_video` reads frames with ``cv2.VideoCapture`` (a file, a stream URL, or a camera index),
runs ``predict_fn(frame_rgb) -> result`` on each (e.g. the hand pipeline with ``input_color='rgb'``),
gives the hands stable ids and one-euro-smoothed keypoints (:class:`~modelscope_handkp.tracking.HandTracker`),
draws them (:func:`~modelscope_handkp.draw.draw_hands`) into an annotated video (``.mp4``: codec
``mp4v``; ``.avi``: ``MJPG``; the input's frame rate, 30 when unknown) and optionally writes one JSON line
per frame::

    {"frame": 0, "time": 0.0, "hands": [{"track_id": 0, "box": [x1, y1, x2, y2], "score": 0.98,
                                         "rotation": 0.0, "keypoints": [[x, y, score], ... 21 rows]}]}

(``time`` in seconds: frame index / fps for files, wall-clock time since the start for cameras and
streams; ``rotation`` only when the result has ``'rotations'``; pixels rounded to 0.001, scores to 1e-4;
non-finite numbers as ``null``.)  Frames whose size differs from the first frame's are resized to it in the
video (with a warning); their JSON coordinates stay in the pixels of the input frame.

Existing output files are never replaced unless ``overwrite=True`` (checked before anything is read).
Outputs are written to hidden temporary files next to the targets and moved into place when the video
ends, so a failure never leaves half-written files under the requested names (an output that appears
while the video is processed is not replaced: the temporary files are then kept, named in the error).
Ctrl-C (KeyboardInterrupt) stops the reading — the natural way to end a camera recording — and keeps
the frames processed so far.  FFmpeg's own error lines (e.g. "moov atom not found") are silenced, as this
module reports a video it cannot open in its own words: it sets ``OPENCV_FFMPEG_LOGLEVEL=8`` (fatal only)
unless the variable is already set — set it yourself (e.g. to 32) to see FFmpeg's messages.

    from modelscope_handkp.video import process_video
    pipe = pipeline(Tasks.hand_2d_keypoints, model=MODEL_DIR, input_color='rgb')
    summary = process_video('clip.mp4', pipe, 'clip_hands.mp4', jsonl_path='clip_hands.jsonl')
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np

from .draw import draw_hands
from .files import check_writable_folder, partial_path
from .tracking import TRACK_IDS, HandTracker

__all__ = ['process_video', 'check_outputs', 'VideoError', 'FOURCC_BY_EXTENSION', 'DEFAULT_FPS', 'frame_record']

#: Codec (fourcc) of the annotated video by file extension.
FOURCC_BY_EXTENSION = {'.mp4': 'mp4v', '.avi': 'MJPG'}
#: Frame rate written when the input does not report one.
DEFAULT_FPS = 30.0


class VideoError(RuntimeError):
    """A video source that cannot be read or an output that cannot be written (message says what to do)."""


def _is_camera(source) -> bool:
    return isinstance(source, (int, np.integer)) and not isinstance(source, bool)


def _describe(source) -> str:
    return f'camera {int(source)}' if _is_camera(source) else str(source)


def extension_problem(out_path: str) -> str | None:
    """Why ``out_path`` cannot name an annotated video (its extension has no codec here), or None."""
    ext = os.path.splitext(out_path)[1].lower()
    if ext in FOURCC_BY_EXTENSION:
        return None
    return (f'{out_path}: unsupported video extension {ext or "(none)"!r}; name the output '
            f'{" or ".join(FOURCC_BY_EXTENSION)} (codecs: '
            f'{", ".join(f"{k} -> {v}" for k, v in FOURCC_BY_EXTENSION.items())}).')


def check_outputs(source, out_path: str, jsonl_path: str | None, overwrite: bool) -> None:
    """Raise before any work when the outputs cannot or must not be written (see :func:`process_video`)."""
    problem = extension_problem(out_path)
    if problem is not None:
        raise VideoError(problem)
    targets = [out_path] + ([jsonl_path] if jsonl_path is not None else [])
    if jsonl_path is not None and os.path.realpath(jsonl_path) == os.path.realpath(out_path):
        raise VideoError(f'the video output and the JSON lines output are the same file ({out_path}); '
                         'pass two paths.')
    for p in targets:
        if os.path.isdir(p):
            raise IsADirectoryError(f'{p} is a folder; give the path of the file to write.')
        if isinstance(source, (str, os.PathLike)) and os.path.exists(source) and \
                os.path.realpath(p) == os.path.realpath(source):
            raise VideoError(f'{p} is the input video; pass another output path.')
        if os.path.exists(p) and not overwrite:
            raise FileExistsError(f'{p} already exists; pass overwrite=True (--overwrite) to replace it, '
                                  'or another path.')
        parent = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f'{p}: the folder {parent} does not exist; create it first.')
        check_writable_folder(parent, p)


def _open_capture(source):
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str) and '://' not in source and not os.path.exists(source):
        raise FileNotFoundError(f'{source}: no such video file; pass a video file, a stream URL or a camera '
                                'index (0, 1, ...).')
    if isinstance(source, str) and os.path.isdir(source):
        raise IsADirectoryError(f'{source} is a folder, not a video; pass a video file (use `predict` for a '
                                'folder of images).')
    os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '8')  # AV_LOG_FATAL; read when FFmpeg is first used
    cap = cv2.VideoCapture(int(source) if _is_camera(source) else source)
    if not cap.isOpened():
        cap.release()
        if _is_camera(source):
            hint = ('no camera with this index can be opened: check that a camera is connected and not used by '
                    'another program, try another index, or pass a video file')
        elif '://' in str(source):
            hint = 'the stream cannot be opened: check the URL and that the stream is reachable from this machine'
        else:
            hint = ('OpenCV cannot decode this file: check that it is a video (e.g. .mp4, .avi, .mkv) and not '
                    'damaged, or convert it, e.g. ffmpeg -i INPUT -c:v libx264 OUTPUT.mp4')
        raise VideoError(f'cannot open video source {_describe(source)}: {hint}.')
    return cap


def _input_fps(cap) -> float | None:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps is not None and math.isfinite(fps) and 0 < fps <= 1000 else None


def json_list(values: np.ndarray) -> list:
    """``values.tolist()`` with non-finite numbers as None (JSON null: NaN/Infinity are not JSON)."""
    finite = np.isfinite(values)
    if finite.all():
        return values.tolist()
    out = values.astype(object)
    out[~finite] = None
    return out.tolist()


def _r(values, digits):
    return json_list(np.round(np.asarray(values, np.float64), digits))


def frame_record(frame: int, t: float, result: Mapping[str, Any]) -> dict:
    """The JSON-ready record of one frame's (tracked) result."""
    kps = np.asarray(result['keypoints'], np.float64)
    n = len(kps)
    if kps.size == 0:
        kps = kps.reshape(0, 21, 3)
    if kps.shape[-1] == 2:
        kps_out = _r(kps, 3)
    else:
        kps_out = json_list(np.concatenate([np.round(kps[..., :2], 3), np.round(kps[..., 2:], 4)], -1))
    boxes = result.get('boxes')
    boxes = [None] * n if boxes is None else _r(np.asarray(boxes, np.float64).reshape(-1, 4), 3)
    scores = _r(np.asarray(result.get('scores', np.ones(n)), np.float64).reshape(-1), 4)
    ids = np.asarray(result.get(TRACK_IDS, np.arange(n)), np.int64).reshape(-1).tolist()
    rots = result.get('rotations')
    rots = None if rots is None else _r(np.asarray(rots).reshape(-1), 3)
    hands = []
    for i in range(n):
        hand = {'track_id': ids[i], 'box': boxes[i], 'score': scores[i]}
        if rots is not None:
            hand['rotation'] = rots[i]
        hand['keypoints'] = kps_out[i]
        hands.append(hand)
    return {'frame': int(frame), 'time': round(float(t), 4), 'hands': hands}


def _progress_bar(cap, enabled: bool, camera: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    total = None if camera else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    return tqdm(total=total, desc='frames', unit='frame', file=sys.stderr, leave=False, dynamic_ncols=True)


def _rgb_predict_fn(predict_fn):
    """``predict_fn``, or -- for a hand pipeline that reads numpy arrays as BGR (its default) -- a function
    that calls it with ``input_color='rgb'``: the frames given to ``predict_fn`` are RGB, and read as BGR
    they give other (worse) hands."""
    mod = sys.modules.get(__package__ + '.pipeline')  # not imported: predict_fn cannot be one of its pipelines
    if mod is not None and isinstance(predict_fn, mod.HandKeypointsPipeline) and \
            getattr(predict_fn, 'input_color', 'rgb') != 'rgb':
        pipe = predict_fn

        def predict_rgb(frame_rgb):
            return pipe(frame_rgb, input_color='rgb')
        return predict_rgb
    return predict_fn


def process_video(source, predict_fn: Callable[[np.ndarray], Mapping[str, Any]], out_path,
                  jsonl_path=None, overwrite: bool = False, smoothing: bool = True, max_frames: int | None = None,
                  progress: bool = True, tracker: HandTracker | None = None, draw_kwargs: dict | None = None
                  ) -> dict:
    """Run ``predict_fn`` on every frame of ``source``; write the annotated video and JSON lines.

    Args:
        source: a video file path, a stream URL (``scheme://...``) or a camera index (int).
        predict_fn: ``frame_rgb (uint8 [H, W, 3]) -> result`` with ``'keypoints'`` [N, 21, 3], ``'boxes'``
            [N, 4], ``'scores'`` [N].  A hand pipeline (``pipeline(Tasks.hand_2d_keypoints, ...)``) may be
            passed as it is: it is called with ``input_color='rgb'`` whatever its own setting.
        out_path: annotated video, ``.mp4`` (mp4v) or ``.avi`` (MJPG).
        jsonl_path: one JSON line per frame (None: not written).
        overwrite: replace existing output files (otherwise FileExistsError before any work).
        smoothing: one-euro smoothing of keypoints (tracking and ids happen either way).
        max_frames: stop after this many frames (None: until the end of the video / Ctrl-C).
        progress: a progress bar on stderr when it is a terminal.
        tracker: a configured :class:`HandTracker` (default: ``HandTracker(smoothing=smoothing, fps=...)``).
        draw_kwargs: extra keyword arguments of :func:`draw_hands`.

    Returns:
        a summary dict: ``frames``, ``frames_declared`` (the file's own frame count; None when it has none, or
        for a live source -- fewer frames read than declared gives a warning), ``width``, ``height``, ``input_fps`` (None when unknown),
        ``output_fps``, ``output_frames`` (``frames`` for a file; for a live source -- camera or
        stream URL -- each drawn frame is repeated until the next one is ready, so the output plays in
        real time and its frame ``i`` is at ``i / output_fps`` seconds of the JSON ``time``), ``hands`` (``total``, ``min``/``max``/``mean`` per frame, ``frames_with_hands``),
        ``tracks`` (number of distinct track ids), ``processing_fps`` (frames per second of wall time,
        reading + prediction + drawing + writing), ``seconds``, ``interrupted``, ``source``, ``out_path``,
        ``jsonl_path``.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False.
        FileNotFoundError: no such video file / output folder.
        VideoError: the source cannot be opened or has no frames, the output extension is not
            supported, or the video writer cannot be opened.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f'max_frames must be >= 1 (or None), got {max_frames}.')
    predict_fn = _rgb_predict_fn(predict_fn)
    out_path = os.fspath(out_path)
    jsonl_path = None if jsonl_path is None else os.fspath(jsonl_path)
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    check_outputs(source, out_path, jsonl_path, overwrite)
    camera = _is_camera(source)
    live = camera or '://' in str(source)
    cap = _open_capture(source)
    tmp_video = tmp_jsonl = None
    writer = jsonl = bar = None
    finished = keep_partial = False
    try:
        in_fps = _input_fps(cap)
        fps = in_fps or DEFAULT_FPS
        declared = 0 if live else max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))  # the container's count
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f'no frame could be read from {_describe(source)}: the video is empty or its codec is '
                             'not supported by OpenCV here; convert it, e.g. ffmpeg -i INPUT -c:v libx264 OUTPUT.mp4.')
        height, width = frame.shape[:2]
        ext = os.path.splitext(out_path)[1].lower()
        tmp_video = partial_path(out_path)
        writer = cv2.VideoWriter(tmp_video, cv2.VideoWriter_fourcc(*FOURCC_BY_EXTENSION[ext]), fps, (width, height))
        if not writer.isOpened():
            raise VideoError(f'cannot write {out_path}: OpenCV has no {FOURCC_BY_EXTENSION[ext]} encoder for {ext} '
                             f'here (or the folder is not writable); try the other format '
                             f'({" or ".join(e for e in FOURCC_BY_EXTENSION if e != ext)}).')
        if jsonl_path is not None:
            tmp_jsonl = partial_path(jsonl_path)
            jsonl = open(tmp_jsonl, 'w', encoding='utf-8')
        if tracker is None:
            tracker = HandTracker(smoothing=smoothing, fps=fps)
        draw_kwargs = dict(draw_kwargs or {})
        bar = _progress_bar(cap, progress, live)

        counts: list[int] = []
        ids_seen: set[int] = set()
        interrupted = False
        t_start = time.perf_counter()
        index = 0
        written, last_bgr = 0, None  # output frames so far; the last one (live sources repeat it)
        resized = False  # a frame of another size than the first was resized (warned once)

        def hold_last_frame_until(t):
            # a live source runs on while a frame is processed: the last drawn frame stays on screen until
            # the next, so the output plays at the speed of the world (frame n / fps is at the JSON 'time')
            nonlocal written
            if live and last_bgr is not None:
                while written < int(t * fps):
                    writer.write(last_bgr)
                    written += 1

        try:
            while ok:
                t = (time.perf_counter() - t_start) if live else index / fps
                hold_last_frame_until(t)
                if frame.ndim == 2:
                    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                result = tracker.update(predict_fn(rgb), t)
                drawn = draw_hands(rgb, result, **draw_kwargs)
                last_bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
                if last_bgr.shape[:2] != (height, width):  # VideoWriter silently drops frames of another size
                    if not resized:
                        warnings.warn(f'{_describe(source)}: frame {index} is {last_bgr.shape[1]}x{last_bgr.shape[0]} '
                                      f'pixels, the first one {width}x{height}; frames of another size are resized '
                                      f'to {width}x{height} in {out_path} (the JSON coordinates stay in the pixels '
                                      'of each input frame).', stacklevel=2)
                        resized = True
                    last_bgr = cv2.resize(last_bgr, (width, height), interpolation=cv2.INTER_AREA)
                writer.write(last_bgr)
                written += 1
                if jsonl is not None:
                    jsonl.write(json.dumps(frame_record(index, t, result)) + '\n')
                counts.append(len(result[TRACK_IDS]))
                ids_seen.update(int(i) for i in result[TRACK_IDS])
                index += 1
                if bar is not None:
                    bar.update(1)
                if max_frames is not None and index >= max_frames:
                    break
                ok, frame = cap.read()
        except KeyboardInterrupt:
            interrupted = True
        stopped_early = interrupted or (max_frames is not None and index >= max_frames)
        if not stopped_early and declared - index > max(2, declared // 100):  # counts of some codecs are estimates
            warnings.warn(f'{_describe(source)}: {index} of the {declared} frames the file declares could be read; '
                          'the rest could not be decoded (a truncated or damaged file?). The outputs hold those '
                          f'{index} frames; re-encode the video (e.g. ffmpeg -i INPUT -c:v libx264 OUTPUT.mp4) '
                          'to find out.', stacklevel=2)
        seconds = time.perf_counter() - t_start
        hold_last_frame_until(seconds)  # ... and the last one until the end of the run
        writer.release()
        writer = None
        if jsonl is not None:
            jsonl.close()
            jsonl = None
        if index == 0:
            raise VideoError(f'no frame of {_describe(source)} was processed (interrupted); nothing written.')
        for tmp, final in ((tmp_video, out_path), (tmp_jsonl, jsonl_path)):
            if tmp is None:
                continue
            if os.path.exists(final) and not overwrite:  # appeared while we worked: keep it, and our results
                keep_partial = True
                kept = ' and '.join(p for p in (tmp_video, tmp_jsonl) if p is not None)
                raise FileExistsError(f'{final} was created by someone else while the video was processed; '
                                      f'not replaced. The results are kept in {kept}: rename them, or run again '
                                      'with overwrite=True (--overwrite) or another output path.')
        for tmp, final in ((tmp_video, out_path), (tmp_jsonl, jsonl_path)):
            if tmp is not None:
                os.replace(tmp, final)
        finished = True
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.release()
        if jsonl is not None:
            jsonl.close()
        cap.release()
        if not finished and not keep_partial:
            for tmp in (tmp_video, tmp_jsonl):
                if tmp is not None and os.path.exists(tmp):
                    os.remove(tmp)

    counts_arr = np.asarray(counts, np.int64)
    return {
        'source': _describe(source) if camera else str(source),
        'out_path': str(Path(out_path)),
        'jsonl_path': None if jsonl_path is None else str(Path(jsonl_path)),
        'frames': int(index),
        'frames_declared': int(declared) or None,
        'width': int(width),
        'height': int(height),
        'input_fps': in_fps,
        'output_fps': float(fps),
        'output_frames': int(written),
        'hands': {'total': int(counts_arr.sum()), 'min': int(counts_arr.min()), 'max': int(counts_arr.max()),
                  'mean': round(float(counts_arr.mean()), 4),
                  'frames_with_hands': int((counts_arr > 0).sum())},
        'tracks': len(ids_seen),
        'processing_fps': round(index / seconds, 3) if seconds > 0 else None,
        'seconds': round(seconds, 3),
        'interrupted': interrupted,
    }
