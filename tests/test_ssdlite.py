"""SSDLite-MobileNetV2 hand detector: parity with mmdet 2.28 (fixtures from ../shared) and the
safe config reader, NMS and input handling (these run without ../shared)."""
from __future__ import annotations

import json
import textwrap

import cv2
import numpy as np
import pytest
import torch

from modelscope_handkp.checkpoint import CheckpointError
from modelscope_handkp.detection import SSDLiteHandDetector, build_hand_detector
from modelscope_handkp.detection.base import Detections, HandDetector
from modelscope_handkp.detection.mmdet_config import (UnsafeConfigError, load_mmdet_config,
                                                      model_config, parse_config_source)
from modelscope_handkp.detection.nms import batched_nms, nms
from modelscope_handkp.detection.ssdlite import decode_deltas, default_model_cfg


# ------------------------------------------------------------------------------------------
# helpers and fixtures
# ------------------------------------------------------------------------------------------
def _match_one_to_one(ours: np.ndarray, ref: np.ndarray, box_tol=1e-2, score_tol=1e-4):
    """Match every reference row to a distinct row of ``ours`` (near-tied scores may swap
    places); returns (max box diff, max score diff) or fails."""
    assert ours.shape == ref.shape, f'{len(ours)} detections, reference has {len(ref)}'
    used = np.zeros(len(ours), bool)
    worst_box = worst_score = 0.0
    for r in ref:
        db = np.abs(ours[:, :4] - r[:4]).max(axis=1)
        ds = np.abs(ours[:, 4] - r[4])
        ok = ~used & (db <= box_tol) & (ds <= score_tol)
        assert ok.any(), f'reference detection {r} has no counterpart'
        j = np.flatnonzero(ok)[np.argmin(db[ok])]
        used[j] = True
        worst_box, worst_score = max(worst_box, db[j]), max(worst_score, ds[j])
    return worst_box, worst_score


@pytest.fixture(scope='module')
def config_path(reference_dir):
    return reference_dir / 'official_like_model' / 'detection' / 'config.py'


@pytest.fixture(scope='module')
def detector(config_path, ssdlite_synth_state_dict):
    torch.manual_seed(0)
    return build_hand_detector(config_path, ssdlite_synth_state_dict)


@pytest.fixture(scope='module')
def fixture_images(shared_dir, detector_ref):
    images = []
    for rel in detector_ref['image_files']:
        bgr = cv2.imread(str(shared_dir / str(rel)), cv2.IMREAD_COLOR)
        assert bgr is not None, rel
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


# ------------------------------------------------------------------------------------------
# parity with mmdet
# ------------------------------------------------------------------------------------------
def test_state_dict_layout_equals_manifest(reference_dir):
    manifest = json.loads((reference_dir / 'ssdlite_mnv2_hand_manifest.json').read_text())
    sd = build_hand_detector(reference_dir / 'ssdlite_mnv2_hand_config.json').state_dict()
    assert list(sd) == [k for k, _, _ in manifest]
    assert [list(v.shape) for v in sd.values()] == [list(s) for _, s, _ in manifest]
    assert len(sd) == 480


def test_default_model_cfg_is_the_hub_config(reference_dir, config_path):
    ref = json.loads((reference_dir / 'ssdlite_mnv2_hand_config.json').read_text())
    assert json.loads(json.dumps(default_model_cfg())) == ref
    from_py = model_config(config_path)
    for part in ('backbone', 'neck', 'bbox_head'):
        from_py[part].pop('init_cfg')
    from_py.pop('train_cfg')
    assert json.loads(json.dumps(from_py)) == ref


def test_synthetic_weights_load_strictly_from_mmdet_checkpoint(tmp_path, reference_dir,
                                                               ssdlite_synth_state_dict):
    path = tmp_path / 'detection_model.pth'
    torch.save({'state_dict': ssdlite_synth_state_dict,
                'meta': {'CLASSES': ('hand',), 'mmdet_version': '2.28.2'}}, path)
    det = build_hand_detector(reference_dir / 'ssdlite_mnv2_hand_config.json', str(path))
    assert isinstance(det, SSDLiteHandDetector) and isinstance(det, HandDetector)
    loaded = det.state_dict()
    for key, value in ssdlite_synth_state_dict.items():
        assert torch.equal(loaded[key], value), key


