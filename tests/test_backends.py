"""Inference backends, BatchNorm folding and torch decoding: the same numbers as the eager path.

About the keypoint tolerance: the reference weights are random, and the heatmaps of a random
HRNet have very flat peaks.  DARK's Newton step divides by the peak curvature, so float32
rounding differences of ~1e-7 in the heatmaps (different convolution kernels, folded BN) move
keypoints on the flattest peaks by up to ~0.3 px.  Keypoints are therefore compared at
<= 1e-3 px wherever the peak curvature is >= 0.002 / px^2 (``decode_torch.peak_curvature``; a
trained model's peaks are at ~0.08, the realistic decode fixture at 0.077-0.08), which holds
for ~67 of the 84 fixture keypoints; heatmaps are compared everywhere (relative 1e-5), and the
decoders themselves are compared on identical heatmaps.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from conftest import thread_mismatches

from modelscope_handkp import backends, codec, decode_torch
from modelscope_handkp.backends import make_backend, model_fingerprint
from modelscope_handkp.checkpoint import load_checkpoint
from modelscope_handkp.models import build_hand_model, hrnet_extra, hrnet_model_cfg
from modelscope_handkp.models.fuse import conv_bn_pairs, fold_batchnorm, is_folded

ROOT = Path(__file__).resolve().parents[1]
MIN_CURVATURE = 0.002
KP_TOL = 1e-3
HAS_ORT = importlib.util.find_spec('onnxruntime') is not None and importlib.util.find_spec('onnx') is not None
HAS_OV = importlib.util.find_spec('openvino') is not None and importlib.util.find_spec('onnx') is not None


def _kind_param(kind):
    marks = []
    if kind == 'onnxruntime' and not HAS_ORT:
        marks.append(pytest.mark.skip(reason='onnxruntime/onnx not installed (pip install -e .[onnx])'))
    if kind == 'openvino' and not HAS_OV:
        marks.append(pytest.mark.skip(reason='openvino not installed (optional backend: pip install openvino)'))
    return pytest.param(kind, marks=marks)


FAST_KINDS = [_kind_param(k) for k in ('fused', 'onnxruntime', 'openvino')]


@pytest.fixture(scope='module', autouse=True)
def onnx_cache(tmp_path_factory):
    """Exported graphs go to a temporary cache shared by this module's tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv('MODELSCOPE_HANDKP_CACHE', str(tmp_path_factory.mktemp('handkp-cache')))
    yield
    mp.undo()


@pytest.fixture(scope='module')
def model(hrnet_synth_state_dict):
    m = build_hand_model()
    load_checkpoint(m, hrnet_synth_state_dict)
    return m.eval()


@pytest.fixture(scope='module')
def eager(model):
    return make_backend(model, 'eager')


@pytest.fixture(scope='module')
def built(model):
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = make_backend(model, kind)
        return cache[kind]
    return get


def _inputs(ref):
    return torch.from_numpy(ref['input_tensor']), ref['centers'], ref['scales']


# ---------------------------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------------------------
def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2, generator=g)
            m.running_var.uniform_(0.3, 3.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.2, generator=g)
    return model


def test_fold_batchnorm_hrnet_equal_and_eval_only():
    cfg = hrnet_model_cfg(hrnet_extra(width=8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1), image_size=(64, 64))
    torch.manual_seed(0)
    m = _randomise_bn(build_hand_model(cfg)).eval()
    n_bn = sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    folded = fold_batchnorm(m)
    assert is_folded(folded) and not is_folded(m)
    assert folded.num_folded_bn == n_bn == 54  # every BN of HRNet follows a conv
    assert not any(isinstance(x, nn.BatchNorm2d) for x in folded.modules())
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == n_bn  # original untouched
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref, out = m(x), folded(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert folded.input_size == m.input_size and hasattr(folded, 'forward_heatmaps')
    folded.eval()  # allowed
    with pytest.raises(RuntimeError, match='folded'):
        folded.train()


def test_fold_skips_conv_whose_output_is_also_used_elsewhere():

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y + self.bn2(self.conv2(y))  # conv output feeds bn AND the sum

    m = _randomise_bn(Branchy()).eval()
    assert conv_bn_pairs(m) == [('conv2', 'bn2')]
    folded = fold_batchnorm(m)
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.bn2, nn.Identity)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x), atol=1e-5)


