"""Bad input never crashes or hangs: each case gives a correct result or an exception whose message says
what is wrong and what to do.  The corpus is generated here (tmp_path)."""
from __future__ import annotations

import json
import shutil
import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from modelscope.outputs import OutputKeys
from modelscope.pipelines import pipeline
from modelscope.utils.constant import Tasks
from PIL import Image

from modelscope_handkp import model_dir as md
from modelscope_handkp.preprocessor import ImageReadError

from test_model_dir import official_dir, tiny_dir  # noqa: F401  (session fixtures)

TASK = Tasks.hand_2d_keypoints


@pytest.fixture(scope='module')
def tiny(tiny_dir):
    """Tiny HRNet, whole-image detector: every readable image gives exactly one hand."""
    return pipeline(TASK, model=str(tiny_dir))


@pytest.fixture(scope='module')
def photo():
    """A real photo-like BGR image (a gradient with structure) for the conversions."""
    y, x = np.mgrid[0:120, 0:160]
    img = np.stack([(x * 1.5) % 256, (y * 2) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    cv2.circle(img, (80, 60), 30, (255, 255, 255), -1)
    return img


def one_hand(out, w, h):
    kp = out[OutputKeys.KEYPOINTS]
    assert kp.shape == (1, 21, 3) and kp.dtype == np.float32 and np.isfinite(kp).all()
    np.testing.assert_array_equal(out[OutputKeys.BOXES], [[0, 0, w, h]])
    return kp


# ----------------------------------------------------------------------------- image files
def test_missing_file(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist; pass the path of an existing image'):
        tiny(str(tmp_path / 'nope.jpg'))


def test_empty_file(tiny, tmp_path):
    (tmp_path / 'empty.jpg').write_bytes(b'')
    with pytest.raises(ImageReadError, match=r'is empty \(0 bytes\); pass a complete image file'):
        tiny(str(tmp_path / 'empty.jpg'))


def test_truncated_jpeg(tiny, tmp_path, photo):
    data = cv2.imencode('.jpg', photo)[1].tobytes()
    (tmp_path / 'cut.jpg').write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageReadError, match='truncated JPEG .* get the complete file'):
        tiny(str(tmp_path / 'cut.jpg'))
    (tmp_path / 'header_only.jpg').write_bytes(data[:20])
    with pytest.raises(ImageReadError, match='truncated JPEG|not a readable image'):
        tiny(str(tmp_path / 'header_only.jpg'))


def _with_exif_thumbnail(jpeg: bytes, thumb: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding a complete JPEG (an EXIF thumbnail has its own SOS and EOI)."""
    payload = b'Exif\x00\x00' + thumb
    return jpeg[:2] + b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') + payload + jpeg[2:]


def test_jpeg_with_trailing_data_or_thumbnail(tiny, tmp_path, photo):
    data = cv2.imencode('.jpg', photo)[1].tobytes()
    expect = tiny(str(_write(tmp_path / 'plain.jpg', data)))[OutputKeys.KEYPOINTS]
    rng = np.random.default_rng(0)
    # a "motion photo": the video after the image's end, with scan markers and no end-of-image marker in it
    trailer = (b'\x00\x00\x00\x18ftypmp42' + b'\xff\xda' + rng.integers(0, 255, 4096, dtype=np.uint8).tobytes())
    trailer = trailer.replace(b'\xff\xd9', b'\xff\x00')
    np.testing.assert_array_equal(tiny(str(_write(tmp_path / 'motion.jpg', data + trailer)))[OutputKeys.KEYPOINTS],
                                  expect)
    thumb = cv2.imencode('.jpg', cv2.resize(photo, (40, 30)))[1].tobytes()
    with_thumb = _with_exif_thumbnail(data, thumb)
    np.testing.assert_array_equal(tiny(str(_write(tmp_path / 'thumb.jpg', with_thumb)))[OutputKeys.KEYPOINTS],
                                  expect)
    # cut inside the main image: the thumbnail's end-of-image marker does not hide the truncation
    cut = with_thumb[:len(with_thumb) - len(data) // 2]
    with pytest.raises(ImageReadError, match='truncated JPEG'):
        tiny(str(_write(tmp_path / 'thumb_cut.jpg', cut)))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_bytes_path_hint(tiny):
    with pytest.raises(ImageReadError, match='encoded image itself; pass a file path as str'):
        tiny(b'/photos/hand.jpg')


def test_uint16_holding_8bit_values(tiny, photo):
    with pytest.warns(UserWarning, match='uint16 but all its values are <= 255'):
        out = tiny(photo.astype(np.uint16))
    np.testing.assert_array_equal(out[OutputKeys.KEYPOINTS], tiny(photo)[OutputKeys.KEYPOINTS])


def test_batch_size_must_be_positive(tiny, photo):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match='batch_size must be a positive integer'):
            tiny([photo, photo], batch_size=bad)
    assert len(tiny([photo, photo, photo], batch_size=2)) == 3


def test_box_that_is_empty_in_float32(tiny, photo):
    with pytest.raises(ValueError, match='zero or negative size'):
        tiny(photo, boxes=[[100.0, 10.0, 100.000001, 50.0]])


def test_ragged_boxes_say_what_is_wrong(tiny, photo):
    """Per-image box lists of different lengths (or text) are not one [M, 4] list: the error says so
    instead of numpy's 'inhomogeneous shape'."""
    with pytest.raises(ValueError, match=r'one list of \[x1, y1, x2, y2\].*call the pipeline once per image'):
        tiny(photo, boxes=[[[10, 10, 60, 60]], [[5, 5, 30, 30], [40, 40, 80, 80]]])
    with pytest.raises(ValueError, match='could not read them as numbers'):
        tiny(photo, boxes=[['10', 'a', 60, 60]])
    assert tiny(photo, boxes=[[10, 10, 60, 60]])[OutputKeys.KEYPOINTS].shape == (1, 21, 3)


def test_text_named_jpg(tiny, tmp_path):
    (tmp_path / 'notes.jpg').write_text('this is not an image\n')
    with pytest.raises(ImageReadError, match=r'not a readable image \(text.*pass a JPEG/PNG') as err:
        tiny(str(tmp_path / 'notes.jpg'))
    assert 'pass a file path as str' not in str(err.value)  # it was a path: that hint is for bytes input


def test_directory_instead_of_image(tiny, tmp_path):
    with pytest.raises(ImageReadError, match='is a directory, not an image'):
        tiny(str(tmp_path))


def test_grayscale_png(tiny, tmp_path, photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / 'gray.png'), gray)
    kp = one_hand(tiny(str(tmp_path / 'gray.png')), 160, 120)
    expect = tiny(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))[OutputKeys.KEYPOINTS]
    np.testing.assert_array_equal(kp, expect)
    np.testing.assert_array_equal(tiny(gray)[OutputKeys.KEYPOINTS], expect)  # a 2-D numpy array too
    np.testing.assert_array_equal(tiny(Image.fromarray(gray))[OutputKeys.KEYPOINTS], expect)  # PIL mode L


def test_rgba_png(tiny, tmp_path, photo):
    bgra = np.concatenate([photo, np.full(photo.shape[:2] + (1, ), 77, np.uint8)], axis=2)
    cv2.imwrite(str(tmp_path / 'rgba.png'), bgra)
    expect = tiny(photo)[OutputKeys.KEYPOINTS]
    np.testing.assert_array_equal(one_hand(tiny(str(tmp_path / 'rgba.png')), 160, 120), expect)  # alpha dropped
    np.testing.assert_array_equal(tiny(bgra)[OutputKeys.KEYPOINTS], expect)
    rgba = Image.fromarray(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA), 'RGBA')
    np.testing.assert_array_equal(tiny(rgba)[OutputKeys.KEYPOINTS], expect)


