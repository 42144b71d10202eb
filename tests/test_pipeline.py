"""The registered ModelScope pipeline on the published (EasyCV) layout and on this plugin's layout:
parity with the original code, all hands per image, inputs and colour order, no network, no code
execution, no plugin installation."""
from __future__ import annotations

import importlib
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from modelscope.outputs import OutputKeys
from modelscope.pipelines import pipeline
from modelscope.utils.constant import Tasks
from PIL import Image

import modelscope_handkp
from modelscope_handkp import compat
from modelscope_handkp import model_dir as md
from modelscope_handkp.detection.base import Detections, HandDetector
from modelscope_handkp.pipeline import HandKeypointsPipeline, NoDetectorError

from test_model_dir import converted_dir, official_dir, tiny_dir  # noqa: F401  (session fixtures)

TASK = Tasks.hand_2d_keypoints


def xyxy(boxes_xywh):
    b = np.asarray(boxes_xywh, np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


@pytest.fixture(scope='module')
def hands(official_dir):
    """The pipeline of the official-like directory, built by ModelScope's plain pipeline() call
    (eager backend: the spies below watch the model itself)."""
    return pipeline(TASK, model=str(official_dir), backend='eager')


@pytest.fixture(scope='module')
def tiny(tiny_dir):
    """A fast pipeline (tiny HRNet, whole-image detector) for the plumbing tests."""
    return pipeline(TASK, model=str(tiny_dir), backend='eager')


class Spy:
    """Wraps model.forward_heatmaps: records every call; optionally answers with given heatmaps."""

    def __init__(self, model, answer=None):
        self.model, self.answer, self.calls = model, answer, []
        self.real = model.forward_heatmaps

    def __call__(self, images, flip_test=None):
        self.calls.append((images.detach().clone(), flip_test))
        if self.answer is not None:
            return torch.from_numpy(self.answer(images))
        return self.real(images, flip_test=flip_test)


class FixedDetector(HandDetector):
    """Test double: returns the same detections for every image."""

    def __init__(self, boxes, scores, rotations=None):
        self.dets = Detections(boxes, scores, rotations)
        self.calls = 0

    def detect_hands(self, image_rgb, score_thr=None):
        self.calls += 1
        keep = self.dets.scores >= (0.0 if score_thr is None else score_thr)
        return self.dets.take(np.flatnonzero(keep))


def check_result(out, n):
    assert set(out) >= {OutputKeys.KEYPOINTS, OutputKeys.BOXES, OutputKeys.SCORES}
    kp, boxes, scores = out[OutputKeys.KEYPOINTS], out[OutputKeys.BOXES], out[OutputKeys.SCORES]
    assert kp.shape == (n, 21, 3) and kp.dtype == np.float32
    assert boxes.shape == (n, 4) and boxes.dtype == np.float32
    assert scores.shape == (n, ) and scores.dtype == np.float32
    return kp, boxes, scores


# ----------------------------------------------------------------------------- parity with the original
def test_keypoints_equal_the_original_given_its_heatmaps(hands, topdown_ref, shared_dir, monkeypatch):
    """Number for number: the pipeline's crops are the original's input tensors, and from the original's
    heatmaps it gives the original's keypoints (x, y in image pixels, score) to 1e-3 px."""
    ref_in, ref_hm = topdown_ref['input_tensor'], topdown_ref['heatmaps_flip_avg']

    def answer(images):
        x = images.numpy()
        i = int(np.argmin(np.abs(ref_in - x[:1]).reshape(len(ref_in), -1).max(axis=1)))
        return ref_hm[i:i + 1]

    spy = Spy(hands.model, answer)
    monkeypatch.setattr(hands.model, 'forward_heatmaps', spy)
    boxes = xyxy(topdown_ref['boxes_xywh'])
    for i, rel in enumerate(topdown_ref['image_files']):
        out = hands(str(shared_dir / rel), boxes=boxes[i:i + 1])
        kp, got_boxes, scores = check_result(out, 1)
        images, flip = spy.calls[-1]
        assert flip is True  # the published test_cfg: flip test on
        np.testing.assert_allclose(images.numpy(), ref_in[i:i + 1], rtol=0, atol=1e-6)
        np.testing.assert_allclose(kp[..., :2], topdown_ref['keypoints'][i:i + 1, :, :2], rtol=0, atol=1e-3)
        np.testing.assert_allclose(kp[..., 2], topdown_ref['keypoints'][i:i + 1, :, 2], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got_boxes, boxes[i:i + 1])
        np.testing.assert_array_equal(scores, [1.0])
    assert len(spy.calls) == 4


def test_keypoints_end_to_end_with_the_published_checkpoint_layout(hands, topdown_ref, shared_dir):
    """The whole path with the real network.  DARK decoding of random-weight heatmaps amplifies float32
    rounding (perturbing the reference heatmaps by 1e-7 relative moves one keypoint by 0.1 px), so
    bit-level agreement is asserted above with the original heatmaps; here the heatmaps agree to
    float32 precision and almost every keypoint to 1e-3 px."""
    boxes = xyxy(topdown_ref['boxes_xywh'])
    kps = np.concatenate([hands(str(shared_dir / rel), boxes=boxes[i:i + 1])[OutputKeys.KEYPOINTS]
                          for i, rel in enumerate(topdown_ref['image_files'])])
    ref = topdown_ref['keypoints']
    err = np.abs(kps[..., :2] - ref[..., :2]).max(axis=-1)
    assert np.median(err) < 1e-4
    assert np.mean(err <= 1e-3) >= 0.9, np.sort(err.ravel())[-10:]
    px = topdown_ref['scales'] * 200  # keypoints inside their crop are well conditioned
    inside = ((ref[..., :2] >= topdown_ref['centers'][:, None] - px[:, None] / 2)
              & (ref[..., :2] <= topdown_ref['centers'][:, None] + px[:, None] / 2)).all(-1)
    assert inside.sum() >= 40 and err[inside].max() < 1e-2
    np.testing.assert_allclose(kps[..., 2], ref[..., 2], rtol=1e-5, atol=1e-4)


def test_default_cpu_backend_gives_the_eager_keypoints(official_dir, hands, topdown_ref, shared_dir):
    """pipeline() without backend= runs the fastest installed backend (issue 7) with the same numbers."""
    fast = pipeline(TASK, model=str(official_dir))
    boxes = xyxy(topdown_ref['boxes_xywh'])
    px = topdown_ref['scales'] * 200
    c = topdown_ref['centers']
    for flip in (True, False):
        got, ref = [], []
        for i, rel in enumerate(topdown_ref['image_files']):
            path = str(shared_dir / rel)
            got.append(fast(path, boxes=boxes[i:i + 1], flip_test=flip)[OutputKeys.KEYPOINTS])
            ref.append(hands(path, boxes=boxes[i:i + 1], flip_test=flip)[OutputKeys.KEYPOINTS])
        got, ref = np.concatenate(got), np.concatenate(ref)
        # random weights: a few flat heatmap peaks turn float32 rounding into visible shifts (see above)
        err = np.abs(got[..., :2] - ref[..., :2]).max(axis=-1)
        assert np.median(err) < 1e-4 and np.mean(err <= 1e-3) >= 0.85, np.sort(err.ravel())[-5:]
        inside = ((ref[..., :2] >= c[:, None] - px[:, None] / 2) & (ref[..., :2] <= c[:, None] + px[:, None] / 2)).all(-1)
        assert inside.sum() >= 40 and err[inside].max() < 1e-2
        np.testing.assert_allclose(got[..., 2], ref[..., 2], rtol=1e-4, atol=1e-5)
    from modelscope_handkp.backends import available_backends
    expected = 'onnxruntime' if 'onnxruntime' in available_backends() else 'fused'
    if 'openvino' not in available_backends():
        assert fast.backend.name == expected


def test_flip_test_can_be_switched_off_per_call(hands, topdown_ref, shared_dir, monkeypatch):
    spy = Spy(hands.model, lambda x: topdown_ref['heatmaps_plain'][1:2])
    monkeypatch.setattr(hands.model, 'forward_heatmaps', spy)
    box = xyxy(topdown_ref['boxes_xywh'][1])
    out = hands(str(shared_dir / topdown_ref['image_files'][1]), boxes=box, flip_test=False)
    assert spy.calls[-1][1] is False
    from modelscope_handkp.codec import decode_heatmaps
    coords, scores = decode_heatmaps(topdown_ref['heatmaps_plain'][1:2], topdown_ref['centers'][1:2],
                                     topdown_ref['scales'][1:2])
    np.testing.assert_allclose(out[OutputKeys.KEYPOINTS][..., :2], coords, atol=1e-4)
    np.testing.assert_array_equal(out[OutputKeys.KEYPOINTS][..., 2:], scores)


# ----------------------------------------------------------------------------- all hands
@pytest.fixture(scope='module')
def two_hands(shared_dir, topdown_ref):
    """Two shared samples side by side, with their hands' boxes (x1, y1, x2, y2)."""
    a = cv2.imread(str(shared_dir / topdown_ref['image_files'][0]))  # 238 x 358
    b = cv2.imread(str(shared_dir / topdown_ref['image_files'][2]))  # 224 x 224
    canvas = np.zeros((max(a.shape[0], b.shape[0]), a.shape[1] + b.shape[1], 3), np.uint8)
    canvas[:a.shape[0], :a.shape[1]] = a
    canvas[:b.shape[0], a.shape[1]:] = b
    boxes = xyxy(topdown_ref['boxes_xywh'][[0, 2]])
    boxes[1, [0, 2]] += a.shape[1]
    return canvas, boxes


def test_two_hands_from_a_detector_in_score_order_in_one_forward(hands, two_hands, monkeypatch):
    canvas, boxes = two_hands
    det = FixedDetector(np.concatenate([boxes, [[5, 5, 60, 60]]]), [0.7, 0.9, 0.3])  # third: below 0.5
    monkeypatch.setattr(hands, 'detector', det)
    spy = Spy(hands.model)
    monkeypatch.setattr(hands.model, 'forward_heatmaps', spy)
    out = hands(canvas)  # numpy input: BGR, as cv2.imread gives
    kp, got_boxes, scores = check_result(out, 2)
    assert det.calls == 1
    np.testing.assert_array_equal(scores, np.float32([0.9, 0.7]))
    np.testing.assert_array_equal(got_boxes, boxes[[1, 0]])
    assert len(spy.calls) == 1 and spy.calls[0][0].shape == (2, 3, 256, 256)  # ONE batched forward
    # each hand equals the pipeline run on that box alone (same crop, same network)
    for j, i in enumerate((1, 0)):
        alone = hands(canvas, boxes=boxes[i:i + 1])[OutputKeys.KEYPOINTS][0]
        np.testing.assert_allclose(kp[j, :, 2], alone[:, 2], rtol=1e-5, atol=1e-5)
        assert np.median(np.abs(kp[j, :, :2] - alone[:, :2])) < 1e-3
    # the hands lie where their boxes are: left hand's confident keypoints in the left image, etc.
    assert np.median(kp[1, :, 0]) < 238 < np.median(kp[0, :, 0])
    # with a higher threshold only the best hand remains
    out = hands(canvas, score_threshold=0.8)
    check_result(out, 1)
    np.testing.assert_array_equal(out[OutputKeys.BOXES], boxes[1:2])


def test_every_box_above_the_threshold_of_the_real_detector_gives_a_hand(hands, two_hands):
    """The SSDLite detector of the directory (synthetic weights, so boxes are arbitrary) with a threshold
    that keeps several boxes: one hand per box, best first, each from its own crop."""
    canvas, _ = two_hands
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    dets = hands.detector.detect_hands(rgb, score_thr=0.02)
    scores = np.sort(dets.scores)[::-1]
    assert len(scores) > 5
    thr = float((scores[3] + scores[4]) / 2)  # keeps exactly 4
    out = hands(canvas, score_threshold=thr)
    kp, boxes, got_scores = check_result(out, 4)
    top = dets.take(np.argsort(-dets.scores, kind='stable')[:4])
    np.testing.assert_array_equal(got_scores, top.scores)
    np.testing.assert_array_equal(boxes, top.boxes)
    assert np.all(np.diff(got_scores) <= 0)
    same = hands(canvas, boxes=top.boxes)[OutputKeys.KEYPOINTS]
    np.testing.assert_array_equal(kp, same)


def test_no_hands_gives_empty_arrays(hands, two_hands, monkeypatch):
    canvas, _ = two_hands
    monkeypatch.setattr(hands, 'detector', FixedDetector(np.zeros((0, 4)), np.zeros(0)))
    spy = Spy(hands.model)
    monkeypatch.setattr(hands.model, 'forward_heatmaps', spy)
    check_result(hands(canvas), 0)
    check_result(hands(canvas, boxes=[]), 0)
    check_result(hands(canvas, boxes=np.zeros((0, 4))), 0)
    assert spy.calls == []  # no forward at all


# ----------------------------------------------------------------------------- inputs
def test_path_pil_and_numpy_inputs_and_colour_order(tiny, topdown_ref, shared_dir):
    hands = tiny
    path = str(shared_dir / topdown_ref['image_files'][2])
    box = xyxy(topdown_ref['boxes_xywh'][2])
    bgr = cv2.imread(path)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    ref = hands(path, boxes=box)[OutputKeys.KEYPOINTS]
    for image, kwargs in ((Path(path), {}), (Image.open(path), {}), (bgr, {}), (rgb, {'input_color': 'rgb'})):
        np.testing.assert_array_equal(hands(image, boxes=box, **kwargs)[OutputKeys.KEYPOINTS], ref)
    swapped = hands(rgb, boxes=box)[OutputKeys.KEYPOINTS]  # RGB passed as if BGR: a different image
    assert not np.array_equal(swapped, ref)
    rgb_pipe = HandKeypointsPipeline(model=hands.model, input_color='rgb', backend='eager')
    np.testing.assert_array_equal(rgb_pipe(rgb, boxes=box)[OutputKeys.KEYPOINTS], ref)


def test_dict_rows_and_an_msdataset_are_inputs(tiny, topdown_ref, shared_dir, tmp_path, monkeypatch):
    hands = tiny
    monkeypatch.setattr(hands, 'detector', FixedDetector([[40, 60, 160, 200]], [0.9]))
    paths = [str(shared_dir / rel) for rel in topdown_ref['image_files'][:2]]
    refs = [hands(p)[OutputKeys.KEYPOINTS] for p in paths]
    for key in ('image', 'img', 'image:FILE'):
        np.testing.assert_array_equal(hands({key: paths[0]})[OutputKeys.KEYPOINTS], refs[0])
    np.testing.assert_array_equal(hands({'image': Image.open(paths[1]), 'label': 3})[OutputKeys.KEYPOINTS], refs[1])
    with pytest.raises(TypeError, match=r"needs its image under one of the keys.*got the keys \['label'\]"):
        hands({'label': 3})
    # ModelScope iterates an MsDataset (rows {'image': PIL image}) and yields one result per row
    from modelscope.msdatasets import MsDataset
    for i, p in enumerate(paths):
        shutil.copyfile(p, tmp_path / f'{i}.png' if p.endswith('.png') else tmp_path / f'{i}.jpg')
    ds = MsDataset.load(str(tmp_path), split='train')
    out = list(hands(ds))
    assert len(out) == 2
    for result in out:
        check_result(result, 1)
        assert any(np.array_equal(result[OutputKeys.KEYPOINTS], r) for r in refs)


def test_modelscope_service_schema_and_json_call(tiny, topdown_ref, shared_dir):
    """ModelScope's deployment helpers read the pipeline's signatures from its source and call it with
    base64 JSON; both must work (PEP 604 annotations made the schema reader raise)."""
    import base64

    from modelscope.utils.input_output import call_pipeline_with_json, get_pipeline_information_by_pipeline
    info = get_pipeline_information_by_pipeline(tiny)
    params = info.schema['parameters']['properties']
    assert {k: v['type'] for k, v in params.items()} == {
        'input_color': 'string', 'boxes': 'array', 'flip_test': 'boolean', 'score_threshold': 'number'}
    path = str(shared_dir / topdown_ref['image_files'][2])
    box = xyxy(topdown_ref['boxes_xywh'][2])
    b64 = base64.b64encode(Path(path).read_bytes()).decode()
    out = call_pipeline_with_json(info, tiny, {'input': {'image': b64}, 'parameters': {'boxes': box.tolist()}})
    np.testing.assert_array_equal(out[OutputKeys.KEYPOINTS], tiny(path, boxes=box)[OutputKeys.KEYPOINTS])


def test_list_input_and_batched_forward(tiny, topdown_ref, shared_dir, monkeypatch):
    hands = tiny
    paths = [str(shared_dir / rel) for rel in topdown_ref['image_files'][:3]]
    det = FixedDetector([[40, 60, 160, 200]], [0.9])
    monkeypatch.setattr(hands, 'detector', det)
    single = [hands(p) for p in paths]
    listed = hands(paths)
    assert isinstance(listed, list) and len(listed) == 3
    for a, b in zip(single, listed):
        np.testing.assert_array_equal(a[OutputKeys.KEYPOINTS], b[OutputKeys.KEYPOINTS])
    spy = Spy(hands.model)
    monkeypatch.setattr(hands.model, 'forward_heatmaps', spy)
    batched = hands(paths, batch_size=3)
    assert len(spy.calls) == 1 and spy.calls[0][0].shape[0] == 3  # the hands of 3 images, one forward
    for a, b in zip(single, batched):
        check_result(b, 1)
        np.testing.assert_allclose(a[OutputKeys.KEYPOINTS][..., 2], b[OutputKeys.KEYPOINTS][..., 2], rtol=1e-4,
                                   atol=1e-4)
        assert np.median(np.abs(a[OutputKeys.KEYPOINTS][..., :2] - b[OutputKeys.KEYPOINTS][..., :2])) < 1e-3


def test_call_argument_errors(tiny, topdown_ref, shared_dir):
    hands = tiny
    path = str(shared_dir / topdown_ref['image_files'][2])
    with pytest.raises(TypeError, match='unexpected argument'):
        hands(path, box=[0, 0, 10, 10])
    with pytest.raises(ValueError, match=r'score_threshold must be a number in \[0, 1\]'):
        hands(path, score_threshold=2)
    with pytest.raises(ValueError, match="input_color must be 'bgr'"):
        hands(path, boxes=[[0, 0, 10, 10]], input_color='hsv')
    with pytest.raises(TypeError, match='unsupported image input'):
        hands(12345)


# ----------------------------------------------------------------------------- model directories
def test_our_format_gives_the_same_results(hands, converted_dir, topdown_ref, shared_dir):
    ours = pipeline(TASK, model=str(converted_dir), backend='eager')
    assert isinstance(ours, HandKeypointsPipeline) and ours.model.spec.format == md.FORMAT_HANDKP
    assert ours.score_threshold == 0.5 and type(ours.detector).__name__ == 'SSDLiteHandDetector'
    path = str(shared_dir / topdown_ref['image_files'][3])
    box = xyxy(topdown_ref['boxes_xywh'][3])
    np.testing.assert_array_equal(ours(path, boxes=box, flip_test=False)[OutputKeys.KEYPOINTS],
                                  hands(path, boxes=box, flip_test=False)[OutputKeys.KEYPOINTS])


def test_detector_choice(tiny_dir, topdown_ref, shared_dir):
    path = str(shared_dir / topdown_ref['image_files'][2])
    whole = pipeline(TASK, model=str(tiny_dir))
    out = whole(path)
    check_result(out, 1)
    np.testing.assert_array_equal(out[OutputKeys.BOXES], [[0, 0, 224, 224]])
    none = pipeline(TASK, model=str(tiny_dir), detector='none')
    with pytest.raises(NoDetectorError, match='pass boxes='):
        none(path)
    check_result(none(path, boxes=[[10, 10, 100, 100]]), 1)
    rotated = pipeline(TASK, model=str(tiny_dir), detector=FixedDetector([[60, 80, 160, 140]], [0.8], [90.0]))
    out = rotated(path)
    np.testing.assert_allclose(out[OutputKeys.BOXES], [[80, 60, 140, 160]], atol=1e-4)  # enclosing box
    np.testing.assert_array_equal(out['rotations'], [90.0])


def _block_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f'network access attempted: {a[:2]}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    from modelscope.hub.api import HubApi
    for name in ('get_model', 'get_model_files', 'get_valid_revision', 'get_valid_revision_detail'):
        if hasattr(HubApi, name):
            monkeypatch.setattr(HubApi, name, refuse)
    for mod_name in ('modelscope.pipelines.builder', 'modelscope.pipelines.base', 'modelscope.utils.hub',
                     'modelscope.models.base.base_model', 'modelscope.preprocessors.base', 'modelscope.hub.snapshot_download',
                     'modelscope.hub.file_download'):
        mod = importlib.import_module(mod_name)
        for fn in ('snapshot_download', 'model_file_download'):
            if hasattr(mod, fn):
                monkeypatch.setattr(mod, fn, refuse)
    import modelscope.utils.plugins as plugins
    monkeypatch.setattr(plugins, 'install_requirements_by_names', refuse)
    monkeypatch.setattr(plugins, 'get_modules_from_package', refuse)
    monkeypatch.setattr(plugins.PluginsManager, 'pip_command', refuse, raising=False)


def test_local_dirs_make_no_network_request_and_install_nothing(official_dir, converted_dir, topdown_ref,
                                                                 shared_dir, monkeypatch, tmp_path):
    _block_network(monkeypatch)
    path = str(shared_dir / topdown_ref['image_files'][2])
    box = xyxy(topdown_ref['boxes_xywh'][2])
    # a relative path shaped like a hub id ("owner/name") too
    (tmp_path / 'damo').mkdir()
    (tmp_path / 'damo' / 'hands').symlink_to(official_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for model in (str(official_dir), str(converted_dir), 'damo/hands'):
        p = pipeline(TASK, model=model)
        check_result(p(path, boxes=box, flip_test=False), 1)
    from modelscope.models import Model
    assert Model.from_pretrained('damo/hands').spec.format == md.FORMAT_EASYCV


def test_no_code_from_the_model_dir_is_executed(official_dir, tmp_path, topdown_ref, shared_dir):
    d = tmp_path / 'trap'
    import shutil
    shutil.copytree(official_dir, d)
    marker = tmp_path / 'EXECUTED'
    trap = f'open({str(marker)!r}, "w").write("code from the model dir ran")\n'
    for rel in ('ms_wrapper.py', '__init__.py', 'model.py', 'configuration.py', 'detection/__init__.py',
                'detection/ssdlite.py'):
        (d / rel).write_text(trap)
    (d / 'requirements.txt').write_text('definitely-not-a-real-package-handkp\n')
    p = pipeline(TASK, model=str(d))
    check_result(p(str(shared_dir / topdown_ref['image_files'][2]), boxes=xyxy(topdown_ref['boxes_xywh'][2]),
                   flip_test=False), 1)
    assert not marker.exists()


def test_hub_id_and_default_model_use_this_plugin_and_install_nothing(official_dir, monkeypatch):
    """The card code ``pipeline(Tasks.hand_2d_keypoints, model=HUB_ID)`` (and the task's default model),
    with the hub simulated by the local official-like directory."""
    if not compat.serves_official_model():
        pytest.skip('pai-easycv is installed: it serves the published model')
    import modelscope.utils.plugins as plugins
    from modelscope.hub.api import HubApi

    def refuse(*a, **k):
        raise AssertionError('ModelScope tried to install a plugin')

    monkeypatch.setattr(plugins, 'install_requirements_by_names', refuse)
    monkeypatch.setattr(plugins, 'get_modules_from_package', refuse)
    monkeypatch.setattr(HubApi, 'get_model', lambda self, model_id, *a, **k: {
        'Owner': model_id.split('/')[0], 'Name': model_id.split('/')[1]})
    builder = importlib.import_module('modelscope.pipelines.builder')
    hub = importlib.import_module('modelscope.utils.hub')
    monkeypatch.setattr(builder, 'snapshot_download', lambda *a, **k: str(official_dir))
    monkeypatch.setattr(hub, 'model_file_download', lambda *a, **k: str(official_dir / 'configuration.json'))
    for kwargs in ({'model': modelscope_handkp.HUB_MODEL_ID}, {}):
        p = pipeline(TASK, **kwargs)
        assert isinstance(p, HandKeypointsPipeline) and p.model.spec.format == md.FORMAT_EASYCV
        assert p.model.model_dir == str(official_dir)


def test_backend_follows_weight_changes(tiny_dir):
    """The fast backends copy the weights when built: changing them later rebuilds the backend instead of
    silently answering with the old network."""
    img = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    p = pipeline(TASK, model=str(tiny_dir), backend='fused')
    before = p(img)[OutputKeys.KEYPOINTS]
    backend = p.backend
    p(img)
    assert p.backend is backend  # inference alone does not rebuild it
    with torch.no_grad():
        for prm in p.model.hand_model.parameters():
            prm.mul_(0.5)
    after = p(img)[OutputKeys.KEYPOINTS]
    assert p.backend is not backend
    fresh = pipeline(TASK, model=str(tiny_dir), backend='fused')  # built on the changed weights
    fresh.model.hand_model.load_state_dict(p.model.hand_model.state_dict())
    np.testing.assert_allclose(after, fresh(img)[OutputKeys.KEYPOINTS], atol=1e-4)
    assert np.abs(after[..., :2] - before[..., :2]).max() > 0.01
