"""MediaPipe palm detector port (issue 8): geometry, conversion, parity with TFLite, real detections."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import thread_mismatches

from modelscope_handkp.detection.base import Detections, HandDetector
from modelscope_handkp.detection.palm import (PALM_NUM_ANCHORS, BlazePalm, PalmDetector, build_palm_detector,
                                              default_weights_path, hand_rect_corners, letterbox_matrices,
                                              palm_anchors, palm_to_hand_rects, weighted_nms)


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def full_detector():
    return build_palm_detector('full')


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _shared_images(data_dir: Path):
    paths = sorted(p for p in (data_dir / 'hands').rglob('*') if p.suffix in ('.jpg', '.png'))
    assert len(paths) >= 20
    return paths


def _gt_hands(ann_file: Path):
    """{file name: [(box xyxy, visible keypoints [K, 2], all keypoints [21, 3]), ...]} for COCO /
    COCO-WholeBody hand files."""
    data = json.loads(ann_file.read_text())
    names = {im['id']: im['file_name'] for im in data['images']}
    out = {}
    for a in data['annotations']:
        hands = []
        if 'lefthand_kpts' in a:
            for side in ('left', 'right'):
                if a[f'{side}hand_valid']:
                    hands.append((a[f'{side}hand_box'], a[f'{side}hand_kpts']))
        else:
            hands.append((a['bbox'], a['keypoints']))
        for box, kpts in hands:
            k = np.asarray(kpts, np.float64).reshape(-1, 3)
            b = np.asarray(box, np.float64)
            out.setdefault(names[a['image_id']], []).append((np.r_[b[:2], b[:2] + b[2:]], k[k[:, 2] > 0, :2], k))
    return out


def _covers(corners, center, side, rotation, box, kps) -> bool:
    """Issue 8's criterion: IoU(rotated hand rectangle, GT box) >= 0.3 or all GT keypoints inside it."""
    quad = np.asarray(corners, np.float32).reshape(-1, 1, 2)
    rect = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]], np.float32)
    inter, _ = cv2.intersectConvexConvex(quad, rect.reshape(-1, 1, 2))
    iou = inter / (cv2.contourArea(quad) + cv2.contourArea(rect) - inter)
    r = math.radians(rotation)
    d = kps - center
    u = d[:, 0] * math.cos(r) + d[:, 1] * math.sin(r)
    v = d[:, 0] * math.sin(r) - d[:, 1] * math.cos(r)
    inside = len(kps) > 0 and np.all(np.abs(u) <= side / 2) and np.all(np.abs(v) <= side / 2)
    return iou >= 0.3 or bool(inside)


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pytest.skip('no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime) to run the '
                    'parity tests against MediaPipe\'s .tflite')


@pytest.fixture(scope='module', params=['full', 'lite'])
def palm_tflite(request):
    """(variant, path of MediaPipe's palm_detection_<variant>.tflite), fetched from the
    mediapipe==0.10.21 wheel on PyPI once and cached (~/.cache/modelscope_handkp)."""
    from modelscope_handkp.detection.tflite_convert import fetch_palm_tflite
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # an unexpected file (sha256) is a failure, not a warning
            return request.param, fetch_palm_tflite(request.param)
    except RuntimeError as e:
        pytest.skip(f'could not fetch palm_detection_{request.param}.tflite from the mediapipe==0.10.21 '
                    f'wheel on PyPI: {str(e)[:300]}')