def test_16bit_png(tiny, tmp_path, photo):
    deep = photo.astype(np.uint16) * np.uint16(257)  # 0..65535, the same picture
    cv2.imwrite(str(tmp_path / 'deep.png'), deep)
    assert cv2.imread(str(tmp_path / 'deep.png'), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    expect = tiny(photo)[OutputKeys.KEYPOINTS]
    np.testing.assert_array_equal(one_hand(tiny(str(tmp_path / 'deep.png')), 160, 120), expect)
    np.testing.assert_array_equal(tiny(deep)[OutputKeys.KEYPOINTS], expect)
    gray16 = Image.fromarray(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    assert gray16.mode.startswith('I;16') or gray16.mode == 'I'
    np.testing.assert_array_equal(tiny(gray16)[OutputKeys.KEYPOINTS],
                                  tiny(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))[OutputKeys.KEYPOINTS])


def test_one_pixel_image(tiny, tmp_path):
    cv2.imwrite(str(tmp_path / 'dot.png'), np.full((1, 1, 3), 200, np.uint8))
    one_hand(tiny(str(tmp_path / 'dot.png')), 1, 1)


def test_all_black_image(tiny, tmp_path):
    cv2.imwrite(str(tmp_path / 'black.jpg'), np.zeros((90, 70, 3), np.uint8))
    kp = one_hand(tiny(str(tmp_path / 'black.jpg')), 70, 90)
    # a black image is a constant crop: the same keypoints as any other constant-black input
    np.testing.assert_array_equal(kp, tiny(np.zeros((90, 70, 3), np.uint8))[OutputKeys.KEYPOINTS])


def test_huge_image_keeps_memory_sane(tiny, tmp_path):
    path = tmp_path / 'huge.jpg'
    big = np.zeros((9000, 12000, 3), np.uint8)
    big[4000:5000, 5000:7000] = (40, 180, 90)
    assert cv2.imwrite(str(path), big)
    del big
    tracemalloc.start()
    try:
        out = tiny(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_hand(out, 12000, 9000)
    image_bytes = 9000 * 12000 * 3
    assert peak < 1.6 * image_bytes, f'peak {peak / 1e6:.0f} MB for a {image_bytes / 1e6:.0f} MB image'


def test_too_many_pixels_is_refused_before_decoding(tiny, tmp_path, monkeypatch):
    import modelscope_handkp.preprocessor as pre
    monkeypatch.setattr(pre, 'MAX_PIXELS', 100 * 100)
    cv2.imwrite(str(tmp_path / 'big.png'), np.zeros((200, 300, 3), np.uint8))
    with pytest.raises(ImageReadError, match='megapixels, more than .* downscale it first'):
        tiny(str(tmp_path / 'big.png'))


def test_too_many_pixels_in_a_jpeg_header_is_refused_before_decoding(tiny, tmp_path, monkeypatch):
    """A JPEG whose header claims 60000 x 60000 got OpenCV's CV_IO_MAX_IMAGE_PIXELS assertion and the advice
    to pass a JPEG; its size is read from the start-of-frame segment now (after an EXIF/APP segment too)."""
    import modelscope_handkp.preprocessor as pre
    ok, enc = cv2.imencode('.jpg', np.full((40, 50, 3), 128, np.uint8))
    data = bytearray(enc.tobytes())
    data[2:2] = b'\xff\xe1\x00\x08Exif\x00\x00'  # an APP1 segment before the frame header
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0)
    assert pre._header_size(bytes(data)) == (50, 40)
    data[sof + 5:sof + 9] = (60000).to_bytes(2, 'big') * 2
    bomb = tmp_path / 'bomb.jpg'
    bomb.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match='60000x60000 = 3600 megapixels, more than the 268 MP'):
        tiny(str(bomb))
    monkeypatch.setattr(pre, '_header_size', lambda data: None)  # past the header check: OpenCV's own limit
    with pytest.raises(ImageReadError, match='larger than OpenCV decodes .* downscale it first'):
        tiny(str(bomb))


