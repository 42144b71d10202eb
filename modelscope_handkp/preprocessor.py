"""Image loading for the hand keypoint pipeline: any supported input -> one RGB uint8 array.

Accepted inputs and colour order
--------------------------------
* ``str`` / ``os.PathLike``: an image file (JPEG, PNG, BMP, TIFF, WebP, ... as OpenCV reads them), or an
  ``http(s)://`` URL (read through ModelScope's file layer — the only case that touches the network).
  Decoded with OpenCV (EXIF orientation applied; grayscale -> 3 channels; alpha dropped; 16-bit scaled
  to 8-bit).  Truncated JPEGs, empty files and non-image files raise :class:`ImageReadError`.
  A JPEG with data after its end (a "motion photo") or an EXIF thumbnail reads normally.
* ``bytes``: the encoded image file itself (not a path).
* ``PIL.Image.Image``: converted to RGB (``L``, ``RGBA``, ``P``, ``I;16``, ``I``, ``F`` handled) and used
  as it is: its EXIF orientation is *not* applied, so keypoints are in the PIL image's own pixel grid
  (call ``PIL.ImageOps.exif_transpose`` first to get what a file path gives).
* ``numpy.ndarray`` (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); uint8, uint16 (scaled >> 8; a uint16
  array whose values are all <= 255 is read as 8-bit, with a warning) or float (values in [0, 1] are
  scaled by 255).  **Colour order: BGR by default**, ModelScope's convention for
  numpy images (what ``cv2.imread`` returns; ModelScope's own ``LoadImage.convert_to_ndarray`` flips
  numpy input from BGR to RGB).  Pass ``input_color='rgb'`` (to the pipeline constructor or call) for
  RGB arrays, e.g. from PIL/imageio/matplotlib.  4-channel arrays are BGRA (or RGBA with
  ``input_color='rgb'``); the alpha channel is dropped.
* ``dict`` (e.g. a row of an ``MsDataset``, which the pipeline iterates): its image under one of
  :data:`IMAGE_KEYS` (``'img'``, ``'image'``, ...), any of the above.

Images above :data:`MAX_PIXELS` are refused with a clear message (memory); a 12000 x 9000 photo
(108 MP) is fine: it is decoded once and converted to RGB in place.
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from modelscope.preprocessors.base import Preprocessor

MAX_PIXELS = 1 << 28  # 268 MP: ~0.8 GB as RGB uint8
MAX_SIDE = 32766  # OpenCV's warps (the crops) take images below SHRT_MAX = 32767 pixels a side
COLOR_ORDERS = ('bgr', 'rgb')


class ImageReadError(ValueError):
    """An input image cannot be used; the message says why and what to do."""


def _check_color(input_color: str) -> str:
    c = str(input_color).lower()
    if c not in COLOR_ORDERS:
        raise ValueError(f"input_color must be 'bgr' (ModelScope's numpy convention, what cv2.imread returns) "
                         f"or 'rgb', got {input_color!r}.")
    return c


def _check_size(h: int, w: int, what: str) -> None:
    if h < 1 or w < 1:
        raise ImageReadError(f'{what} has no pixels (size {w}x{h}); pass a non-empty image.')
    if h * w > MAX_PIXELS:
        raise ImageReadError(f'{what} is {w}x{h} = {h * w / 1e6:.0f} megapixels, more than the '
                             f'{MAX_PIXELS / 1e6:.0f} MP this pipeline accepts (memory); downscale it first.')
    if max(h, w) > MAX_SIDE:
        raise ImageReadError(f'{what} is {w}x{h}: a side longer than {MAX_SIDE} pixels, which OpenCV\'s image '
                             'warps (the hand crops) cannot read; downscale it, or cut it into tiles first.')


def _jpeg_markers(data: bytes):
    """(marker, offset) of a JPEG's marker segments up to and including the first start-of-scan (``DA``)
    or end-of-image (``D9``), walked by their lengths (so an EXIF thumbnail, itself a complete JPEG
    inside APP1, is skipped); ``(None, offset)`` where a marker must be and none is. Ends silently where
    the data end. ``data`` must start with the start-of-image marker."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            yield None, i
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        yield marker, i
        if marker in (0xDA, 0xD9):
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], 'big')