def test_fold_untraceable_model_falls_back_to_sequentials():

    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU())

        def forward(self, x):
            if x.sum() > 0:  # not traceable by torch.fx
                return self.body(x)
            return self.body(-x)

    m = _randomise_bn(DataDependent()).eval()
    assert conv_bn_pairs(m) == [('body.0', 'body.1')]
    folded = fold_batchnorm(m)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# torch decoding (what the fast backends and the ONNX graph use)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('blur', ['full', 'local'])
@pytest.mark.parametrize('mode,key', [('unbiased', 'unbiased'), ('default', 'default'), (None, 'none')])
def test_decode_torch_parity(decode_ref, mode, key, blur):
    hm = torch.from_numpy(decode_ref['heatmaps'])
    coords, scores = decode_torch.decode_heatmaps(hm, torch.from_numpy(decode_ref['centers']),
                                                  torch.from_numpy(decode_ref['scales']), mode, 11, blur=blur)
    assert coords.dtype == torch.float32 and coords.shape == (6, 21, 2) and scores.shape == (6, 21, 1)
    assert np.abs(coords.numpy() - decode_ref[f'preds_{key}']).max() <= KP_TOL
    assert np.abs(scores.numpy() - decode_ref[f'maxvals_{key}']).max() <= 1e-6
    ours, _ = codec.decode_heatmaps(decode_ref['heatmaps'], decode_ref['centers'], decode_ref['scales'], mode, 11)
    assert np.abs(coords.numpy() - ours).max() <= KP_TOL
    if mode == 'unbiased':  # DARK actually moved the points (not a plain argmax)
        argmax, _ = codec.decode_heatmaps(decode_ref['heatmaps'], decode_ref['centers'], decode_ref['scales'], None)
        assert np.abs(coords.numpy() - argmax).max() > 0.5


@pytest.mark.parametrize('blur', ['full', 'local'])
def test_decode_torch_rotations_equal_codec(decode_ref, blur):
    rot = np.array([0.0, 12.5, -30.0, 90.0, 181.0, -45.0], np.float32)
    ref, _ = codec.decode_heatmaps(decode_ref['heatmaps'], decode_ref['centers'], decode_ref['scales'], rotations=rot)
    got, _ = decode_torch.decode_heatmaps(torch.from_numpy(decode_ref['heatmaps']), torch.from_numpy(decode_ref['centers']),
                                          torch.from_numpy(decode_ref['scales']), rotations=torch.from_numpy(rot),
                                          blur=blur)
    assert np.abs(got.numpy() - ref).max() <= KP_TOL
    plain, _ = codec.decode_heatmaps(decode_ref['heatmaps'], decode_ref['centers'], decode_ref['scales'])
    assert np.abs(ref[1:] - plain[1:]).max() > 1.0  # the rotations matter


def test_decode_torch_local_fallback_where_log_clamp_is_active():
    """Maps whose blurred values near the peak are <= 0: the 1e-10 clamp of the log matters, and
    the local shortcut must hand them to the exact full-map path."""
    rng = np.random.default_rng(3)
    hm = rng.normal(0, 0.05, (2, 4, 64, 64)).astype(np.float32)
    hm[0, 0] -= 1.0
    hm[0, 0, 30, 31] = 0.5  # a lone positive spike in a negative map: the blur is negative around it
    hm[1, 2] = -np.abs(hm[1, 2])
    hm[1, 2, 20, 40] = 0.3
    hm[1, 2, 20, 41] = 0.2
    centers = np.array([[100.0, 80.0], [300.0, 200.0]], np.float32)
    scales = np.array([[1.0, 1.0], [2.0, 2.0]], np.float32)
    ref, ref_s = codec.decode_heatmaps(hm, centers, scales)
    t = torch.from_numpy(hm)
    full, _ = decode_torch.decode_heatmaps(t, torch.from_numpy(centers), torch.from_numpy(scales), blur='full')
    local, local_s = decode_torch.decode_heatmaps(t, torch.from_numpy(centers), torch.from_numpy(scales), blur='local')
    well = decode_torch.peak_curvature(torch.from_numpy(hm)).numpy() >= MIN_CURVATURE
    assert np.abs(local.numpy() - ref)[well].max() <= KP_TOL
    assert np.abs(full.numpy() - ref)[well].max() <= KP_TOL
    assert np.array_equal(local.numpy()[0, 0], full.numpy()[0, 0])  # the clamped maps: exact path
    assert np.abs(local.numpy()[0, 0] - ref[0, 0]).max() <= KP_TOL
    assert np.abs(local_s.numpy() - ref_s).max() == 0.0


