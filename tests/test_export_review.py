"""Review fixes around model directories, export and backends: the ModelScope model (what
``Model.from_pretrained`` returns) accepted wherever a network is taken, strict test settings in
configuration.json, clear errors for malformed model sections, and a private temporary ONNX cache."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from test_model_dir import TINY_EXTRA

from modelscope_handkp import backends
from modelscope_handkp import model_dir as md
from modelscope_handkp.modelscope_model import HandKeypointsModel

HAS_ORT = importlib.util.find_spec('onnxruntime') is not None and importlib.util.find_spec('onnx') is not None


def _write_dir(path: Path, test_cfg: dict | None = None, edit=None, seed: int = 0) -> Path:
    """A tiny 64x64 model directory of this plugin's format with random weights and non-default test settings."""
    from modelscope_handkp.models import build_hand_model, hrnet_model_cfg
    model_cfg = hrnet_model_cfg(TINY_EXTRA, image_size=(64, 64))
    model_cfg['test_cfg'].update(test_cfg or {})
    cfg = md.handkp_configuration(model_cfg, {'type': 'whole_image'})
    torch.manual_seed(seed)
    net = build_hand_model(md.keypoint_model_cfg(cfg))
    path.mkdir(parents=True)
    torch.save({'state_dict': net.state_dict(), 'meta': {}}, path / md.WEIGHTS_FILE)
    if edit is not None:
        edit(cfg)
    (path / md.CONFIG_FILE).write_text(json.dumps(cfg))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('MODELSCOPE_HANDKP_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def _inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 64, 64, generator=g)
    centers = np.array([[40.0, 30.0], [100.0, 80.0], [55.5, 60.25]], np.float32)[:n]
    scales = np.array([[0.3, 0.3], [0.5, 0.5], [0.4, 0.4]], np.float32)[:n]
    return x, centers, scales


# ----------------------------------------------------------------------------- the ModelScope model
@pytest.mark.skipif(not HAS_ORT, reason='onnxruntime/onnx not installed (pip install -e .[onnx])')
def test_export_takes_the_modelscope_model_and_keeps_its_test_settings(tmp_path, cache):
    """export_keypoint_onnx(Model.from_pretrained(DIR), ...) failed with "TypeError: unhashable type: 'slice'"
    (the wrapper's forward returns a dict); its decoding must follow the directory's test_cfg."""
    import onnxruntime as ort

    from modelscope_handkp.export import export_keypoint_net, export_keypoint_onnx, read_metadata
    d = _write_dir(tmp_path / 'm', {'post_process': 'default', 'modulate_kernel': 5})
    wrapper = HandKeypointsModel(str(d))
    path = export_keypoint_onnx(wrapper, tmp_path / 'w.onnx', flip_test=True)
    meta = read_metadata(path)
    assert (meta['post_process'], meta['kernel'], meta['input_size']) == ('default', 5, [64, 64])
    x, c, s = _inputs()
    got = ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(
        None, {'crops': x.numpy(), 'centers': c, 'scales': s})
    want = wrapper.decode(wrapper.forward_heatmaps(x, flip_test=True).detach(), c, s)
    np.testing.assert_allclose(got[0], want[..., :2], atol=1e-3)
    np.testing.assert_allclose(got[1], want[..., 2:], atol=1e-5)
    net = export_keypoint_net(wrapper, tmp_path / 'net.onnx')
    sess = ort.InferenceSession(str(net), providers=['CPUExecutionProvider'])
    assert [o.name for o in sess.get_outputs()] == ['heatmaps']
    np.testing.assert_allclose(sess.run(None, {'crops': x.numpy()})[0], wrapper.hand_model(x).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kind', ['fused', pytest.param('onnxruntime', marks=pytest.mark.skipif(
    not HAS_ORT, reason='onnxruntime/onnx not installed'))])
def test_backends_take_the_modelscope_model_and_keep_its_test_settings(tmp_path, cache, kind):
    """make_backend(Model.from_pretrained(DIR), kind) crashed ('fused': "'dict' object has no attribute
    'contiguous'") or decoded with the default test settings instead of the directory's ('onnxruntime':
    the wrapper's cfg is the whole configuration.json, whose top level has no test_cfg)."""
    d = _write_dir(tmp_path / 'm', {'post_process': 'default', 'modulate_kernel': 5})
    wrapper = HandKeypointsModel(str(d))
    b = backends.make_backend(wrapper, kind)
    assert (b.post_process, b.kernel) == ('default', 5)
    ref = backends.make_backend(wrapper.hand_model, 'eager')
    x, c, s = _inputs()
    got, want = b.predict(x, c, s, flip_test=True), ref.predict(x, c, s, flip_test=True)
    np.testing.assert_allclose(got[0], want[0], atol=1e-3)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)
    assert backends.model_fingerprint(wrapper) == backends.model_fingerprint(wrapper.hand_model)
    auto = backends.make_backend(wrapper, 'auto')
    assert auto.name != 'eager'  # the self-check compared against the wrapper's dict output and failed