def _jpeg_truncated(data: bytes) -> bool:
    """A JPEG with no end-of-image marker after its first scan.

    After the first start-of-scan, entropy-coded data cannot contain ``FF D9`` (byte stuffing), so the
    first one is the image's end. Bytes after the end (the video of a "motion photo") do not matter.
    """
    if not data.startswith(b'\xff\xd8'):
        return False
    for marker, i in _jpeg_markers(data):
        if marker is None or marker == 0xD9:
            return False  # no marker where one must be: leave the verdict to the decoder
        if marker == 0xDA:
            return data.find(b'\xff\xd9', i) < 0
    return True  # the headers end before any scan


_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def _header_size(data: bytes):
    """(w, h) from a PNG/JPEG header without decoding, or None (the size limits are then checked after
    decoding; this check spares decoding a huge image only to refuse it)."""
    if data.startswith(b'\x89PNG\r\n\x1a\n') and len(data) >= 24:
        return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
    if data.startswith(b'\xff\xd8'):
        for marker, i in _jpeg_markers(data):
            if marker in _JPEG_SOF and i + 9 <= len(data):  # FF Cx, length, precision, height, width
                w, h = int.from_bytes(data[i + 7:i + 9], 'big'), int.from_bytes(data[i + 5:i + 7], 'big')
                return (w, h) if w and h else None  # height 0: given later by a DNL marker
    return None


_VIDEO_HINT = ('for a video use `modelscope-handkp video FILE --out OUT.mp4`, or '
               'modelscope_handkp.video.process_video in Python (tracked, smoothed hands per frame).')
_HEIF_BRANDS = (b'heic', b'heix', b'heim', b'heis', b'hevc', b'hevx', b'mif1', b'msf1', b'avif', b'avis')


def _container_kind(data: bytes):
    """A short description of a video (or HEIC/AVIF) file that OpenCV did not decode as an image, or None."""
    if data[4:8] == b'ftyp':
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return f'a HEIF/AVIF file (brand {brand.decode("latin-1").strip()!r})'
        return 'a video (MP4/QuickTime)'
    if data[:4] == b'RIFF' and data[8:12] == b'AVI ':
        return 'a video (AVI)'
    if data[:4] == b'\x1aE\xdf\xa3':
        return 'a video (Matroska/WebM)'
    if data[:6] in (b'GIF87a', b'GIF89a'):
        return 'a GIF (animated images are videos)'
    return None