def test_side_too_long_for_opencv_is_refused(tiny):
    with pytest.raises(ImageReadError, match=r'33000x2: a side longer than 32766 pixels.*downscale'):
        tiny(np.zeros((2, 33000, 3), np.uint8))
    one_hand(tiny(np.zeros((2, 32766, 3), np.uint8)), 32766, 2)  # the longest side OpenCV takes


def test_bad_numpy_and_other_objects(tiny):
    with pytest.raises(ImageReadError, match=r'has shape \(2, 3, 4, 3\)'):
        tiny(np.zeros((2, 3, 4, 3), np.uint8))
    with pytest.raises(ImageReadError, match='has no pixels'):
        tiny(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ImageReadError, match='NaN or infinite'):
        tiny(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(TypeError, match=r"a dict input needs its image under one of the keys.*got the keys \['not'\]"):
        tiny({'not': 'an image'})
    with pytest.raises(TypeError, match='unsupported image input of type int'):
        tiny({'image': 5})
    with pytest.raises(TypeError, match='unsupported image input of type NoneType') as err:
        tiny(None)
    assert 'list(...)' not in str(err.value)
    # ModelScope runs lists one by one but hands a generator or tuple over whole: say to pass a list
    with pytest.raises(TypeError, match=r'of type generator.*take lists, not iterators: pass list\(\.\.\.\)'):
        tiny(p for p in ['a.jpg'])
    with pytest.raises(TypeError, match=r'of type tuple.*pass list\(\.\.\.\)'):
        tiny((np.zeros((4, 4, 3), np.uint8),) * 2)
    # float images in [0, 1] are scaled, not rejected
    f = np.random.default_rng(0).random((30, 40, 3)).astype(np.float32)
    np.testing.assert_array_equal(tiny(f)[OutputKeys.KEYPOINTS],
                                  tiny(np.rint(f * 255).astype(np.uint8))[OutputKeys.KEYPOINTS])
    # a mean-subtracted float image was clipped to a dark picture without a word
    with pytest.raises(ImageReadError, match=r'has negative values \(\d+ % of them, down to -1.*looks normalised'):
        tiny(f * 255 - 128)
    with pytest.raises(ImageReadError, match='looks normalised'):
        tiny((f - 0.45) / 0.225)  # ImageNet-style normalisation
    g = f * 255
    g[0, :4, 0] = -3.0  # a few overshoots of a bicubic resize: clipped as before
    np.testing.assert_array_equal(tiny(g)[OutputKeys.KEYPOINTS], tiny(np.clip(g, 0, 255))[OutputKeys.KEYPOINTS])


# ----------------------------------------------------------------------------- user boxes
def test_boxes_with_nan(tiny, photo):
    with pytest.raises(ValueError, match='NaN or infinite'):
        tiny(photo, boxes=[[10, 10, float('nan'), 50]])


def test_boxes_with_huge_values(tiny, photo):
    with pytest.raises(ValueError, match=r'coordinates up to 2e\+40, far beyond any image'):
        tiny(photo, boxes=[[1e40, 0, 2e40, 5]])


def test_float_tiff_gets_its_own_message(tiny, tmp_path):
    path = tmp_path / 'f.tif'
    assert cv2.imwrite(str(path), np.full((20, 30, 3), 0.5, np.float32))
    if cv2.imread(str(path)) is not None:
        pytest.skip('this OpenCV decodes 32-bit float TIFFs')
    with pytest.raises(ImageReadError, match=r'is a TIFF of a kind OpenCV cannot decode.*convert it to an 8- or 16-bit'):
        tiny(str(path))


def test_video_file_passed_as_an_image_points_to_the_video_command(tiny, tmp_path):
    path = tmp_path / 'clip.mp4'
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, (64, 48))
    for i in range(3):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    with pytest.raises(ImageReadError, match=r'is a video \(MP4/QuickTime\), not an image: for a video use '
                                             r'`modelscope-handkp video FILE --out OUT.mp4`'):
        tiny(str(path))
    # the container signatures, byte for byte (AVI, Matroska/WebM, HEIF), as bytes input
    for data, kind in ((b'RIFF\x00\x10\x00\x00AVI LIST' + bytes(20), r'a video \(AVI\)'),
                       (b'\x1aE\xdf\xa3' + bytes(40), r'a video \(Matroska/WebM\)'),
                       (b'\x00\x00\x00\x18ftypheic' + bytes(30), r"a HEIF/AVIF file \(brand 'heic'\).*convert it "
                                                                    r'to JPEG or PNG')):
        with pytest.raises(ImageReadError, match=kind):
            tiny(data)