def test_decode_torch_empty_and_tensor_types():
    c, s = decode_torch.decode_heatmaps(torch.zeros(0, 21, 64, 64), torch.zeros(0, 2), torch.zeros(0, 2))
    assert c.shape == (0, 21, 2) and s.shape == (0, 21, 1)
    with pytest.raises(ValueError, match='post_process'):
        decode_torch.decode_heatmaps(torch.zeros(1, 21, 64, 64), torch.zeros(1, 2), torch.ones(1, 2), 'megvii')


def test_peak_curvature_of_realistic_and_random_maps(decode_ref, topdown_ref):
    real = decode_torch.peak_curvature(torch.from_numpy(decode_ref['heatmaps'])).numpy()
    assert real.min() == pytest.approx(0.0766, abs=0.002)  # sigma-3 peaks: ~1 / (9 + 4)
    rand = decode_torch.peak_curvature(torch.from_numpy(topdown_ref['heatmaps_flip_avg'])).numpy()
    assert (rand < MIN_CURVATURE).sum() == 17 and np.isinf(rand).sum() == 48


def test_original_like_baseline_decodes_like_the_codec(decode_ref):
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    try:
        from original_like import keypoints_from_heatmaps_loop
    finally:
        sys.path.remove(str(ROOT / 'benchmarks'))
    for mode, key in (('unbiased', 'unbiased'), ('default', 'default'), (None, 'none')):
        coords, scores = keypoints_from_heatmaps_loop(decode_ref['heatmaps'], decode_ref['centers'],
                                                      decode_ref['scales'], mode)
        assert np.abs(coords - decode_ref[f'preds_{key}']).max() <= 1e-4
        assert np.abs(scores - decode_ref[f'maxvals_{key}']).max() == 0.0


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------
def _tiny_model():
    """A narrow HRNet at 64x64 for the tests of backend logic (fast on 2 cores)."""
    cfg = hrnet_model_cfg(hrnet_extra(width=8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1), image_size=(64, 64))
    torch.manual_seed(0)
    return _randomise_bn(build_hand_model(cfg)).eval()


@pytest.fixture(scope='module')
def eager_heatmaps(eager, topdown_ref):
    """Eager heatmaps of the 4 fixture crops, flip test on and off (computed once)."""
    x = torch.from_numpy(topdown_ref['input_tensor'])
    return {flip: eager.heatmaps(x, flip) for flip in (True, False)}


def test_eager_backend_is_model_plus_codec(model, eager, eager_heatmaps, topdown_ref):
    x, centers, scales = _inputs(topdown_ref)
    with torch.no_grad():
        hm = model.forward_heatmaps(x[:1], flip_test=True)
    assert torch.equal(hm, eager.heatmaps(x[:1], True))
    coords, scores = eager.predict(x[:1], centers[:1], scales[:1])
    ref_c, ref_s = codec.decode_heatmaps(hm, centers[:1], scales[:1])
    assert eager.name == 'eager'
    assert coords.dtype == np.float32 and coords.shape == (1, 21, 2) and scores.shape == (1, 21, 1)
    assert np.array_equal(coords, ref_c) and np.array_equal(scores, ref_s)
    # and the EasyCV reference keypoints, where the peaks allow a sub-1e-3 px comparison
    hm4 = eager_heatmaps[True]
    assert float((hm4 - torch.from_numpy(topdown_ref['heatmaps_flip_avg'])).abs().max() / hm4.abs().max()) <= 1e-5
    coords, scores = eager._decode(hm4, centers, scales, None)
    well = decode_torch.peak_curvature(torch.from_numpy(topdown_ref['heatmaps_flip_avg'])).numpy() >= MIN_CURVATURE
    assert np.abs(coords - topdown_ref['keypoints'][..., :2]).max(-1)[well].max() <= KP_TOL
    assert np.abs(scores[..., 0] - topdown_ref['keypoints'][..., 2]).max() <= 1e-4