# ----------------------------------------------------------------------------- test settings
@pytest.mark.parametrize('key,value,message', [
    ('flip_test', 'false', "model.test_cfg.flip_test must be true or false .* got 'false'"),
    ('shift_heatmap', 'no', "model.test_cfg.shift_heatmap must be true or false .* got 'no'"),
    ('modulate_kernel', 'eleven', "modulate_kernel must be a positive odd integer, got 'eleven'"),
    ('modulate_kernel', 11.5, 'modulate_kernel must be a positive odd integer, got 11.5'),
    ('modulate_kernel', True, 'modulate_kernel must be a positive odd integer, got True'),
    ('modulate_kernel', '11', "modulate_kernel must be a positive odd integer, got '11'"),
])
def test_quoted_or_mistyped_test_settings_are_refused(tmp_path, key, value, message):
    """bool('false') is True: a quoted "false" switched the flip test on (and int('eleven') gave a bare
    ValueError, int(11.5) silently 11)."""
    d = _write_dir(tmp_path / 'm', {key: value})
    with pytest.raises(md.ModelDirError, match=message):
        md.load_model_spec(d)
    with pytest.raises(md.ModelDirError, match=message):
        HandKeypointsModel(str(d))


def test_boolean_test_settings_are_read():
    assert md.test_settings({'test_cfg': {'flip_test': False}})[0] is False
    assert md.test_settings({'test_cfg': {'flip_test': 0, 'shift_heatmap': 1, 'modulate_kernel': 7}}) == (
        False, 'unbiased', 7)


@pytest.mark.parametrize('edit,what', [
    (lambda c: c['model']['backbone']['extra']['stage2'].update(num_blocks=[1]), 'IndexError'),
    (lambda c: c['model']['keypoint_head'].update(in_index=[0, 1, 2, 7]), 'IndexError'),
])
def test_malformed_model_section_is_a_model_dir_error(tmp_path, edit, what):
    d = _write_dir(tmp_path / 'm', edit=edit)
    with pytest.raises(md.ModelDirError, match=f'model section of .* cannot be built: {what}.*model.backbone'):
        HandKeypointsModel(str(d))


# ----------------------------------------------------------------------------- temporary cache
def test_temporary_cache_folder_of_someone_else_is_not_used(tmp_path, monkeypatch):
    """The fallback cache has a fixed name in the shared temporary directory: a folder there that others
    can write to (anyone may create that name first) must not be used, its graphs would be run."""
    blocked = tmp_path / 'not_a_directory'
    blocked.write_text('a file where the cache should be')
    monkeypatch.setenv('MODELSCOPE_HANDKP_CACHE', str(blocked))
    monkeypatch.setattr(backends.tempfile, 'gettempdir', lambda: str(tmp_path / 'tmp'))
    planted = tmp_path / 'tmp' / f'modelscope_handkp-{os.getuid()}'
    planted.mkdir(parents=True)
    planted.chmod(0o777)
    with pytest.raises(backends.BackendError, match='writable by other users'):
        backends.onnx_cache_dir()
    planted.chmod(0o700)
    assert backends.onnx_cache_dir() == planted / 'onnx'
    (planted / 'onnx').rmdir()
    planted.rmdir()
    got = backends.onnx_cache_dir()  # created by us: private
    assert got == planted / 'onnx' and (planted.stat().st_mode & 0o077) == 0


# ----------------------------------------------------------------------------- palm detector weights
def test_damaged_or_foreign_palm_weights_are_named(tmp_path):
    """build_palm_detector(weights=...) with a truncated file gave torch's bare 'PytorchStreamReader failed
    reading zip archive' RuntimeError; a file of the other variant must name the keys."""
    from modelscope_handkp.detection.palm import build_palm_detector, default_weights_path
    data = default_weights_path('full').read_bytes()
    cut = tmp_path / 'palm_detection_full.pt'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"BlazePalm\('full'\).*cannot be read \(truncated or not a PyTorch file"):
        build_palm_detector('full', weights=cut, backend='eager')
    with pytest.raises(ValueError, match=r"BlazePalm\('full'\).*(missing|unexpected) keys"):
        build_palm_detector('full', weights=default_weights_path('lite'), backend='eager')
    det = build_palm_detector('lite', weights=default_weights_path('lite'), backend='eager')
    assert det.detect(np.zeros((64, 48, 3), np.uint8)).shape == (0, 5)


def test_crops_of_another_size_are_named_not_a_bare_shape_error(tmp_path):
    """200x200 crops for a 64x64 model ended in 'The size of tensor a (50) must match ...' deep in HRNet."""
    model = HandKeypointsModel(str(_write_dir(tmp_path / 'm'))).eval()
    ok = torch.zeros(2, 3, 64, 64)
    assert model(ok)['heatmaps'].shape == (2, 21, 16, 16)
    for bad in (torch.zeros(2, 3, 200, 200), torch.zeros(3, 64, 64), torch.zeros(2, 1, 64, 64)):
        with pytest.raises(ValueError, match=r"crops must be a tensor \[N, 3, 64, 64\] .*got shape "
                                             + str(list(bad.shape)).replace('[', r'\[').replace(']', r'\]')
                                             + r'; make them with modelscope_handkp\.transforms\.crop_to_tensor'):
            model(bad)
    model.train()
    with pytest.raises(ValueError, match=r'crops must be a tensor \[N, 3, 64, 64\]'):
        model(torch.zeros(2, 3, 96, 96), target=torch.zeros(2, 21, 24, 24), target_weight=torch.ones(2, 21, 1))


def test_bad_test_settings_passed_to_the_model_say_where_they_came_from(tmp_path):
    d = _write_dir(tmp_path / 'm')
    with pytest.raises(md.ModelDirError, match=r'm \(with the settings passed to the model\): '
                                               r'model\.test_cfg\.flip_test must be true or false'):
        HandKeypointsModel(str(d), test_cfg={'flip_test': 'no'})