def test_boxes_with_negative_size(tiny, photo):
    with pytest.raises(ValueError, match=r'zero or negative size.*x2 > x1.*convert \[x, y, w, h\]'):
        tiny(photo, boxes=[[50, 10, 20, 60]])


def test_boxes_outside_the_image(tiny, photo):
    with pytest.raises(ValueError, match=r'box 1 .* lies entirely outside the 160x120 image'):
        tiny(photo, boxes=[[10, 10, 50, 50], [500, 500, 600, 600]])
    with pytest.raises(ValueError, match='entirely outside'):
        tiny(photo, boxes=[[-50, -50, -10, -10]])
    out = tiny(photo, boxes=[[-20, -20, 40, 40], [100, 80, 220, 200]])  # partly outside: fine
    assert out[OutputKeys.KEYPOINTS].shape == (2, 21, 3) and np.isfinite(out[OutputKeys.KEYPOINTS]).all()


def test_flip_test_must_be_a_flag(tiny, tiny_dir, photo):
    """flip_test='false' (a string from a request or a config file) switched the flip test ON."""
    for bad in ('false', 'no', 2, 1.0):
        with pytest.raises(TypeError, match=r'flip_test must be True or False, got'):
            tiny(photo, boxes=[[10, 10, 90, 90]], flip_test=bad)
    with pytest.raises(TypeError, match=r"flip_test must be True or False, got 'false'"):
        pipeline(TASK, model=str(tiny_dir), flip_test='false')
    on = tiny(photo, boxes=[[10, 10, 90, 90]], flip_test=True)[OutputKeys.KEYPOINTS]
    off = tiny(photo, boxes=[[10, 10, 90, 90]], flip_test=False)[OutputKeys.KEYPOINTS]
    assert not np.array_equal(on, off)
    np.testing.assert_array_equal(tiny(photo, boxes=[[10, 10, 90, 90]], flip_test=0)[OutputKeys.KEYPOINTS], off)
    np.testing.assert_array_equal(tiny(photo, boxes=[[10, 10, 90, 90]], flip_test=np.bool_(True))[OutputKeys.KEYPOINTS],
                                  on)