@pytest.mark.parametrize('flip', [True, False])
@pytest.mark.parametrize('kind', FAST_KINDS)
def test_backend_equals_eager(built, eager, eager_heatmaps, topdown_ref, kind, flip):
    backend = built(kind)
    assert backend.name == kind
    x, centers, scales = _inputs(topdown_ref)
    ref_hm = eager_heatmaps[flip]
    hm = backend.heatmaps(x, flip)
    assert hm.shape == ref_hm.shape == (4, 21, 64, 64) and hm.dtype == torch.float32
    assert float((hm - ref_hm).abs().max() / ref_hm.abs().max()) <= 1e-5  # measured <= 7.3e-7
    ref_c, ref_s = codec.decode_heatmaps(ref_hm, centers, scales)  # = eager.predict
    coords, scores = backend._decode(hm, centers, scales, None)  # = the end of backend.predict
    assert coords.dtype == np.float32 and scores.dtype == np.float32
    diff = np.abs(coords - ref_c).max(-1)
    well = decode_torch.peak_curvature(ref_hm).numpy() >= MIN_CURVATURE
    assert well.sum() >= 60
    assert diff[well].max() <= KP_TOL  # measured <= 6.7e-4 px
    assert diff.max() <= 0.5  # the flattest random peaks (see the module docstring)
    assert np.abs(scores - ref_s).max() <= 1e-5 * np.abs(ref_s).max()


@pytest.mark.parametrize('kind', FAST_KINDS)
def test_backend_predict_with_rotations(built, eager, eager_heatmaps, topdown_ref, kind):
    x, centers, scales = _inputs(topdown_ref)
    rot = np.array([30.0, -75.0], np.float32)
    ref_c, ref_s = codec.decode_heatmaps(eager_heatmaps[True][1:3], centers[1:3], scales[1:3], rotations=rot)
    coords, scores = built(kind).predict(x[1:3], centers[1:3], scales[1:3], rotations=torch.from_numpy(rot))
    well = decode_torch.peak_curvature(eager_heatmaps[True][1:3]).numpy() >= MIN_CURVATURE
    assert np.abs(coords - ref_c).max(-1)[well].max() <= KP_TOL
    assert np.abs(scores - ref_s).max() <= 1e-5 * np.abs(ref_s).max()
    plain, _ = codec.decode_heatmaps(eager_heatmaps[True][1:3], centers[1:3], scales[1:3])
    assert np.abs(plain - ref_c).max() > 1.0  # the rotations matter


@pytest.mark.skipif(not HAS_OV, reason='openvino not installed (optional backend: pip install openvino)')
def test_openvino_streams_cut_batches_without_changing_numbers(model, built, eager_heatmaps, topdown_ref):
    """Batches are cut into one chunk per stream (3 crops -> 2 + 1 here); single crops use the
    latency model.  Every way gives the eager heatmaps, in the order of the crops."""
    backend = built('openvino')
    assert backend.streams == backend.threads and len(backend.requests) == (backend.streams if backend.streams > 1
                                                                             else 0)
    two = backends.OpenVinoBackend(model, num_threads=2, onnx_path=backend.onnx_path, streams=2)
    one = backends.OpenVinoBackend(model, num_threads=2, onnx_path=backend.onnx_path, streams=1)
    assert len(two.requests) == 2 and one.requests == []
    assert two.request is None and one.request is not None  # the latency model waits for a single crop
    x = torch.from_numpy(topdown_ref['input_tensor'])
    ref = eager_heatmaps[False]
    for b in (one, two):
        for idx in ([0, 1, 2], [3], [2, 0, 3, 1]):
            hm = b.heatmaps(x[idx], flip_test=False)
            assert float((hm - ref[idx]).abs().max() / ref.abs().max()) <= 1e-5, (b.streams, idx)
    assert two.request is not None  # compiled for the single crop [3]


@pytest.mark.parametrize('kind', [pytest.param('eager')] + FAST_KINDS)
def test_backend_empty_batch_and_bad_arguments(built, eager, kind):
    backend = eager if kind == 'eager' else built(kind)
    for flip in (True, False):
        coords, scores = backend.predict(torch.zeros(0, 3, 256, 256), np.zeros((0, 2)), np.zeros((0, 2)),
                                         flip_test=flip)
        assert coords.shape == (0, 21, 2) and scores.shape == (0, 21, 1) and coords.dtype == np.float32
        assert backend.heatmaps(torch.zeros(0, 3, 256, 256), flip).shape == (0, 21, 64, 64)
    with pytest.raises(ValueError, match='one center and one scale per crop'):
        backend.predict(torch.zeros(2, 3, 256, 256), np.zeros((1, 2)), np.ones((1, 2)))


def test_auto_picks_the_first_installed_backend():
    m = _tiny_model()
    backend = make_backend(m)  # 'auto'
    expected = next(k for k in backends.AUTO_ORDER if k in backends.available_backends())
    assert backend.name == expected
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m.forward_heatmaps(x, flip_test=True)
    hm = backend.heatmaps(x, True)
    assert float((hm - ref).abs().max() / ref.abs().max()) <= 1e-5