def decode_image_bytes(data: bytes, what: str, given_as_bytes: bool = False) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3).  ``given_as_bytes``: the caller passed the bytes
    themselves (a text error then suggests that a path was meant)."""
    if len(data) == 0:
        raise ImageReadError(f'{what} is empty (0 bytes); pass a complete image file.')
    size = _header_size(data)
    if size is not None:
        _check_size(size[1], size[0], what)
    if _jpeg_truncated(data):
        raise ImageReadError(f'{what} is a truncated JPEG (its end-of-image marker is missing); the file was not '
                             'written or downloaded completely — get the complete file.')
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # EXIF orientation, gray -> BGR, alpha dropped, 16 -> 8 bit
    except cv2.error as e:
        if 'CV_IO_MAX_IMAGE_PIXELS' in str(e):
            raise ImageReadError(f'{what} is larger than OpenCV decodes (CV_IO_MAX_IMAGE_PIXELS, about 1 gigapixel) '
                                 f'and than the {MAX_PIXELS / 1e6:.0f} MP this pipeline accepts (memory); downscale '
                                 'it first.') from e
        raise ImageReadError(f'{what} cannot be decoded by OpenCV ({str(e).strip().splitlines()[-1]}); '
                             'pass a JPEG/PNG/BMP/TIFF/WebP image.') from e
    if img is None:
        head = data[:16]
        text = all(32 <= b < 127 or b in (9, 10, 13) for b in head)
        kind = 'text' if text else 'not an image OpenCV can read'
        if head[:4] in (b'II*\x00', b'MM\x00*'):  # a TIFF OpenCV cannot decode (e.g. 32-bit float samples)
            raise ImageReadError(f'{what} is a TIFF of a kind OpenCV cannot decode (e.g. 32-bit float or 1-bit '
                                 'samples, or an unusual compression); convert it to an 8- or 16-bit TIFF, PNG or '
                                 'JPEG.')
        container = _container_kind(data)
        if container is not None:
            raise ImageReadError(f'{what} is {container}, not an image: '
                                 + (_VIDEO_HINT if 'video' in container else
                                    'convert it to JPEG or PNG (OpenCV cannot decode it).'))
        hint = ' (bytes are read as the encoded image itself; pass a file path as str)' if text and given_as_bytes \
            else ''
        raise ImageReadError(f'{what} is not a readable image ({kind}; first bytes {head[:8]!r}){hint}; pass a '
                             'JPEG/PNG/BMP/TIFF/WebP image file.')
    _check_size(img.shape[0], img.shape[1], what)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)


def read_image_file(path) -> np.ndarray:
    """An image file (or http(s) URL) -> RGB uint8 (H, W, 3)."""
    spath = os.fspath(path)
    if isinstance(spath, bytes):
        spath = spath.decode()
    if spath.startswith(('http://', 'https://', 'oss://')):
        from modelscope.fileio import File
        try:
            data = File.read(spath)
        except Exception as e:  # network errors of all kinds
            raise ImageReadError(f'cannot download image {spath}: {e}; check the URL or pass a local file.') from e
        return decode_image_bytes(data, f'image {spath}')
    if not os.path.exists(spath):
        if os.path.islink(spath):
            raise FileNotFoundError(f'image file {spath!r} is a broken symbolic link (to {os.readlink(spath)!r}, '
                                    'which does not exist); fix or remove the link.')
        raise FileNotFoundError(f'image file {spath!r} does not exist; pass the path of an existing image file, a '
                                'PIL.Image or a numpy array.')
    if os.path.isdir(spath):
        raise ImageReadError(f'{spath!r} is a directory, not an image; pass image files (for folders use a list '
                             'of paths, or the modelscope-handkp CLI).')
    with open(spath, 'rb') as f:
        data = f.read()
    return decode_image_bytes(data, f'image file {spath!r}')


def _to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        if arr.size and int(arr.max()) <= 255:
            # 8-bit pixels in a 16-bit array (a 16-bit picture this dark would be black after >> 8 anyway)
            warnings.warn(f'{what} is uint16 but all its values are <= 255; it is read as 8-bit pixels. Pass '
                          'uint8 to silence this, or full-range 16-bit values (0..65535).', stacklevel=4)
            return arr.astype(np.uint8)
        return (arr >> 8).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageReadError(f'{what} contains NaN or infinite values; pass finite pixel values.')
        negative = float(np.count_nonzero(arr < 0)) / max(1, arr.size)
        if negative > 0.01:  # not the few overshoots of an interpolation: a mean-subtracted / normalised image
            raise ImageReadError(f'{what} has negative values ({100 * negative:.0f} % of them, down to '
                                 f'{float(arr.min()):.3g}): it looks normalised (mean-subtracted); pass pixel values '
                                 'in [0, 255] or [0, 1] -- the pipeline normalises itself.')
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        hi = int(arr.max()) if arr.size else 0
        if int(arr.min(initial=0)) < 0 or hi > 65535:
            raise ImageReadError(f'{what} has integer values outside [0, 65535]; pass uint8 pixel values.')
        return (arr >> 8).astype(np.uint8) if hi > 255 else arr.astype(np.uint8)
    raise ImageReadError(f'{what} has dtype {arr.dtype}; pass uint8 (or uint16 / float in [0, 1]) pixels.')


def array_to_rgb(arr: np.ndarray, input_color: str = 'bgr', what: str = 'the numpy image') -> np.ndarray:
    """A numpy image in ``input_color`` order -> RGB uint8 (H, W, 3) (a new array)."""
    color = _check_color(input_color)
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageReadError(f'{what} has shape {a.shape}; pass (H, W), (H, W, 3) or (H, W, 4) pixels '
                             '(for a batch, pass a list of images).')
    _check_size(a.shape[0], a.shape[1], what)
    a = _to_uint8(a, what)
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if color == 'bgr':
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_BGR2RGB)
    return np.array(a, dtype=np.uint8, order='C', copy=True)


def pil_to_rgb(img) -> np.ndarray:
    """A PIL image of any mode -> RGB uint8 (H, W, 3)."""
    w, h = img.size
    _check_size(h, w, 'the PIL image')
    if img.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
        return array_to_rgb(np.asarray(img), 'rgb', 'the PIL image')
    if img.mode != 'RGB':
        img = img.convert('RGB')
    return np.array(img, dtype=np.uint8)


def load_rgb(data, input_color: str = 'bgr') -> np.ndarray:
    """Any supported input (see module doc) -> RGB uint8 (H, W, 3)."""
    if isinstance(data, (str, os.PathLike)):
        return read_image_file(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(data), 'the image bytes', given_as_bytes=True)
    if isinstance(data, np.ndarray):
        return array_to_rgb(data, input_color)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(data, Image.Image):
        return pil_to_rgb(data)
    if isinstance(data, io.IOBase):
        return decode_image_bytes(data.read(), 'the image stream')
    if hasattr(data, 'detach') and hasattr(data, 'cpu'):
        raise TypeError('torch tensors are not accepted as images; pass a numpy array (H, W, 3) BGR uint8 (or '
                        "input_color='rgb'), a PIL.Image or a file path.")
    raise TypeError(f'unsupported image input of type {type(data).__name__}; pass a file path, a PIL.Image, a numpy '
                    'array (H, W, 3) in BGR order (or RGB with input_color=\'rgb\'), or a list of these.')


#: Keys under which a dict input (e.g. a row of an MsDataset) holds its image, in the order looked up.
IMAGE_KEYS = ('img', 'image', 'image:FILE', 'filename', 'file', 'path')


def image_of(data):
    """The image of a dict input (an MsDataset / datasets row: ``{'image': PIL or path, ...}``), else ``data``."""
    if isinstance(data, Mapping):
        for key in IMAGE_KEYS:
            if key in data:
                return data[key]
        raise TypeError(f'a dict input needs its image under one of the keys {list(IMAGE_KEYS)}; got the keys '
                        f'{sorted(map(str, data))[:10]}.')
    return data


class HandImagePreprocessor(Preprocessor):
    """ModelScope preprocessor: image input -> ``{'img': RGB uint8 (H, W, 3), 'ori_shape': (H, W),
    'filename': path or None}``.  Registered as ``handkp-hand-image`` (group ``cv``)."""

    def __init__(self, model_dir: str | None = None, input_color: str = 'bgr', mode: str = 'inference', **kwargs):
        super().__init__(mode=mode)
        self.model_dir = model_dir
        self.input_color = _check_color(input_color)

    def __call__(self, data, input_color: str | None = None) -> dict[str, Any]:
        data = image_of(data)
        img = load_rgb(data, input_color or self.input_color)
        return {'img': img, 'ori_shape': img.shape[:2],
                'filename': os.fspath(data) if isinstance(data, (str, os.PathLike)) else None}