def test_checkpoint_that_does_not_fit_is_refused(ssdlite_synth_state_dict):
    sd = dict(ssdlite_synth_state_dict)
    sd.pop('bbox_head.cls_convs.0.1.bias')
    sd['bbox_head.extra.weight'] = torch.zeros(3)
    with pytest.raises(CheckpointError, match='cls_convs.0.1.bias.*bbox_head.extra.weight'):
        build_hand_detector(default_model_cfg(), sd)


def test_forward_raw_matches_mmdet(detector, detector_ref):
    with torch.no_grad():
        cls, reg = detector.forward_raw(torch.from_numpy(detector_ref['input_tensor']))
    for ours, ref in ((cls, detector_ref['cls_logits']), (reg, detector_ref['bbox_deltas'])):
        assert ours.shape == ref.shape == (2, 3234, ref.shape[-1])
        rel = np.abs(ours.numpy() - ref).max() / np.abs(ref).max()
        assert rel <= 1e-4, rel


def test_anchors_match_mmdet(detector, detector_ref):
    anchors = detector.anchors()
    assert anchors.dtype == torch.float32 and anchors.shape == (3234, 4)
    assert np.abs(anchors.numpy() - detector_ref['anchors_xyxy']).max() <= 1e-4
    assert detector.feature_sizes() == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def test_preprocess_matches_mmdet(detector, detector_ref, fixture_images):
    x = detector.preprocess(fixture_images)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 320, 320)
    assert np.abs(x.numpy() - detector_ref['input_tensor']).max() <= 1e-4
    single = detector.preprocess(fixture_images[1])
    assert torch.equal(single[0], x[1])


def test_detect_matches_mmdet(detector, detector_ref, fixture_images):
    dets = detector.detect(fixture_images)  # one batched forward, list in -> list out
    assert isinstance(dets, list) and len(dets) == 2
    for ours, ref in zip(dets, detector_ref['detections_xyxys']):
        ref = ref[np.any(ref != 0, axis=1)]
        assert ours.dtype == np.float32 and len(ref) > 0
        assert np.all(np.diff(ours[:, 4]) <= 0), 'not sorted by score'
        box_diff, score_diff = _match_one_to_one(ours, ref)
        assert box_diff <= 1e-2 and score_diff <= 1e-4
    single = detector.detect(fixture_images[0])
    np.testing.assert_allclose(single, dets[0], atol=1e-4)