def test_auto_falls_back_to_eager_when_backends_fail(monkeypatch, caplog):

    class Broken(backends._Backend):
        name = 'broken'

        def __init__(self, *a, **k):
            raise RuntimeError('simulated: runtime cannot load the graph')

    monkeypatch.setattr(backends, 'AUTO_ORDER', ('onnxruntime', 'eager'))
    monkeypatch.setitem(backends._CLASSES, 'onnxruntime', Broken)
    with caplog.at_level(logging.WARNING, logger='modelscope_handkp.backends'):
        backend = make_backend(_tiny_model(), 'auto')
    assert backend.name == 'eager'
    assert any('simulated' in r.getMessage() for r in caplog.records)


def test_auto_falls_back_at_run_time(monkeypatch, caplog):
    m = _tiny_model()
    monkeypatch.setattr(backends, 'AUTO_ORDER', ('fused', 'eager'))
    backend = make_backend(m, 'auto', self_check=False)
    assert backend.name == 'fused'

    def boom(batch):
        raise RuntimeError('simulated run-time failure')

    monkeypatch.setattr(backend.backend, '_net', boom)
    x = torch.randn(2, 3, 64, 64)
    centers, scales = np.array([[50.0, 60.0], [10.0, 20.0]]), np.array([[0.5, 0.5], [1.0, 1.0]])
    with caplog.at_level(logging.WARNING, logger='modelscope_handkp.backends'):
        coords, _ = backend.predict(x, centers, scales)
    assert backend.name == 'eager'
    assert any('simulated run-time failure' in r.getMessage() for r in caplog.records)
    ref, _ = make_backend(m, 'eager').predict(x, centers, scales)
    assert np.array_equal(coords, ref)


def test_self_check_rejects_a_wrong_backend(monkeypatch):
    m = _tiny_model()
    monkeypatch.setattr(backends, 'AUTO_ORDER', ('fused', 'eager'))
    original = backends.FusedBackend._net
    monkeypatch.setattr(backends.FusedBackend, '_net', lambda self, b: original(self, b) * 1.01)
    assert make_backend(m, 'auto').name == 'eager'
    with pytest.raises(backends.BackendError, match='differ'):
        make_backend(m, 'fused', self_check=True)


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="'tensorrt'"):
        make_backend(_tiny_model(), 'tensorrt')


def test_fingerprint_follows_weights_and_config():
    cfg = hrnet_model_cfg(hrnet_extra(width=8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1), image_size=(64, 64))
    torch.manual_seed(0)
    a = build_hand_model(cfg)
    b = build_hand_model(cfg)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.keypoint_head.final_layer[-1].bias[0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)
    c = build_hand_model(cfg)
    c.load_state_dict(a.state_dict())
    c.cfg['test_cfg']['modulate_kernel'] = 9
    assert model_fingerprint(a) != model_fingerprint(c)


@pytest.mark.skipif(not HAS_ORT, reason='onnxruntime/onnx not installed (pip install -e .[onnx])')
def test_onnx_graph_is_cached_once_per_model(model, built, monkeypatch):
    first = built('onnxruntime')
    assert first.onnx_path.is_file() and first.onnx_path.parent == backends.onnx_cache_dir()
    stamp = first.onnx_path.stat().st_mtime_ns

    def no_export(*a, **k):
        raise AssertionError('the cached graph should have been reused')

    import modelscope_handkp.export as export_mod
    monkeypatch.setattr(export_mod, 'export_keypoint_net', no_export)
    second = make_backend(model, 'onnxruntime')
    assert second.onnx_path == first.onnx_path and first.onnx_path.stat().st_mtime_ns == stamp


@pytest.mark.parametrize('kernel', [1, 3, 5, 7, 9, 11, 13])
def test_blur_kernel_is_opencvs(kernel):
    # OpenCV uses fixed tables (not the sigma formula) for sizes <= 7: the torch blur must use the same weights
    want = cv2.getGaussianKernel(kernel, 0, ktype=cv2.CV_64F).reshape(-1)
    np.testing.assert_array_equal(decode_torch.gaussian_kernel_1d(kernel, torch.float64).numpy(), want)