def test_normalised_boxes_are_refused(tiny, photo):
    """0-1 boxes gave keypoints inside a box smaller than a pixel, without a word."""
    with pytest.raises(ValueError, match=r'look normalised.*pixels of this 160x120 image: multiply x by 160'):
        tiny(photo, boxes=[[0.1, 0.3, 0.8, 0.7]])
    with pytest.raises(ValueError, match='look normalised'):
        tiny(photo, boxes=[[0.1, 0.3, 0.8, 0.7, 0.9], [0.0, 0.0, 0.5, 0.5, 0.8]])
    out = tiny(photo, boxes=[[0.5, 0.5, 40, 40]])  # one coordinate above 1: pixels
    assert out[OutputKeys.KEYPOINTS].shape == (1, 21, 3)
    small = np.ascontiguousarray(photo[:4, :4])  # in an image of a few pixels, sub-pixel boxes are plausible
    assert tiny(small, boxes=[[0.0, 0.0, 1.0, 1.0]])[OutputKeys.KEYPOINTS].shape == (1, 21, 3)


def test_boxes_of_the_wrong_shape(tiny, photo):
    with pytest.raises(ValueError, match=r'boxes must be a list of \[x1, y1, x2, y2\]'):
        tiny(photo, boxes=[[1, 2, 3]])


# ----------------------------------------------------------------------------- model directories
def test_directory_without_weights(tmp_path, tiny_dir):
    d = tmp_path / 'noweights'
    d.mkdir()
    shutil.copyfile(tiny_dir / 'configuration.json', d / 'configuration.json')
    with pytest.raises(md.MissingWeightsError, match='has no weights: pytorch_model.pt is missing. Copy the checkpoint'):
        pipeline(TASK, model=str(d))
    (d / 'pytorch_model.pt').write_bytes(b'')
    with pytest.raises(md.MissingWeightsError, match='is empty'):
        pipeline(TASK, model=str(d))


def test_directory_without_configuration(tmp_path):
    d = tmp_path / 'weights_only'
    d.mkdir()
    torch.save({}, d / 'pytorch_model.pt')
    with pytest.raises(md.ModelDirError, match='does not exist|no configuration.json'):
        pipeline(TASK, model=str(d))
    with pytest.raises(md.ModelDirError, match='does not exist'):
        pipeline(TASK, model=str(tmp_path / 'missing_dir'))


def test_checkpoint_of_the_wrong_architecture(tmp_path, tiny_dir, official_dir):
    d = tmp_path / 'wrong'
    shutil.copytree(tiny_dir, d)
    shutil.copyfile(official_dir / 'pytorch_model.pt', d / 'pytorch_model.pt')  # w18 weights, tiny config
    with pytest.raises(md.ModelDirError, match='does not fit this model architecture.*keys with the wrong shape'):
        pipeline(TASK, model=str(d))
    shutil.copyfile(official_dir / 'detection' / 'detection_model.pth', d / 'pytorch_model.pt')  # a detector
    with pytest.raises(md.ModelDirError, match='missing keys: backbone'):
        pipeline(TASK, model=str(d))
    (d / 'pytorch_model.pt').write_bytes(b'PK\x03\x04 not really a checkpoint')
    with pytest.raises(md.ModelDirError, match='cannot be read'):
        pipeline(TASK, model=str(d))