# ------------------------------------------------------------------------------------------
# inputs and outputs
# ------------------------------------------------------------------------------------------
def test_any_size_gray_and_rgba_inputs(detector, fixture_images):
    rgb = fixture_images[1]
    for h, w in ((37, 300), (500, 61), (320, 320), (999, 1001)):
        img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        dets = detector.detect(img)
        assert dets.dtype == np.float32 and dets.ndim == 2 and dets.shape[1] == 5
        assert len(dets) > 0
        # boxes were clamped to the 320x320 input, then scaled back: inside the image
        assert dets[:, [0, 2]].min() >= 0 and dets[:, [0, 2]].max() <= w * (1 + 1e-5)
        assert dets[:, [1, 3]].min() >= 0 and dets[:, [1, 3]].max() <= h * (1 + 1e-5)
        # the same boxes as in network-input pixels, divided by the resize factors
        with torch.no_grad():
            cls, reg = detector.forward_raw(detector.preprocess(img))
        in_320, _ = detector.postprocess(cls, reg, np.ones((1, 4), np.float32))[0]
        np.testing.assert_allclose(dets[:, :4], in_320[:, :4] * np.array([w / 320, h / 320] * 2),
                                   rtol=1e-5, atol=1e-3)

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    as_rgb = detector.detect(np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(detector.detect(gray), as_rgb)
    np.testing.assert_array_equal(detector.detect(gray[:, :, None]), as_rgb)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(detector.detect(rgba), detector.detect(rgb))
    # a strided view (e.g. BGR->RGB flip) works as well
    np.testing.assert_array_equal(detector.detect(rgb[:, :, ::-1][:, :, ::-1]),
                                  detector.detect(rgb))


def test_batch_equals_single_images(detector, fixture_images):
    small = cv2.resize(fixture_images[0], (90, 160))
    batch = detector.detect([fixture_images[1], small], score_thr=0.3, max_det=50)
    for img, dets in zip([fixture_images[1], small], batch):
        np.testing.assert_allclose(dets, detector.detect(img, score_thr=0.3, max_det=50),
                                   atol=1e-4)
    assert all(len(d) <= 50 and (d[:, 4] > 0.3).all() for d in batch)


def test_blank_image_with_high_threshold_is_empty(detector):
    blank = np.zeros((240, 180, 3), np.uint8)
    assert len(detector.detect(blank, score_thr=0.02)) > 0  # the threshold is what empties it
    empty = detector.detect(blank, score_thr=0.95)
    assert empty.shape == (0, 5) and empty.dtype == np.float32
    assert detector.detect([blank, blank], score_thr=0.95)[1].shape == (0, 5)
    hands = detector.detect_hands(blank, score_thr=0.95)
    assert isinstance(hands, Detections) and len(hands) == 0


def test_detect_hands_uses_configured_threshold(detector, fixture_images):
    old = detector.score_thr
    try:
        detector.score_thr = 0.6
        hands = detector.detect_hands(fixture_images[0])
        ref = detector.detect(fixture_images[0], score_thr=0.6)
        assert len(hands) == len(ref) > 0
        np.testing.assert_array_equal(hands.as_array(), ref)
    finally:
        detector.score_thr = old


def test_bad_images_are_rejected_clearly():
    det = build_hand_detector(default_model_cfg())
    with pytest.raises(ValueError, match='uint8'):  # int32 has no pixel scale to convert from
        det.detect(np.zeros((10, 10, 3), np.int32))
    with pytest.raises(ValueError, match='shape'):
        det.detect(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ValueError, match='no pixels'):
        det.detect(np.zeros((0, 10, 3), np.uint8))


# ------------------------------------------------------------------------------------------
# architecture checks
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('part, kind', [(None, 'FasterRCNN'), ('backbone', 'ResNet'),
                                        ('neck', 'FPN'), ('bbox_head', 'RetinaHead')])
def test_unsupported_architecture_raises(part, kind):
    cfg = default_model_cfg()
    (cfg if part is None else cfg[part])['type'] = kind
    with pytest.raises(ValueError, match=f"unsupported .*type '{kind}'.*supported") as err:
        build_hand_detector({'model': cfg})
    assert 'SSDHead' in str(err.value)


def test_decode_clamps_to_the_input():
    anchors = torch.tensor([[-10.0, 300.0, 30.0, 340.0], [100.0, 100.0, 200.0, 150.0]])
    deltas = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, -0.5, 100.0, -100.0]]])
    boxes = decode_deltas(anchors, deltas, stds=(0.1, 0.1, 0.2, 0.2), max_shape=(320, 320))
    # anchor 0 unchanged, clipped at y = 320.  Anchor 1: centre (150, 125) + (100, 50) * (0.1,
    # -0.05) = (160, 122.5); log-sizes +-20 clamped to +-log(1000/16): w = 100 * 62.5 = 6250
    # (clipped to [0, 320]), h = 50 / 62.5 = 0.8.
    np.testing.assert_allclose(boxes[0, 0].numpy(), [0.0, 300.0, 30.0, 320.0], atol=1e-5)
    np.testing.assert_allclose(boxes[0, 1].numpy(), [0.0, 122.1, 320.0, 122.9], atol=1e-4)


# ------------------------------------------------------------------------------------------
# NMS
# ------------------------------------------------------------------------------------------
def _reference_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            xx2, yy2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            a = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            b = (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1])
            if inter / (a + b - inter) >= thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_nms_small_example():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU(0,1) = 81/119 = 0.68; IoU(3,0) = 0.5 exactly -> suppressed (mmcv uses >=)
    keep = nms(boxes, scores, 0.5)
    assert isinstance(keep, np.ndarray) and keep.tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.7).tolist() == [3, 0, 1, 2]
    assert nms(boxes, scores, 0.7, max_keep=2).tolist() == [3, 0]
    assert nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist() == [3, 1, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)