# ----------------------------------------------------------------------------------------------
# geometry (no data needed)
# ----------------------------------------------------------------------------------------------
def test_anchors_match_mediapipe_layout():
    a = palm_anchors()
    assert a.shape == (PALM_NUM_ANCHORS, 2) and a.dtype == np.float32
    # stride 8: 24x24 cells, 2 anchors per cell, (row, column, anchor) order
    np.testing.assert_allclose(a[0], [0.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(a[1], [0.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(a[2], [1.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(a[2 * 24], [0.5 / 24, 1.5 / 24])
    np.testing.assert_allclose(a[1151], [23.5 / 24, 23.5 / 24])
    # three stride-16 layers share one 12x12 map: 6 anchors per cell
    np.testing.assert_allclose(a[1152:1158], np.tile([0.5 / 12, 0.5 / 12], (6, 1)))
    np.testing.assert_allclose(a[1158], [1.5 / 12, 0.5 / 12])
    np.testing.assert_allclose(a[-1], [11.5 / 12, 11.5 / 12])


def test_letterbox_maps_centered_square_onto_input():
    mats, pads = letterbox_matrices([(640, 480), (300, 600)])
    # landscape: the 640x640 square from y = -80 maps onto 192x192
    np.testing.assert_allclose(mats[0] @ [0, -80, 1], [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(mats[0] @ [640, 560, 1], [192, 192, 1], atol=1e-9)
    np.testing.assert_allclose(pads[0], [0, 0.125, 0, 0.125])
    np.testing.assert_allclose(mats[1] @ [-150, 0, 1], [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(pads[1], [0.25, 0, 0.25, 0])


def test_weighted_nms_merges_with_score_weights():
    boxes = np.array([[0.10, 0.10, 0.30, 0.30],   # best
                      [0.12, 0.12, 0.32, 0.32],   # IoU 0.68 with the best: merged
                      [0.60, 0.60, 0.80, 0.80],   # separate
                      [0.20, 0.20, 0.40, 0.40]],  # IoU 0.14 with the best: kept apart
                     np.float32)
    kps = np.arange(4 * 7 * 2, dtype=np.float32).reshape(4, 7, 2) / 100
    scores = np.array([0.9, 0.6, 0.8, 0.55], np.float32)
    b, k, s = weighted_nms(boxes, kps, scores, iou_thr=0.3)
    np.testing.assert_allclose(s, [0.9, 0.8, 0.55])  # the best's score is kept
    np.testing.assert_allclose(b[0], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(k[0], (0.9 * kps[0] + 0.6 * kps[1]) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(b[1], boxes[2])
    np.testing.assert_allclose(b[2], boxes[3])
    e = weighted_nms(np.zeros((0, 4)), np.zeros((0, 7, 2)), np.zeros(0))
    assert e[0].shape == (0, 4) and e[1].shape == (0, 7, 2) and e[2].shape == (0,)


def test_palm_to_hand_rect_rotation_shift_and_size():
    box = np.array([[90, 90, 110, 106]], np.float64)  # palm 20 x 16 centred at (100, 98)
    kps = np.zeros((1, 7, 2))
    # fingers up: wrist below the middle-finger MCP -> no rotation, centre 8 px (h / 2) up
    kps[0, 0], kps[0, 2] = (100, 110), (100, 90)
    c, side, rot = palm_to_hand_rects(box, kps)
    np.testing.assert_allclose(rot, [0.0], atol=1e-12)
    np.testing.assert_allclose(c, [[100, 90]])
    np.testing.assert_allclose(side, [52.0])  # 2.6 * max(20, 16)
    # fingers pointing right (+x): rotation +90 deg, centre shifted 8 px to the right
    kps[0, 0], kps[0, 2] = (90, 98), (110, 98)
    c, side, rot = palm_to_hand_rects(box, kps)
    np.testing.assert_allclose(np.degrees(rot), [90.0])
    np.testing.assert_allclose(c, [[108, 98]])
    # fingers pointing down-left: rotation -135 deg (wrapped into [-180, 180))
    kps[0, 0], kps[0, 2] = (110, 88), (90, 108)
    _, _, rot = palm_to_hand_rects(box, kps)
    np.testing.assert_allclose(np.degrees(rot), [-135.0])


def test_hand_rect_corners_agree_with_opencv_rotated_rect():
    c = hand_rect_corners([[100, 50]], [20], [30])[0]
    ref = cv2.boxPoints(((100, 50), (20, 20), 30))
    assert np.allclose(np.sort(c, 0), np.sort(ref, 0), atol=1e-4)
    # "up" edge (first two corners) lies towards image direction (sin r, -cos r)
    up_mid = c[:2].mean(0) - [100, 50]
    r = math.radians(30)
    np.testing.assert_allclose(up_mid / np.linalg.norm(up_mid), [math.sin(r), -math.cos(r)])


def test_network_shapes_and_input_check():
    net = BlazePalm('lite').eval()
    with torch.no_grad():
        regs, scores = net(torch.zeros(2, 3, 192, 192))
    assert regs.shape == (2, 2016, 18) and scores.shape == (2, 2016, 1)
    with pytest.raises(ValueError, match='192'):
        net(torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match="'full' or 'lite'"):
        build_palm_detector('heavy')


def test_missing_weights_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match='convert_palm_detector'):
        build_palm_detector('full', weights=tmp_path / 'nope.pt')


# ----------------------------------------------------------------------------------------------
# conversion and parity with MediaPipe's .tflite
# ----------------------------------------------------------------------------------------------
def test_shipped_weights_equal_a_fresh_conversion(palm_tflite, tmp_path):
    pytest.importorskip('tflite', reason='the converter needs the "tflite" package (pip install tflite)')
    from modelscope_handkp.detection.tflite_convert import convert_palm_detector
    variant, src = palm_tflite
    out = convert_palm_detector(src, tmp_path, variant)
    fresh = torch.load(out, weights_only=True)
    shipped = torch.load(default_weights_path(variant), weights_only=True)
    assert sorted(fresh) == sorted(shipped)
    for k in fresh:
        assert fresh[k].dtype == torch.float32 and torch.equal(fresh[k], shipped[k]), k
    info = json.loads(out.with_suffix('.json').read_text())
    assert info['num_parameters'] == {'full': 1136248, 'lite': 963064}[variant]
    with pytest.raises(FileExistsError, match='overwrite'):
        convert_palm_detector(src, tmp_path, variant)
    other = 'lite' if variant == 'full' else 'full'
    from modelscope_handkp.detection.tflite_convert import read_tflite, tflite_to_state_dict
    with pytest.raises(ValueError, match=f'palm_detection_{other}'):
        tflite_to_state_dict(read_tflite(src), other)


def _palm_backend_param(kind):
    import importlib.util
    missing = [m for m in ((kind, 'onnx') if kind != 'eager' else ()) if importlib.util.find_spec(m) is None]
    return pytest.param(kind, marks=[pytest.mark.skip(reason=f'{" and ".join(missing)} not installed')] if missing
                        else [])


PALM_BACKEND_PARAMS = [_palm_backend_param(k) for k in ('eager', 'openvino', 'onnxruntime')]


@pytest.mark.parametrize('backend', PALM_BACKEND_PARAMS)
def test_raw_outputs_and_palms_match_tflite(palm_tflite, data_dir, backend):
    Interpreter = _interpreter_class()
    variant, src = palm_tflite
    interp = Interpreter(model_path=str(src), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    assert list(inp['shape']) == [1, 192, 192, 3]
    det = build_palm_detector(variant, backend=backend)
    assert (det.runtime is None) == (backend == 'eager') and (det.runtime is None or det.runtime.kind == backend)
    images = [_rgb(p) for p in _shared_images(data_dir)]
    x, pads = det.preprocess(images)
    regs, logits = (t.numpy() for t in det.forward_raw(x))  # one batched forward
    n_palms, worst_reg, worst_score, worst_px = 0, 0.0, 0.0, 0.0
    for i, im in enumerate(images):
        interp.set_tensor(inp['index'], np.ascontiguousarray(x[i:i + 1].permute(0, 2, 3, 1).numpy()))
        interp.invoke()
        out = {tuple(d['shape']): interp.get_tensor(d['index'])[0] for d in interp.get_output_details()}
        ref_reg, ref_score = out[(1, 2016, 18)], out[(1, 2016, 1)]
        # float32 round-off only: <= 1e-4 relative to each output's magnitude
        worst_reg = max(worst_reg, np.abs(regs[i] - ref_reg).max() / np.abs(ref_reg).max())
        worst_score = max(worst_score, np.abs(logits[i] - ref_score).max() / np.abs(ref_score).max())
        size = (im.shape[1], im.shape[0])
        ours = det.postprocess(regs[i], logits[i], pads[i], size)
        theirs = det.postprocess(ref_reg, ref_score, pads[i], size)
        assert len(ours) == len(theirs)
        if len(ours):
            worst_px = max(worst_px, np.abs(ours.boxes - theirs.boxes).max(),
                           np.abs(ours.keypoints - theirs.keypoints).max())
        n_palms += len(ours)
    assert worst_reg <= 1e-4 and worst_score <= 1e-4, (worst_reg, worst_score)
    assert n_palms >= 15  # the box comparison is not vacuous
    assert worst_px <= 0.5, worst_px


def test_palm_backend_choice_and_run_time_fallback(monkeypatch, caplog, tmp_path):
    import importlib.util
    monkeypatch.setenv('MODELSCOPE_HANDKP_CACHE', str(tmp_path))
    with pytest.raises(ValueError, match="unknown palm detector backend 'fast'.*'auto', 'eager'"):
        build_palm_detector(backend='fast')
    eager = build_palm_detector(backend='eager')
    assert eager.runtime is None
    auto = build_palm_detector()
    have = [k for k in ('openvino', 'onnxruntime') if importlib.util.find_spec(k) and importlib.util.find_spec('onnx')]
    assert (auto.runtime.kind if auto.runtime else None) == (have[0] if have else None)
    x = torch.rand(3, 3, 192, 192, generator=torch.Generator().manual_seed(1))
    ref = eager.forward_raw(x)
    got = auto.forward_raw(x)
    assert all(float((g - r).abs().max()) <= 2e-3 for g, r in zip(got, ref))
    if auto.runtime is None:
        pytest.skip('no OpenVINO / ONNX Runtime here: the run-time fallback has nothing to fall back from')
    assert list((tmp_path / 'onnx').glob('palm_detector_full-*.onnx'))  # exported once into the cache

    def broken(_x):
        raise RuntimeError('device lost')
    monkeypatch.setattr(type(auto.runtime), '__call__', lambda self, _x: broken(_x))
    with caplog.at_level('WARNING'):
        again = auto.forward_raw(x)
    assert 'device lost' in caplog.text and 'continuing with eager PyTorch' in caplog.text
    assert auto.backend == 'eager' and auto.runtime is None
    assert all(torch.equal(g, r) for g, r in zip(again, ref))


# ----------------------------------------------------------------------------------------------
# real images
# ----------------------------------------------------------------------------------------------
def test_finds_the_onehand10k_hands(full_detector, data_dir):
    folder = data_dir / 'hands' / 'onehand10k'
    gt = _gt_hands(folder / 'test_onehand10k.json')
    assert len(gt) == 4
    for name, hands in gt.items():
        p = full_detector.palms(_rgb(folder / name))
        assert 1 <= len(p) <= 2, name
        corners = p.corners()
        for box, kps, _ in hands:
            assert any(_covers(corners[j], p.centers[j], p.sizes[j], p.rotations[j], box, kps)
                       for j in range(len(p))), name
        assert p.scores[0] > 0.85


def test_detect_and_detect_hands_api(full_detector, data_dir):
    assert isinstance(full_detector, PalmDetector) and isinstance(full_detector, HandDetector)
    from modelscope_handkp.detection import build_palm_detector as exported
    assert exported is build_palm_detector
    img = _rgb(data_dir / 'hands' / 'onehand10k' / '784.jpg')
    d = full_detector.detect_hands(img)
    assert isinstance(d, Detections) and len(d) == 1
    # the hand points up-right: rotation ~ +32 deg
    assert 25 < d.rotations[0] < 40
    w = d.boxes[0, 2] - d.boxes[0, 0]
    assert abs(w - (d.boxes[0, 3] - d.boxes[0, 1])) < 1e-3  # square in the hand's frame
    arr = full_detector.detect(img)
    assert arr.dtype == np.float32 and arr.shape == (1, 5)
    # the axis-aligned box encloses the rotated square: side * (|cos r| + |sin r|)
    r = math.radians(d.rotations[0])
    np.testing.assert_allclose(arr[0, 2] - arr[0, 0], w * (abs(math.cos(r)) + abs(math.sin(r))), rtol=1e-5)
    np.testing.assert_allclose((arr[0, :2] + arr[0, 2:4]) / 2, (d.boxes[0, :2] + d.boxes[0, 2:]) / 2, atol=1e-3)
    clipped = full_detector.detect(img, clip=True)
    assert clipped[0, 0] >= 0 and clipped[0, 2] <= img.shape[1] and clipped[0, 3] <= img.shape[0]
    assert arr[0, 0] < 0  # the unclipped box goes past the left border
    assert full_detector.detect(np.zeros((100, 80, 3), np.uint8)).shape == (0, 5)
    assert full_detector.detect_hands(np.zeros((100, 80, 3), np.uint8)).boxes.shape == (0, 4)


def test_batched_list_equals_single_images(full_detector, data_dir):
    paths = sorted((data_dir / 'hands' / 'panoptic').glob('*.jpg'))[:2] + \
        sorted((data_dir / 'hands' / 'onehand10k').glob('*.jpg'))[:2]
    images = [_rgb(p) for p in paths]
    batched = full_detector.detect_hands(images)
    assert isinstance(batched, list) and len(batched) == len(images)
    for im, b in zip(images, batched):
        s = full_detector.detect_hands(im)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-3)
        np.testing.assert_allclose(b.rotations, s.rotations, atol=1e-3)
        np.testing.assert_allclose(b.scores, s.scores, atol=1e-5)
    assert sum(len(b) for b in batched) >= 4


def test_rotation_sign_matches_the_affine_crop(full_detector, data_dir):
    """A crop with the detector's rotation shows the hand upright (transforms.get_affine_matrix)."""
    from modelscope_handkp.transforms import get_affine_matrices, warp_crops
    folder = data_dir / 'hands' / 'onehand10k'
    gt = _gt_hands(folder / 'test_onehand10k.json')
    checked = 0
    for name in sorted(gt):
        img = _rgb(folder / name)
        p = full_detector.palms(img)
        scales = np.repeat(p.sizes[:, None] / 200.0, 2, 1)
        crops = warp_crops(img, p.centers, scales, p.rotations, (256, 256))
        assert crops.shape == (len(p), 256, 256, 3)
        mats = get_affine_matrices(p.centers, scales, p.rotations, (256, 256))
        for j in range(len(p)):
            m = mats[j]
            # palm keypoints: middle-finger MCP (2) exactly above the wrist (0) in the crop
            k = p.keypoints[j] @ m[:, :2].T + m[:, 2]
            v = k[2] - k[0]
            assert v[1] < 0 and abs(v[0]) < 1e-3 * abs(v[1]), (name, v)
            # the hand rect centre is the crop centre
            np.testing.assert_allclose(p.centers[j] @ m[:, :2].T + m[:, 2], [128, 128], atol=1e-3)
            gk = gt[name][0][2]
            if j == 0 and gk[0, 2] > 0 and gk[9, 2] > 0:  # GT middle-finger MCP above the GT wrist
                g = gk[:, :2] @ m[:, :2].T + m[:, 2]
                gv = g[9] - g[0]
                assert math.degrees(math.atan2(abs(gv[0]), -gv[1])) < 30, (name, gv)
                checked += 1
    assert checked == 2  # 33.jpg and 1402.jpg have both points visible


def test_rotating_the_image_rotates_the_hand(full_detector, data_dir):
    img = _rgb(data_dir / 'hands' / 'onehand10k' / '9.jpg')
    a = full_detector.detect_hands(img)
    b = full_detector.detect_hands(np.ascontiguousarray(np.rot90(img)))  # turned 90 deg counter-clockwise
    assert len(a) == len(b) == 1
    diff = (b.rotations[0] - a.rotations[0] + 180) % 360 - 180
    assert abs(diff + 90) < 15, (a.rotations, b.rotations)  # a wrong sign would give +90
    # np.rot90 maps (x, y) -> (y, W - 1 - x)
    ca = (a.boxes[0, :2] + a.boxes[0, 2:]) / 2
    cb = (b.boxes[0, :2] + b.boxes[0, 2:]) / 2
    np.testing.assert_allclose(cb, [ca[1], img.shape[1] - 1 - ca[0]], atol=6)


def test_convert_palm_detector_checks_the_tflite_parser_before_downloading(tmp_path, monkeypatch):
    """Without the "tflite" package the conversion stops before fetching the mediapipe wheel (tens of
    MB that could not be read anyway), naming the pip package; a missing .tflite path is named as such."""
    import sys

    from modelscope_handkp.detection import tflite_convert as tc
    fetched = []
    monkeypatch.setattr(tc, 'fetch_palm_tflite', lambda *a, **k: fetched.append(a) or tmp_path / 'x.tflite')
    monkeypatch.setitem(sys.modules, 'tflite', None)  # import tflite -> ImportError
    with pytest.raises(ImportError, match=r'pip install "tflite'):
        tc.convert_palm_detector(None, tmp_path / 'out')
    assert fetched == [] and not (tmp_path / 'out').exists()
    monkeypatch.delitem(sys.modules, 'tflite')
    pytest.importorskip('tflite')
    with pytest.raises(FileNotFoundError, match=r'missing\.tflite does not exist: pass the path of '
                                                r'palm_detection_full\.tflite, or no path to fetch it'):
        tc.convert_palm_detector(tmp_path / 'missing.tflite', tmp_path / 'out')
    assert fetched == []


def test_palm_openvino_runtime_is_safe_to_share_between_threads():
    """One palm detector (so one OpenVINO infer request) called from several threads gives each thread
    its own outputs: unguarded, a busy request raised or a re-run request handed over another thread's."""
    pytest.importorskip('openvino')
    pytest.importorskip('onnx')
    det = build_palm_detector('full', backend='openvino')
    g = torch.Generator().manual_seed(3)
    inputs = [torch.rand(n, 3, 192, 192, generator=g).numpy() for n in (1, 2, 1)]
    calls = [lambda x=x: det.runtime(x) for x in inputs]
    same = lambda a, b: np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # noqa: E731
    assert thread_mismatches(calls, same, rounds=8) == []


# ----------------------------------------------------------------------------------------------
# review fixes
# ----------------------------------------------------------------------------------------------
def test_one_pil_image_or_tensor_is_one_image(full_detector, data_dir):
    from PIL import Image
    img = _rgb(data_dir / 'hands' / 'onehand10k' / '784.jpg')
    ref = full_detector.detect_hands(img)
    assert len(ref) == 1
    for one in (Image.fromarray(img), torch.from_numpy(img)):  # not a list of H rows
        got = full_detector.detect_hands(one)
        assert isinstance(got, Detections)
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-3)
        np.testing.assert_allclose(got.rotations, ref.rotations, atol=1e-3)
        np.testing.assert_allclose(full_detector.detect(one), full_detector.detect(img), atol=1e-3)
    batch = full_detector.detect(torch.from_numpy(np.stack([img, img])))  # [N, H, W, C]: a batch
    assert isinstance(batch, list) and len(batch) == 2


def _smooth_scene(w, h):
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(h) + 0.5) / h
    g = 128 + 60 * np.sin(2 * np.pi * 7 * u)[None, :] + 50 * np.cos(2 * np.pi * 2 * v)[:, None]
    return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[:, :, None], 3, 2)


def test_panorama_wider_than_opencv_warps_allow():
    """Sides >= 32767 px (OpenCV's warp limit) work: the letterbox and the tile tensors show the same
    picture as for the same scene at a tenth of the size."""
    det = build_palm_detector('lite', backend='eager', tiles={'mode': 'always', 'min_side': 1})
    seen = []
    forward = det.forward_raw
    det.forward_raw = lambda x: (seen.append(x.clone()), forward(x))[1]
    big = det.palms(_smooth_scene(36000, 600))
    n_big = len(seen)
    det.palms(_smooth_scene(3600, 60))
    assert big.image_size == (36000, 600) and n_big == len(seen) - n_big == 2  # whole image, then tiles
    a, b = torch.cat(seen[:n_big]), torch.cat(seen[n_big:])
    assert a.shape == b.shape == (1 + 5, 3, 192, 192)
    diff = (a - b).abs().mul(255).flatten(1).mean(1)
    assert (diff < 0.5).all(), diff  # a wrong mapping from the shrunk copy gives 2-9 here
    assert det.detect(np.zeros((5, 40000, 3), np.uint8)).shape == (0, 5)
    assert det.detect(np.zeros((33000, 3), np.uint8)).shape == (0, 5)


def test_conversion_failing_midway_leaves_the_old_pair_of_files(tmp_path, monkeypatch):
    """The .pt went through a fixed '.pt.part' name and the .json was written in place after it: a failure
    could leave a new .pt next to the old .json (or a .part file behind)."""
    from modelscope_handkp.detection import tflite_convert as tc
    (tmp_path / 'palm_detection_lite.pt').write_bytes(b'old weights')
    (tmp_path / 'palm_detection_lite.json').write_text('{"old": true}\n')
    src = tmp_path / 'x.tflite'
    src.write_bytes(b'stub')
    monkeypatch.setattr(tc, '_import_tflite', lambda: None)
    monkeypatch.setattr(tc, 'read_tflite', lambda path: None)
    monkeypatch.setattr(tc, 'tflite_to_state_dict', lambda graph, variant: (
        {'w': torch.ones(2)}, {'tflite_sha256': tc.TFLITE_SHA256[variant], 'bad': object()}))  # not JSON
    with pytest.raises(TypeError, match='not JSON serializable'):
        tc.convert_palm_detector(src, tmp_path, 'lite', overwrite=True)
    assert (tmp_path / 'palm_detection_lite.pt').read_bytes() == b'old weights'
    assert (tmp_path / 'palm_detection_lite.json').read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['palm_detection_lite.json', 'palm_detection_lite.pt',
                                                         'x.tflite']
    monkeypatch.setattr(tc, 'tflite_to_state_dict', lambda graph, variant: (
        {'w': torch.ones(2)}, {'tflite_sha256': tc.TFLITE_SHA256[variant]}))
    out = tc.convert_palm_detector(src, tmp_path, 'lite', overwrite=True)
    assert torch.equal(torch.load(out, weights_only=True)['w'], torch.ones(2))
    assert json.loads((tmp_path / 'palm_detection_lite.json').read_text())['tflite_sha256'] == tc.TFLITE_SHA256['lite']
