"""ONNX export: the keypoint graph (flip test + DARK inside), the decoder graph and the detector
graph give PyTorch's numbers in ONNX Runtime.  Skipped without onnx/onnxruntime.

Keypoints are compared at <= 1e-3 px where the fixture peak curvature allows it (see the
docstring of tests/test_backends.py: random-weight heatmaps have flat peaks that amplify float32
rounding); the decoder alone is compared on the realistic decode fixture for every keypoint.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip('onnx', reason='onnx not installed (pip install -e .[onnx])')
ort = pytest.importorskip('onnxruntime', reason='onnxruntime not installed (pip install -e .[onnx])')

from modelscope_handkp import codec, decode_torch  # noqa: E402
from modelscope_handkp.checkpoint import load_checkpoint  # noqa: E402
from modelscope_handkp.export import (KeypointGraph, export_decoder_onnx, export_detector_onnx,  # noqa: E402
                                      export_keypoint_onnx, read_metadata)
from modelscope_handkp.models import build_hand_model, hrnet_extra, hrnet_model_cfg  # noqa: E402

MIN_CURVATURE = 0.002
KP_TOL = 1e-3


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])


@pytest.fixture(scope='module')
def model(hrnet_synth_state_dict):
    m = build_hand_model()
    load_checkpoint(m, hrnet_synth_state_dict)
    return m.eval()


@pytest.fixture(scope='module')
def keypoint_graph(model, tmp_path_factory):
    """The published-size model exported once: flip test on, rotations input."""
    path = tmp_path_factory.mktemp('onnx') / 'hand_keypoints.onnx'
    export_keypoint_onnx(model, path, flip_test=True, rotations=True)
    return path


@pytest.fixture(scope='module')
def torch_reference(model, topdown_ref):
    """The eager PyTorch path on the fixture crops: model with flip test + NumPy codec."""
    with torch.no_grad():
        hm = model.forward_heatmaps(torch.from_numpy(topdown_ref['input_tensor']), flip_test=True)
    return hm


def test_keypoint_graph_inputs_outputs_and_metadata(keypoint_graph):
    sess = _session(keypoint_graph)
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [
        ('crops', ['N', 3, 256, 256]), ('centers', ['N', 2]), ('scales', ['N', 2]), ('rotations', ['N'])]
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [('keypoints', ['N', 21, 2]), ('scores', ['N', 21, 1])]
    meta = read_metadata(keypoint_graph)
    assert meta['flip_test'] is True and meta['post_process'] == 'unbiased' and meta['kernel'] == 11
    assert meta['input_size'] == [256, 256] and meta['color'] == 'RGB'
    assert np.allclose(meta['mean'], [0.485, 0.456, 0.406]) and np.allclose(meta['std'], [0.229, 0.224, 0.225])


def test_keypoint_graph_equals_pytorch(keypoint_graph, torch_reference, topdown_ref):
    sess = _session(keypoint_graph)
    crops, centers, scales = topdown_ref['input_tensor'], topdown_ref['centers'], topdown_ref['scales']
    for rot in (np.zeros(4, np.float32), np.array([0.0, 25.0, -90.0, 170.0], np.float32)):
        kp, sc = sess.run(None, {'crops': crops, 'centers': centers, 'scales': scales, 'rotations': rot})
        ref_c, ref_s = codec.decode_heatmaps(torch_reference, centers, scales, rotations=rot if rot.any() else None)
        assert kp.shape == (4, 21, 2) and sc.shape == (4, 21, 1) and kp.dtype == np.float32
        well = decode_torch.peak_curvature(torch_reference).numpy() >= MIN_CURVATURE
        diff = np.abs(kp - ref_c).max(-1)
        assert well.sum() >= 60 and diff[well].max() <= KP_TOL  # measured <= 6e-4 px
        assert diff.max() <= 0.5
        assert np.abs(sc - ref_s).max() <= 1e-5 * np.abs(ref_s).max()
    # against the EasyCV reference keypoints too
    kp, _ = sess.run(None, {'crops': crops, 'centers': centers, 'scales': scales, 'rotations': np.zeros(4, np.float32)})
    well = decode_torch.peak_curvature(torch.from_numpy(topdown_ref['heatmaps_flip_avg'])).numpy() >= MIN_CURVATURE
    assert np.abs(kp - topdown_ref['keypoints'][..., :2]).max(-1)[well].max() <= KP_TOL


def test_keypoint_graph_dynamic_batch_and_empty(keypoint_graph, topdown_ref):
    sess = _session(keypoint_graph)
    crops, centers, scales = topdown_ref['input_tensor'], topdown_ref['centers'], topdown_ref['scales']
    one = sess.run(None, {'crops': crops[2:3], 'centers': centers[2:3], 'scales': scales[2:3],
                          'rotations': np.zeros(1, np.float32)})
    four = sess.run(None, {'crops': crops, 'centers': centers, 'scales': scales, 'rotations': np.zeros(4, np.float32)})
    assert one[0].shape == (1, 21, 2)
    assert np.abs(one[1] - four[1][2:3]).max() <= 1e-5 * np.abs(four[1]).max()
    empty = sess.run(None, {'crops': crops[:0], 'centers': centers[:0], 'scales': scales[:0],
                            'rotations': np.zeros(0, np.float32)})
    assert empty[0].shape == (0, 21, 2) and empty[1].shape == (0, 21, 1)


@pytest.mark.parametrize('post_process', ['unbiased', 'default', None])
def test_no_flip_graph_of_a_small_model(tmp_path, post_process):
    cfg = hrnet_model_cfg(hrnet_extra(width=8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1), image_size=(64, 64))
    torch.manual_seed(1)
    m = build_hand_model(cfg).eval()
    path = export_keypoint_onnx(m, tmp_path / 'small.onnx', flip_test=False, post_process=post_process)
    assert [i.name for i in _session(path).get_inputs()] == ['crops', 'centers', 'scales']
    x = torch.randn(3, 3, 64, 64)
    centers = np.array([[40.0, 50.0], [300.0, 20.0], [0.0, 0.0]], np.float32)
    scales = np.array([[0.4, 0.4], [1.2, 1.2], [0.2, 0.2]], np.float32)
    kp, sc = _session(path).run(None, {'crops': x.numpy(), 'centers': centers, 'scales': scales})
    with torch.no_grad():
        hm = m(x)
    ref_c, ref_s = codec.decode_heatmaps(hm, centers, scales, post_process)
    well = decode_torch.peak_curvature(hm).numpy() >= MIN_CURVATURE
    assert np.abs(kp - ref_c).max(-1)[well].max() <= KP_TOL
    assert np.abs(sc - ref_s).max() <= 1e-5 * np.abs(ref_s).max()
    # the same module in PyTorch gives the same keypoints
    with torch.no_grad():
        tk, _ = KeypointGraph(m, flip_test=False, post_process=post_process)(x, torch.from_numpy(centers),
                                                                            torch.from_numpy(scales))
    assert np.abs(tk.numpy() - ref_c).max(-1)[well].max() <= KP_TOL


@pytest.mark.parametrize('mode,key', [('unbiased', 'unbiased'), ('default', 'default'), (None, 'none')])
def test_decoder_graph_equals_codec_on_realistic_heatmaps(tmp_path, decode_ref, mode, key):
    path = export_decoder_onnx(tmp_path / 'decoder.onnx', post_process=mode, rotations=True)
    rot = np.array([0.0, 10.0, -20.0, 45.0, 90.0, 0.0], np.float32)
    feed = {'heatmaps': decode_ref['heatmaps'], 'centers': decode_ref['centers'], 'scales': decode_ref['scales']}
    kp, sc = _session(path).run(None, {**feed, 'rotations': np.zeros(6, np.float32)})
    assert np.abs(kp - decode_ref[f'preds_{key}']).max() <= KP_TOL  # every keypoint
    assert np.abs(sc - decode_ref[f'maxvals_{key}']).max() <= 1e-6
    kp, _ = _session(path).run(None, {**feed, 'rotations': rot})
    ref, _ = codec.decode_heatmaps(decode_ref['heatmaps'], decode_ref['centers'], decode_ref['scales'], mode,
                                   rotations=rot)
    assert np.abs(kp - ref).max() <= KP_TOL


def test_export_refuses_to_overwrite(tmp_path):
    target = tmp_path / 'decoder.onnx'
    target.write_bytes(b'user file')
    with pytest.raises(FileExistsError, match='overwrite'):
        export_decoder_onnx(target)
    assert target.read_bytes() == b'user file'
    export_decoder_onnx(target, overwrite=True)
    assert read_metadata(target)['graph'] == 'decoder'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.handkp-export-')]  # no temp files left


def test_detector_graph_equals_pytorch_and_mmdet(tmp_path, reference_dir, ssdlite_synth_state_dict, detector_ref):
    from modelscope_handkp.detection import build_hand_detector

    det = build_hand_detector(reference_dir / 'official_like_model' / 'detection' / 'config.py',
                              ssdlite_synth_state_dict)
    path = export_detector_onnx(det, tmp_path / 'detector.onnx')
    sess = _session(path)
    assert [o.name for o in sess.get_outputs()] == ['cls_logits', 'bbox_deltas']
    x = detector_ref['input_tensor']
    cls, reg = sess.run(None, {'images': x})
    with torch.no_grad():
        tcls, treg = det.forward_raw(torch.from_numpy(x))
    for ours, torch_out, ref in ((cls, tcls, detector_ref['cls_logits']), (reg, treg, detector_ref['bbox_deltas'])):
        assert ours.shape == ref.shape == (2, 3234, ref.shape[-1])
        assert np.abs(ours - torch_out.numpy()).max() <= 1e-5 * np.abs(ref).max()
        assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    empty = sess.run(None, {'images': x[:0]})  # a batch of no images (exported with a dynamic batch)
    assert [e.shape for e in empty] == [(0, 3234, cls.shape[-1]), (0, 3234, 4)]
    meta = read_metadata(path)
    assert meta['input_size'] == [320, 320] and np.allclose(meta['mean'], [123.675, 116.28, 103.53])
    # the detector's own post-processing gives the same boxes from the ONNX outputs
    factors = np.ones((2, 4), np.float32)
    ours = det.postprocess(torch.from_numpy(cls), torch.from_numpy(reg), factors, score_thr=0.02)
    theirs = det.postprocess(tcls, treg, factors, score_thr=0.02)
    for (a, _), (b, _) in zip(ours, theirs):
        assert a.shape == b.shape and len(a) > 0
        # every box has its twin (near-tied scores may swap places)
        assert np.abs(a[:, None, :] - b[None, :, :]).max(-1).min(1).max() <= 1e-3


def test_palm_graph_takes_any_batch_and_files_are_plain(tmp_path):
    import os
    from modelscope_handkp.detection import build_palm_detector
    from modelscope_handkp.export import export_palm_net
    det = build_palm_detector(backend='eager')
    old = os.umask(0o022)
    try:
        path = export_palm_net(det.model, tmp_path / 'palm.onnx')
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644  # readable by a serving account, as any file written here
    sess = _session(path)
    x = torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = [t.numpy() for t in det.model(x)]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {'images': x.numpy()})))
    assert np.abs(got['regressors'] - ref[0]).max() <= 1e-3 and np.abs(got['scores'] - ref[1]).max() <= 1e-3
    empty = sess.run(None, {'images': x[:0].numpy()})
    assert sorted(e.shape for e in empty) == [(0, 2016, 1), (0, 2016, 18)]


def test_damaged_cache_graph_is_exported_again(tmp_path, monkeypatch):
    from modelscope_handkp import backends
    monkeypatch.setenv('MODELSCOPE_HANDKP_CACHE', str(tmp_path))
    calls = []

    def export(model, path, overwrite):
        calls.append(path)
        export_decoder_onnx(path, overwrite=overwrite)

    net = torch.nn.Linear(2, 2)
    first = backends.cached_onnx(net, 'thing', export, 'test graph')
    assert backends.cached_onnx(net, 'thing', export, 'test graph') == first and len(calls) == 1  # cached
    first.write_bytes(b'garbage')
    again = backends.cached_onnx(net, 'thing', export, 'test graph')
    assert again == first and len(calls) == 2 and read_metadata(again)['graph'] == 'decoder'


# ---------------------------------------------------------------------------------------------- review fixes
def _small_model(seed=1, size=(64, 64)):
    cfg = hrnet_model_cfg(hrnet_extra(width=8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1), image_size=size)
    torch.manual_seed(seed)
    return build_hand_model(cfg)


@pytest.mark.parametrize('flip,rotations', [(True, True), (True, False), (False, True), (False, False)])
def test_keypoint_graph_any_batch_with_and_without_flip_and_rotations(tmp_path, flip, rotations):
    """0, 1 and many crops, a non-square crop: ONNX Runtime gives KeypointGraph's numbers; the metadata
    describes the model."""
    m = _small_model(size=(64, 96)).eval()
    path = export_keypoint_onnx(m, tmp_path / 'k.onnx', flip_test=flip, rotations=rotations)
    meta = read_metadata(path)
    assert (meta['input_size'], meta['heatmap_size'], meta['num_keypoints'], meta['flip_test']) == (
        [64, 96], [16, 24], 21, flip)
    sess = _session(path)
    assert sess.get_inputs()[0].shape == ['N', 3, 96, 64]
    graph = KeypointGraph(m, flip_test=flip).eval()
    gen = torch.Generator().manual_seed(3)
    for n in (0, 1, 5):
        x = torch.randn(n, 3, 96, 64, generator=gen)
        c = torch.rand(n, 2, generator=gen) * 300
        s = torch.rand(n, 2, generator=gen) * 0.2 + 0.2  # <= 5 image px per heatmap px
        r = torch.rand(n, generator=gen) * 360 - 180
        feed = {'crops': x.numpy(), 'centers': c.numpy(), 'scales': s.numpy()}
        if rotations:
            feed['rotations'] = r.numpy()
        kp, sc = sess.run(None, feed)
        assert kp.shape == (n, 21, 2) and sc.shape == (n, 21, 1)
        if n == 0:
            continue
        with torch.no_grad():
            tk, ts = graph(x, c, s, r if rotations else None)
            # random weights: flat peaks amplify float32 rounding (module docstring); sharp ones only
            well = decode_torch.peak_curvature(graph.heatmaps(x)).numpy() >= 0.01
        assert well.sum() >= 5 * n
        # in heatmap pixels (these crops are 2-4 image px per heatmap px); the 1e-3 image-px check on a
        # realistic network is test_keypoint_graph_equals_pytorch
        px_per_hm = (s.numpy() * 200.0 / np.array([16.0, 24.0])).max(-1)[:, None]
        assert (np.abs(kp - tk.numpy()).max(-1) / px_per_hm)[well].max() <= KP_TOL
        assert np.abs(sc - ts.numpy()).max() <= 1e-6


@pytest.mark.parametrize('opset', [9, 10])
def test_opset_below_11_is_refused_before_anything_is_written(tmp_path, opset):
    """At opsets 9/10 the exporter wrote graphs that passed onnx.checker but gave keypoints 100+ px off
    (Upsample without PyTorch's coordinate mode) or that ONNX Runtime refused; now a clear error."""
    target = tmp_path / 'new' / 'k.onnx'
    with pytest.raises(ValueError, match=f'opset {opset} is not supported.*from 11'):
        export_keypoint_onnx(_small_model().eval(), target, flip_test=False, post_process='default', opset=opset)
    with pytest.raises(ValueError, match='from 11'):
        export_decoder_onnx(target, post_process='unbiased', opset=opset)
    assert not (tmp_path / 'new').exists()


def test_opset_above_the_exporter_is_refused_with_the_range(tmp_path):
    from modelscope_handkp.export import _max_opset
    top = _max_opset()
    with pytest.raises(ValueError, match=f'from 11 to {top}'):
        export_decoder_onnx(tmp_path / 'd.onnx', opset=top + 5)
    with pytest.raises(ValueError, match='integer'):
        export_decoder_onnx(tmp_path / 'd.onnx', opset=17.5)
    assert list(tmp_path.iterdir()) == []
    # the lowest accepted opset gives PyTorch's numbers
    m = _small_model().eval()
    path = export_keypoint_onnx(m, tmp_path / 'k11.onnx', flip_test=True, post_process='default', opset=11)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    c, s = torch.full((2, 2), 120.0), torch.full((2, 2), 0.5)
    kp, _ = _session(path).run(None, {'crops': x.numpy(), 'centers': c.numpy(), 'scales': s.numpy()})
    with torch.no_grad():
        tk, _ = KeypointGraph(m, flip_test=True, post_process='default')(x, c, s)
    assert np.abs(kp - tk.numpy()).max() <= 1e-3


def test_detector_graph_keeps_low_opsets(tmp_path, reference_dir, ssdlite_synth_state_dict, detector_ref):
    from modelscope_handkp.detection import build_hand_detector
    det = build_hand_detector(reference_dir / 'official_like_model' / 'detection' / 'config.py',
                              ssdlite_synth_state_dict)
    cls, _ = _session(export_detector_onnx(det, tmp_path / 'd9.onnx', opset=9)).run(
        None, {'images': detector_ref['input_tensor']})
    assert np.abs(cls - detector_ref['cls_logits']).max() <= 1e-4 * np.abs(detector_ref['cls_logits']).max()


def test_failed_export_leaves_no_folders_or_files(tmp_path, monkeypatch):
    import onnx
    def broken(*a, **k):
        raise RuntimeError('checker says no')
    monkeypatch.setattr(onnx.checker, 'check_model', broken)
    with pytest.raises(RuntimeError, match='checker says no'):
        export_decoder_onnx(tmp_path / 'a' / 'b' / 'd.onnx')
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_named_as_a_folder(tmp_path):
    (tmp_path / 'x.onnx').mkdir()
    with pytest.raises(IsADirectoryError, match='is a directory'):
        export_decoder_onnx(tmp_path / 'x.onnx')  # not "pass overwrite=True", which could not help


def test_unwritable_folder_error_names_the_target(tmp_path, monkeypatch):
    """The error named the hidden temporary file (.handkp-export-XXXX.onnx), not the path asked for."""
    import os
    import tempfile

    def denied(*a, dir=None, **k):
        raise PermissionError(13, 'Permission denied', os.path.join(dir, '.handkp-export-abc.onnx'))
    monkeypatch.setattr(tempfile, 'mkstemp', denied)
    with pytest.raises(PermissionError, match=r'cannot write .*d\.onnx: the folder .*sub is not writable') as e:
        export_decoder_onnx(tmp_path / 'sub' / 'd.onnx')
    assert '.handkp-export-' not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # the folder made for it is gone again


def test_file_that_appears_during_export_is_not_replaced(tmp_path, monkeypatch):
    """The existence check runs before the (slow) export; a file written meanwhile by someone else
    must not be replaced silently when overwrite is False."""
    import onnx
    target = tmp_path / 'd.onnx'
    original = onnx.checker.check_model

    def check_and_race(proto, *a, **k):
        target.write_bytes(b'written meanwhile')
        return original(proto, *a, **k)
    monkeypatch.setattr(onnx.checker, 'check_model', check_and_race)
    with pytest.raises(FileExistsError, match='appeared while'):
        export_decoder_onnx(target)
    assert target.read_bytes() == b'written meanwhile'
    assert [p.name for p in tmp_path.iterdir()] == ['d.onnx']
    export_decoder_onnx(target, overwrite=True)  # asked for: replaced
    assert read_metadata(target)['graph'] == 'decoder'


def test_export_leaves_the_users_module_mode_alone_and_exports_eval_behaviour(tmp_path):
    """export_palm_net switched the user's network to eval mode for good (and the SSDLite/fold_bn=False
    path did the same); the exported graph must still be the eval-mode network."""
    from modelscope_handkp.detection import build_palm_detector
    from modelscope_handkp.export import export_palm_net
    net = build_palm_detector(backend='eager').model
    net.train()
    grads = [p.requires_grad for p in net.parameters()]
    path = export_palm_net(net, tmp_path / 'palm.onnx')
    assert net.training and all(m.training for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == grads
    x = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        ref = net(x)[1].numpy()
    got = dict(zip([o.name for o in _session(path).get_outputs()], _session(path).run(None, {'images': x.numpy()})))
    assert np.abs(got['scores'] - ref).max() <= 1e-3


def test_train_mode_keypoint_model_exports_eval_behaviour_and_keeps_its_state(tmp_path):
    m = _small_model()
    m.train()
    next(m.parameters()).requires_grad_(False)  # a partly frozen model keeps its flags
    state = [(mod.training) for mod in m.modules()], [p.requires_grad for p in m.parameters()]
    path = export_keypoint_onnx(m, tmp_path / 'k.onnx', flip_test=False, post_process=None)
    assert ([mod.training for mod in m.modules()], [p.requires_grad for p in m.parameters()]) == state
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    c, s = torch.full((2, 2), 120.0), torch.full((2, 2), 0.5)
    _, sc = _session(path).run(None, {'crops': x.numpy(), 'centers': c.numpy(), 'scales': s.numpy()})
    m.eval()
    with torch.no_grad():
        ref = m(x).flatten(2).amax(-1)
    assert np.abs(sc[..., 0] - ref.numpy()).max() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_export_of_a_cuda_model_gives_the_cpu_numbers_and_leaves_it_on_cuda(tmp_path):
    from modelscope_handkp.detection import build_palm_detector
    from modelscope_handkp.export import export_keypoint_net, export_palm_net
    m = _small_model().eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(x).numpy()
    m.cuda()
    for fn in (export_keypoint_onnx, export_keypoint_net):
        path = fn(m, tmp_path / f'{fn.__name__}.onnx')
        assert _session(path).get_inputs()[0].name == 'crops'
    (hm, ) = _session(tmp_path / 'export_keypoint_net.onnx').run(None, {'crops': x.numpy()})
    assert np.abs(hm - ref).max() <= 1e-4 * np.abs(ref).max()
    assert all(p.device.type == 'cuda' for p in m.parameters())
    from modelscope_handkp.models.fuse import fold_batchnorm
    folded = fold_batchnorm(m)  # an already folded model on the GPU (the backends' case)
    export_keypoint_net(folded, tmp_path / 'folded.onnx')
    assert all(p.device.type == 'cuda' for p in folded.parameters())
    palm = build_palm_detector(backend='eager').model.cuda()
    export_palm_net(palm, tmp_path / 'palm.onnx')
    assert all(p.device.type == 'cuda' for p in palm.parameters())


def test_export_detector_onnx_takes_the_palm_detector_and_refuses_other_objects(tmp_path):
    """export_detector_onnx(PalmDetector) failed with AttributeError ('no attribute eval'); it writes
    the palm network's graph now (what the CLI writes), and anything else is a TypeError that names
    the detectors it takes."""
    from modelscope_handkp.detection import build_palm_detector
    det = build_palm_detector(backend='eager')
    path = export_detector_onnx(det, tmp_path / 'palm.onnx')
    sess = _session(path)
    x = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = det.model(x)[1].numpy()
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {'images': x.numpy()})))
    assert np.abs(got['scores'] - ref).max() <= 1e-3
    with pytest.raises(TypeError, match='PalmDetector'):
        export_detector_onnx(object(), tmp_path / 'x.onnx')
    assert not (tmp_path / 'x.onnx').exists()