def test_nms_matches_brute_force_and_batched_keeps_classes_apart():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (300, 2))
    wh = rng.uniform(5, 40, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(300).astype(np.float32) / 300
    for thr in (0.3, 0.45, 0.7):
        assert nms(boxes, scores, thr).tolist() == _reference_nms(boxes.tolist(),
                                                                  scores.tolist(), thr)
    labels = rng.integers(0, 3, 300)
    keep = batched_nms(boxes, scores, labels, 0.45)
    expected = []
    for c in range(3):
        idx = np.flatnonzero(labels == c)
        expected += idx[_reference_nms(boxes[idx].tolist(), scores[idx].tolist(), 0.45)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert np.all(np.diff(scores[keep]) <= 0)
    # two identical boxes of different classes both survive
    two = batched_nms(boxes[:1].repeat(2, 0), np.array([0.9, 0.8], np.float32), [0, 1], 0.1)
    assert two.tolist() == [0, 1]


# ------------------------------------------------------------------------------------------
# the config reader never executes code
# ------------------------------------------------------------------------------------------
def test_config_reader_evaluates_data(tmp_path):
    src = textwrap.dedent('''
        """A config."""
        norm = dict(type='BN', eps=1e-3)
        sizes = [48, 100] + [150] * 2
        base = {'a': 1, 'b': (1, 2)}
        model = dict(norm_cfg=norm, sizes=sizes, scale=1 / 4, neg=-2, **base, c={**base, 'a': 5},
                     t=tuple([1, 2]), flag=True, nothing=None)
    ''')
    cfg = parse_config_source(src)
    assert cfg['model'] == dict(norm_cfg={'type': 'BN', 'eps': 1e-3}, sizes=[48, 100, 150, 150],
                                scale=0.25, neg=-2, a=1, b=(1, 2), c={'a': 5, 'b': (1, 2)},
                                t=(1, 2), flag=True, nothing=None)
    # _base_ inheritance, a folder path and JSON
    (tmp_path / 'base.py').write_text("model = dict(type='X', a=dict(b=1, c=2), keep=3)\n")
    (tmp_path / 'config.py').write_text(
        "_base_ = ['base.py']\nmodel = dict(a=dict(b=10), d=dict(_delete_=True, e=1))\n")
    merged = load_mmdet_config(tmp_path)
    assert merged == {'model': {'type': 'X', 'a': {'b': 10, 'c': 2}, 'keep': 3, 'd': {'e': 1}}}
    (tmp_path / 'm.json').write_text(json.dumps({'type': 'Y'}))
    assert model_config(tmp_path / 'm.json') == {'type': 'Y'}


@pytest.mark.parametrize('code, construct', [
    ("import os\nos.system('touch {marker}')\nmodel = dict()", 'import'),
    ("model = dict(x=__import__('os').system('touch {marker}'))", 'call'),
    ("model = dict(x=open('{marker}', 'w').write('pwned'))", 'call'),
    ("model = dict(x=[open('{marker}', 'w') for _ in range(1)])", 'ListComp'),
    ("model = (lambda: open('{marker}', 'w'))()", 'call'),
    ("model = dict(x=().__class__.__base__)", 'Attribute'),
    ("if True:\n    open('{marker}', 'w')\nmodel = dict()", 'If'),
    ("model = dict(x=f'{{open(\"{marker}\", \"w\")}}')", 'JoinedStr'),
])
def test_config_reader_never_executes_code(tmp_path, code, construct):
    marker = tmp_path / 'marker'
    path = tmp_path / 'config.py'
    path.write_text(code.format(marker=marker))
    with pytest.raises(UnsafeConfigError, match=f'(?is)config.py, line .*{construct}.*NOT executed'):
        load_mmdet_config(path)
    with pytest.raises(UnsafeConfigError):
        build_hand_detector(path)
    assert not marker.exists()


def test_config_reader_reports_unknown_names():
    with pytest.raises(UnsafeConfigError, match='`later` is not defined earlier'):
        parse_config_source('model = dict(a=later)\nlater = 1\n')


def test_config_reader_refuses_memory_bombs():
    doubling = 'a = [0] * 50000\n' + 'a = a + a\n' * 40
    with pytest.raises(UnsafeConfigError, match='longer than 100000'):
        parse_config_source(doubling)
    with pytest.raises(UnsafeConfigError, match='longer than 100000'):
        parse_config_source("a = 'x' * 1000000000000")
    with pytest.raises(UnsafeConfigError, match='Pow'):
        parse_config_source('a = 10 ** 10 ** 10')


# ------------------------------------------------------------------------------------------
# review fixes
# ------------------------------------------------------------------------------------------
def test_detect_defaults_come_from_the_detector_settings(detector, fixture_images):
    """detect() without thresholds uses the config's test_cfg (score_thr, nms, max_per_img), as
    detect_hands() does, not hard-coded mmdet defaults."""
    img = fixture_images[0]
    old = detector.score_thr, detector.max_det
    try:
        detector.score_thr, detector.max_det = 0.6, 2
        got = detector.detect(img)
        ref = detector.detect(img, score_thr=0.6, nms_iou=detector.nms_iou, max_det=2)
        assert len(ref) == 2 and (ref[:, 4] > 0.6).all()
        np.testing.assert_array_equal(got, ref)
        batch = detector.detect([img, img])
        np.testing.assert_array_equal(batch[1], ref)
    finally:
        detector.score_thr, detector.max_det = old
    cfg = default_model_cfg()
    cfg['test_cfg'].update(score_thr=0.3, max_per_img=7, nms=dict(type='nms', iou_threshold=0.6))
    built = SSDLiteHandDetector(cfg)
    assert (built.score_thr, built.max_det, built.nms_iou) == (0.3, 7, 0.6)


def test_detect_hands_takes_a_list_like_the_palm_detector(detector, fixture_images):
    many = detector.detect_hands(fixture_images)
    assert isinstance(many, list) and len(many) == 2
    for img, dets in zip(fixture_images, many):
        one = detector.detect_hands(img)
        assert isinstance(dets, Detections) and len(dets) == len(one) > 0
        np.testing.assert_allclose(dets.as_array(), one.as_array(), atol=1e-4)


def test_non_uint8_images_are_converted_like_the_palm_detector(detector, fixture_images):
    rgb = fixture_images[1]
    ref = detector.detect(rgb)
    assert len(ref) > 0
    # [0, 1] floats, 0..255 floats and 16-bit pixels give the uint8 image's boxes (not a black / saturated image)
    for converted in (rgb.astype(np.float32) / 255.0, rgb.astype(np.float64), rgb.astype(np.uint16) * 257):
        np.testing.assert_allclose(detector.detect(converted), ref, atol=1e-4)
    with pytest.raises(ValueError, match='got dtype int64'):
        detector.detect(rgb.astype(np.int64))
    with pytest.raises(ValueError, match='NaN'):
        detector.detect(np.full((8, 8, 3), np.nan, np.float32))


def test_nms_ranks_nan_scores_last():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([np.nan, 0.9, 0.8, 0.7], np.float32)
    # the NaN box must not be kept first and suppress the real best box (index 1)
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]
    assert nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist() == [1, 3]
    assert batched_nms(boxes, scores, np.zeros(4, np.int64), 0.5).tolist() == [1, 3]
    lone = np.array([np.nan, 0.9], np.float32)
    far = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    assert nms(far, lone, 0.5).tolist() == [1, 0]  # kept, but after the scored box


def test_config_reader_refuses_number_and_reference_bombs():
    import time
    start = time.monotonic()
    squaring = 'x = 2\n' + 'x = x * x\n' * 20  # 2 ** (2 ** 20); each further line doubles the time
    with pytest.raises(UnsafeConfigError, match='line 11: an integer of more than 1024 bits'):
        parse_config_source(squaring)
    doubling = 'x = [0]\n' + 'x = [x, x]\n' * 20  # 2 ** 20 values; each further line doubles them
    with pytest.raises(UnsafeConfigError, match='values in all'):
        parse_config_source(doubling)
    with pytest.raises(UnsafeConfigError, match='nested too deeply'):
        parse_config_source('x = ' + '1 + ' * 50000 + '1')
    with pytest.raises(UnsafeConfigError, match='nested too deeply'):
        parse_config_source('x = ' + '-' * 50000 + '1')
    assert time.monotonic() - start < 30
    # ordinary reuse of names still works
    cfg = parse_config_source('n = dict(type="BN", eps=1e-3)\nm = [n] * 6\nk = dict(a=m, b=m, c=n)\n'
                              's = 4096 * 4096 * 4096')
    assert cfg['k']['a'][5] == {'type': 'BN', 'eps': 1e-3} and cfg['s'] == 4096 ** 3