def _with_config(tmp_path, src, name, edit):
    d = tmp_path / name
    shutil.copytree(src, d)
    cfg = json.loads((d / 'configuration.json').read_text())
    edit(cfg)
    (d / 'configuration.json').write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize('name, edit, message', [
    ('no_model', lambda c: c.pop('model'), "no 'model' section|missing the key 'model'"),
    ('no_backbone', lambda c: c['model'].pop('backbone'), "missing the key 'backbone'"),
    ('no_head', lambda c: c['model'].pop('keypoint_head'), "missing the key 'keypoint_head'"),
    ('no_task', lambda c: c.pop('task'), "missing the key 'task'; add \"task\": \"hand-2d-keypoints\""),
    ('no_framework', lambda c: c.pop('framework'), "missing the key 'framework'"),
    ('no_pipeline', lambda c: c.pop('pipeline'), "missing the key 'pipeline'.*add \"pipeline\""),
    ('bad_kernel', lambda c: c['model']['test_cfg'].update(modulate_kernel=4), 'positive odd integer'),
    ('bad_detector', lambda c: c.update(detector={'type': 'yolo'}), 'detector.type'),
])
def test_configuration_with_missing_keys(tmp_path, tiny_dir, name, edit, message):
    d = _with_config(tmp_path, tiny_dir, name, edit)
    with pytest.raises(md.ModelDirError, match=message):
        pipeline(TASK, model=str(d))


@pytest.mark.parametrize('name, edit, message', [
    ('no_detection', lambda c: c['DETECTION'].pop('model_path'), "DETECTION is missing the key 'model_path'"),
    ('no_data_cfg_is_fine', lambda c: c.pop('data_cfg'), None),
])
def test_published_configuration_with_missing_keys(tmp_path, official_dir, name, edit, message):
    d = _with_config(tmp_path, official_dir, name, edit)
    if message is None:  # defaults: 256x256 input, 64x64 heatmaps
        assert pipeline(TASK, model=str(d)).model.input_size == (256, 256)
    else:
        with pytest.raises(md.ModelDirError, match=message):
            pipeline(TASK, model=str(d))


@pytest.mark.filterwarnings('error::pytest.PytestUnraisableExceptionWarning')  # no stray traceback after our error
def test_broken_configuration_files(tmp_path, tiny_dir):
    d = tmp_path / 'broken'
    shutil.copytree(tiny_dir, d)
    (d / 'configuration.json').write_text('{"task": "hand-2d-keypoints", ')
    with pytest.raises(md.ModelDirError, match=r'is not valid JSON \(line 1'):
        pipeline(TASK, model=str(d))
    (d / 'configuration.json').write_text('')
    with pytest.raises(md.ModelDirError, match='is empty; restore it'):
        pipeline(TASK, model=str(d))


def test_missing_detector_files(tmp_path, official_dir):
    d = tmp_path / 'nodet'
    shutil.copytree(official_dir, d)
    (d / 'detection' / 'detection_model.pth').unlink()
    with pytest.raises(md.ModelDirError, match="detector weights file .* does not exist.*detector='none'"):
        pipeline(TASK, model=str(d))
    p = pipeline(TASK, model=str(d), detector='none')  # works with the caller's boxes
    out = p(np.zeros((64, 64, 3), np.uint8), boxes=[[8, 8, 56, 56]], flip_test=False)
    assert out[OutputKeys.KEYPOINTS].shape == (1, 21, 3)


def test_detector_config_with_code_is_refused(tmp_path, official_dir):
    d = tmp_path / 'codecfg'
    shutil.copytree(official_dir, d)
    marker = tmp_path / 'EXECUTED'
    cfg_py = d / 'detection' / 'config.py'
    cfg_py.write_text(f'import os\nos.system("touch {marker}")\n' + cfg_py.read_text())
    with pytest.raises(Exception, match='config|import') as info:
        pipeline(TASK, model=str(d))
    assert 'config.py' in str(info.value)
    assert not marker.exists()