@pytest.mark.parametrize('kernel', [3, 5, 7])
def test_decode_torch_small_kernels_equal_codec(decode_ref, kernel):
    args = (decode_ref['heatmaps'], decode_ref['centers'], decode_ref['scales'], 'unbiased', kernel)
    ours, _ = codec.decode_heatmaps(*args)
    got, _ = decode_torch.decode_heatmaps(*(torch.from_numpy(a) for a in args[:3]), 'unbiased', kernel)
    assert np.abs(got.numpy() - ours).max() <= KP_TOL
    at11, _ = codec.decode_heatmaps(*args[:4], 11)
    assert np.abs(ours - at11).max() > 0.01  # the kernel size matters


def test_backends_read_the_kernel_alias():
    # 'kernel' is accepted for 'modulate_kernel' by the model directory; the backends read the same setting
    m = _tiny_model()
    m.cfg['test_cfg'].pop('modulate_kernel', None)
    m.cfg['test_cfg']['kernel'] = 5
    assert make_backend(m, 'eager').kernel == 5
    from modelscope_handkp.export import KeypointGraph
    assert KeypointGraph(m).decoder.kernel == 5
    m.cfg['test_cfg']['kernel'] = 4
    with pytest.raises(Exception, match='positive odd integer'):
        make_backend(m, 'eager')


@pytest.mark.skipif(not HAS_OV, reason='openvino not installed (optional backend: pip install openvino)')
def test_openvino_backend_is_safe_to_share_between_threads():
    """One pipeline (so one backend) called from several threads: OpenVINO infer requests are not
    thread-safe (a second start_async on a busy request raised 'Infer Request is busy', and a request
    re-run before its results were read gave one thread the other's heatmaps)."""
    m = _tiny_model()
    backend = backends.OpenVinoBackend(m, num_threads=2, streams=2)
    g = torch.Generator().manual_seed(1)
    crops = [torch.randn(n, 3, 64, 64, generator=g) for n in (1, 2, 3, 1)]
    calls = [lambda x=x, flip=flip: backend.heatmaps(x, flip_test=flip) for x in crops for flip in (True, False)]
    assert thread_mismatches(calls, lambda a, b: a.shape == b.shape and torch.equal(a, b)) == []


def test_cache_falls_back_to_the_temporary_directory_with_a_warning(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / 'not_a_directory'
    blocked.write_text('a file where the cache should be')
    monkeypatch.setenv('MODELSCOPE_HANDKP_CACHE', str(blocked))
    monkeypatch.setattr(backends.tempfile, 'gettempdir', lambda: str(tmp_path / 'tmp'))
    with caplog.at_level(logging.WARNING, logger='modelscope_handkp.backends'):
        got = backends.onnx_cache_dir()
    assert got == tmp_path / 'tmp' / f'modelscope_handkp-{os.getuid()}' / 'onnx' and got.is_dir()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(blocked / 'onnx') in warned[0] and str(got) in warned[0]
    assert 'MODELSCOPE_HANDKP_CACHE' in warned[0]
    caplog.clear()
    monkeypatch.setenv('MODELSCOPE_HANDKP_CACHE', str(tmp_path / 'fine'))  # a usable cache: no warning
    with caplog.at_level(logging.WARNING, logger='modelscope_handkp.backends'):
        assert backends.onnx_cache_dir() == tmp_path / 'fine' / 'onnx'
    assert not caplog.records
    (tmp_path / 'tmp').rename(tmp_path / 'tmp_gone')
    (tmp_path / 'tmp').write_text('no temporary directory either')
    monkeypatch.setenv('MODELSCOPE_HANDKP_CACHE', str(blocked))
    with pytest.raises(backends.BackendError, match='MODELSCOPE_HANDKP_CACHE'):
        backends.onnx_cache_dir()


@pytest.mark.skipif(not HAS_OV, reason='openvino not installed (optional backend: pip install openvino)')
def test_openvino_writes_nothing_next_to_a_given_graph(tmp_path):
    """A graph passed as onnx_path= (e.g. one exported into a model directory): OpenVINO's compiled-model
    cache goes to the ONNX cache, not into a new 'openvino' folder beside the graph."""
    from modelscope_handkp.export import export_keypoint_net
    m = _tiny_model()
    folder = tmp_path / 'model_dir'
    folder.mkdir()
    graph = export_keypoint_net(m, folder / 'net.onnx')
    backend = backends.OpenVinoBackend(m, num_threads=2, onnx_path=graph, streams=2)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = m(x)
    hm = backend.heatmaps(x, flip_test=False)
    assert float((hm - ref).abs().max() / ref.abs().max()) <= 1e-5
    assert sorted(p.name for p in folder.iterdir()) == ['net.onnx']