def test_wrong_task_in_configuration(tmp_path, tiny_dir):
    d = _with_config(tmp_path, tiny_dir, 'wrong_task', lambda c: c.update(task='image-classification'))
    with pytest.raises(md.ModelDirError, match="is for task 'image-classification'"):
        pipeline(TASK, model=str(d))



def test_detector_argument(official_dir, tmp_path, monkeypatch):
    # settings left out come from the model directory's detector of the same type (its files here) ...
    p = pipeline(TASK, model=str(official_dir), detector={'type': 'ssdlite', 'score_threshold': 0.3})
    assert p.score_threshold == pytest.approx(0.3)
    assert type(p.detector).__name__ == type(pipeline(TASK, model=str(official_dir)).detector).__name__
    # ... and file paths in the argument are relative to the current directory, not to the model directory
    (tmp_path / 'mine').mkdir()
    for name in ('config.py', 'detection_model.pth'):
        shutil.copyfile(official_dir / 'detection' / name, tmp_path / 'mine' / name)
    monkeypatch.chdir(tmp_path)
    mine = {'type': 'ssdlite', 'config_file': 'mine/config.py', 'checkpoint': 'mine/detection_model.pth'}
    assert pipeline(TASK, model=str(official_dir), detector=mine).score_threshold == pytest.approx(0.5)
    theirs = {'type': 'ssdlite', 'config_file': 'detection/config.py', 'checkpoint': 'detection/detection_model.pth'}
    with pytest.raises(md.ModelDirError, match='the detector argument.*does not exist'):
        pipeline(TASK, model=str(official_dir), detector=theirs)
    with pytest.raises(TypeError, match='detector= must be a HandDetector'):
        pipeline(TASK, model=str(official_dir), detector=3)
    # a misspelt setting was ignored without a word (the default was used)
    with pytest.raises(ValueError, match=r"detector= \['scor_threshold', 'varient'\] are not settings of the "
                                         r"'palm' detector; its settings are \['score_threshold', 'tiles', 'type', "
                                         r"'variant'\]"):
        pipeline(TASK, model=str(official_dir), detector={'type': 'palm', 'scor_threshold': 0.2, 'varient': 'lite'})
    with pytest.raises(ValueError, match=r"\['checkpont'\] is not a setting of the 'ssdlite' detector"):
        pipeline(TASK, model=str(official_dir), detector={'type': 'ssdlite', 'checkpont': 'x.pth'})


def test_bad_detector_argument_value_is_blamed_on_the_argument(tmp_path):
    """A bad value in detector= of the model's own detector type was reported as an error of the model
    directory's configuration.json."""
    from modelscope_handkp import starter_model_dir
    with pytest.raises(md.ModelDirError, match=r'Pipeline: the detector argument \(with the detector of .*configuration\.json'
                                               r'\) detector\.tiles'):
        pipeline(TASK, model=starter_model_dir(), detector={'type': 'palm', 'tiles': 'sometimes'})


def test_constructor_score_threshold_is_checked(tiny_dir):
    with pytest.raises(ValueError, match=r'score_threshold must be a number in \[0, 1\], got 5'):
        pipeline(TASK, model=str(tiny_dir), score_threshold=5)
    assert pipeline(TASK, model=str(tiny_dir), score_threshold=0.25).score_threshold == 0.25


def test_encoded_image_bytes_of_any_buffer_type(tiny, photo):
    """bytes, bytearray and memoryview of an encoded image give the same hand as the array itself (the
    reader accepted all three; the pipeline's input check refused the last two)."""
    data = cv2.imencode('.png', photo)[1].tobytes()
    ref = tiny(photo)[OutputKeys.KEYPOINTS]
    for buf in (data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(tiny(buf)[OutputKeys.KEYPOINTS], ref)
    with pytest.raises(TypeError, match='encoded image bytes'):
        tiny(12345)


def test_broken_symlink_says_so(tiny, tmp_path):
    link = tmp_path / 'hand.jpg'
    link.symlink_to(tmp_path / 'gone.jpg')
    with pytest.raises(FileNotFoundError, match="broken symbolic link .*gone.jpg"):
        tiny(str(link))
