"""Model directories: configuration.json reading (EasyCV jsonplus), format detection, the repository's
configuration.json, ``convert_model_dir``, and ModelScope's Model/registry/plugin behaviour for both kinds
of directory."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import modelscope_handkp
from modelscope_handkp import compat
from modelscope_handkp import model_dir as md

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures (shared by the
# pipeline and bad-input tests, which import them from here)
def write_official_like_dir(path: Path, reference_dir: Path, hrnet_sd, ssdlite_sd) -> Path:
    """The published model directory layout: shared configuration.json + detection/config.py, synthetic
    weights saved as EasyCV / mmdet checkpoints ({'state_dict': ..., 'meta': ...})."""
    src = reference_dir / 'official_like_model'
    (path / 'detection').mkdir(parents=True)
    shutil.copyfile(src / 'configuration.json', path / 'configuration.json')
    shutil.copyfile(src / 'detection' / 'config.py', path / 'detection' / 'config.py')
    torch.save({'state_dict': dict(hrnet_sd), 'meta': {'epoch': 210, 'config': 'synthetic'}},
               path / 'pytorch_model.pt')
    torch.save({'state_dict': dict(ssdlite_sd), 'meta': {'epoch': 1, 'CLASSES': ['hand']}},
               path / 'detection' / 'detection_model.pth')
    return path


@pytest.fixture(scope='session')
def official_dir(tmp_path_factory, reference_dir, hrnet_synth_state_dict, ssdlite_synth_state_dict) -> Path:
    return write_official_like_dir(tmp_path_factory.mktemp('official') / 'cv_hrnetw18_hand', reference_dir,
                                   hrnet_synth_state_dict, ssdlite_synth_state_dict)


@pytest.fixture(scope='session')
def converted_dir(tmp_path_factory, official_dir) -> Path:
    dst = tmp_path_factory.mktemp('converted') / 'handkp_model'
    return Path(modelscope_handkp.convert_model_dir(official_dir, dst))


TINY_EXTRA = {
    'stage1': {'num_modules': 1, 'num_branches': 1, 'block': 'BOTTLENECK', 'num_blocks': [1], 'num_channels': [8]},
    'stage2': {'num_modules': 1, 'num_branches': 2, 'block': 'BASIC', 'num_blocks': [1, 1], 'num_channels': [4, 8]},
    'stage3': {'num_modules': 1, 'num_branches': 3, 'block': 'BASIC', 'num_blocks': [1, 1, 1],
               'num_channels': [4, 8, 16]},
    'stage4': {'num_modules': 1, 'num_branches': 4, 'block': 'BASIC', 'num_blocks': [1, 1, 1, 1],
               'num_channels': [4, 8, 16, 32], 'multiscale_output': True},
}


def write_tiny_dir(path: Path, detector=None, seed: int = 0) -> Path:
    """A model directory of this plugin's format with a tiny HRNet (random weights): fast plumbing tests."""
    from modelscope_handkp.models import build_hand_model, hrnet_model_cfg
    cfg = md.handkp_configuration(hrnet_model_cfg(TINY_EXTRA), detector or {'type': 'whole_image'})
    path.mkdir(parents=True)
    (path / 'configuration.json').write_text(md.dumps_configuration(cfg))
    torch.manual_seed(seed)
    net = build_hand_model(md.keypoint_model_cfg(cfg))
    torch.save({'state_dict': net.state_dict(), 'meta': {}}, path / 'pytorch_model.pt')
    return path


@pytest.fixture(scope='session')
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_dir(tmp_path_factory.mktemp('tiny') / 'tiny_model')


def _official_cfg(reference_dir):
    return md.read_configuration(reference_dir / 'official_like_model')


# ----------------------------------------------------------------------------- configuration.json
def test_jsonplus_tuples_are_decoded(reference_dir):
    raw = json.loads((reference_dir / 'official_like_model' / 'configuration.json').read_text())
    assert raw['model']['backbone']['extra']['stage4']['num_channels'] == {'__class__': 'tuple',
                                                                           '__value__': [18, 36, 72, 144]}
    cfg = _official_cfg(reference_dir)
    extra = cfg['model']['backbone']['extra']
    assert extra['stage4']['num_channels'] == (18, 36, 72, 144)
    assert extra['stage1']['num_blocks'] == (4, )
    assert cfg['model']['keypoint_head']['in_index'] == (0, 1, 2, 3)
    assert cfg['model']['keypoint_head']['in_channels'] == [18, 36, 72, 144]  # a real list stays a list
    from modelscope_handkp.models import HRNET_W18_EXTRA
    for stage in ('stage1', 'stage2', 'stage3', 'stage4'):
        for key in ('num_blocks', 'num_channels', 'num_modules', 'num_branches', 'block'):
            got, want = extra[stage][key], HRNET_W18_EXTRA[stage][key]
            assert (list(got) if isinstance(got, tuple) else got) == (list(want) if isinstance(want, tuple) else want)


def test_unknown_jsonplus_class_is_named():
    with pytest.raises(md.ModelDirError, match="class 'datetime'"):
        md.decode_jsonplus({'a': {'__class__': 'datetime', '__value__': '2020'}})


def test_formats_are_told_apart(reference_dir):
    assert md.config_format(_official_cfg(reference_dir)) == md.FORMAT_EASYCV
    ours = json.loads((ROOT / 'configuration.json').read_text())
    assert md.config_format(ours) == md.FORMAT_HANDKP
    with pytest.raises(md.ModelDirError, match="not a hand keypoint model"):
        md.config_format({'task': 'image-classification', 'model': {'type': 'resnet50'}})


def test_official_spec(official_dir):
    spec = md.load_model_spec(official_dir)
    assert spec.format == md.FORMAT_EASYCV
    assert spec.checkpoint == str(official_dir / 'pytorch_model.pt')
    assert (spec.flip_test, spec.post_process, spec.kernel) == (True, 'unbiased', 11)
    assert spec.image_size == (256, 256) and spec.heatmap_size == (64, 64)
    det = spec.detector
    assert det.type == 'ssdlite' and det.score_threshold == 0.5
    assert det.config_file == str(official_dir / 'detection' / 'config.py')
    assert det.checkpoint == str(official_dir / 'detection' / 'detection_model.pth')
    assert spec.model_cfg['backbone']['extra']['stage3']['num_channels'] == (18, 36, 72)


def test_repository_configuration_is_ours_and_matches_the_published_model(reference_dir):
    ours = md.decode_jsonplus(json.loads((ROOT / 'configuration.json').read_text()))
    official = _official_cfg(reference_dir)
    assert 'plugins' not in ours and 'allow_remote' not in ours  # never needs trust_remote_code
    assert ours['task'] == 'hand-2d-keypoints' and ours['framework'] == 'pytorch'
    assert ours['model']['type'] == md.MODEL_TYPE
    assert ours['pipeline'] == {'type': md.PIPELINE_TYPE}
    assert ours['preprocessor'] == {'type': md.PREPROCESSOR_TYPE}
    assert ours['detector'] == {'type': 'ssdlite', 'config_file': 'detection/config.py',
                                'checkpoint': 'detection/detection_model.pth', 'score_threshold': 0.5}
    assert ours['model']['test_cfg'] == {'flip_test': True, 'post_process': 'unbiased', 'shift_heatmap': True,
                                         'modulate_kernel': 11}
    a = md.keypoint_model_cfg(ours)
    b = md.keypoint_model_cfg(official)
    assert json.loads(json.dumps(a)) == json.loads(json.dumps(b))  # same network, tuples vs lists aside
    for key in ('train', 'evaluation', 'dataset'):
        assert json.loads(json.dumps(ours[key])) == json.loads(json.dumps(official[key]))
    # the file is exactly what the conversion writes for the published configuration
    text = md.dumps_configuration(md.handkp_config_from_easycv(official))
    assert json.loads(text) == json.loads((ROOT / 'configuration.json').read_text())


def test_detector_sections(tmp_path):
    base = {'task': 'hand-2d-keypoints', 'handkp': {}, 'model': {'type': md.MODEL_TYPE}}
    spec = md.detector_spec({**base, 'detector': {'type': 'palm', 'score_threshold': 0.3}}, tmp_path)
    assert (spec.type, spec.variant, spec.score_threshold) == ('palm', 'full', 0.3)
    assert md.detector_spec({**base, 'detector': 'whole_image'}, tmp_path).type == 'whole_image'
    assert md.detector_spec(base, tmp_path).type == 'none'
    spec = md.detector_spec({**base, 'detector': {'type': 'ssdlite', 'config_file': 'd/c.py', 'checkpoint': 'd/w.pth'}},
                            tmp_path)
    assert spec.config_file == str(tmp_path / 'd' / 'c.py') and spec.checkpoint == str(tmp_path / 'd' / 'w.pth')
    with pytest.raises(md.ModelDirError, match='detector.type'):
        md.detector_spec({**base, 'detector': {'type': 'yolo'}}, tmp_path)
    with pytest.raises(md.ModelDirError, match="missing the key 'checkpoint'"):
        md.detector_spec({**base, 'detector': {'type': 'ssdlite', 'config_file': 'c.py'}}, tmp_path)
    with pytest.raises(md.ModelDirError, match=r'score_threshold must be a number in \[0, 1\]'):
        md.detector_spec({**base, 'detector': {'type': 'palm', 'score_threshold': 5}}, tmp_path)


# ----------------------------------------------------------------------------- ModelScope Model
def test_model_from_pretrained_loads_the_published_checkpoint(official_dir, hrnet_synth_state_dict):
    from modelscope.models import Model

    from modelscope_handkp.modelscope_model import HandKeypointsModel
    model = Model.from_pretrained(str(official_dir))
    assert isinstance(model, HandKeypointsModel)
    sd = model.state_dict()
    assert list(sd) == list(hrnet_synth_state_dict)  # backbone.* / keypoint_head.*: the published layout
    assert all(torch.equal(sd[k], v) for k, v in hrnet_synth_state_dict.items())
    assert model.flip_test is True and model.codec.post_process == 'unbiased' and model.codec.kernel == 11


def test_model_from_pretrained_is_ready_for_inference(official_dir, topdown_ref, hrnet_synth_state_dict):
    """The documented ``Model.from_pretrained(DIR).forward_heatmaps(crops)`` (no eval() call) gives the
    reference heatmaps and leaves the BatchNorm running statistics alone (train mode would use batch
    statistics and overwrite them)."""
    from modelscope.models import Model
    model = Model.from_pretrained(str(official_dir))
    assert model.training is False and model.hand_model.training is False
    x = torch.from_numpy(topdown_ref['input_tensor'][:2])
    with torch.no_grad():
        hm = model.forward_heatmaps(x, flip_test=True)
    np.testing.assert_allclose(hm.numpy(), topdown_ref['heatmaps_flip_avg'][:2], rtol=0,
                               atol=1e-4 * float(np.abs(topdown_ref['heatmaps_flip_avg']).max()))
    sd = model.state_dict()
    running = [k for k in hrnet_synth_state_dict if k.endswith('running_mean')]
    assert running and all(torch.equal(sd[k], hrnet_synth_state_dict[k]) for k in running)


def test_convert_refuses_the_current_folder(official_dir, tmp_path, monkeypatch):
    work = tmp_path / 'project'
    (work / 'sub').mkdir(parents=True)
    (work / 'notes.txt').write_text('mine')
    for cwd, dst in ((work, '.'), (work / 'sub', '..'), (work / 'sub', str(work))):
        monkeypatch.chdir(cwd)
        with pytest.raises(md.ModelDirError, match='is the current folder'):
            md.convert_model_dir(official_dir, dst, overwrite=True)
    assert (work / 'notes.txt').read_text() == 'mine'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['project'] and sorted(
        p.name for p in work.iterdir()) == ['notes.txt', 'sub']


def test_save_pretrained_round_trip_keeps_the_new_weights(official_dir, topdown_ref, tmp_path):
    """ModelScope's Model.save_pretrained writes a directory that loads back with the saved (changed)
    weights -- not the source directory's stale pytorch_model.pt -- and its SSDLite detector files."""
    from modelscope.models import Model
    model = Model.from_pretrained(str(official_dir))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    for i, name in enumerate((None, 'pytorch_model.bin')):  # ModelScope's usual name goes to the same file
        out = tmp_path / f'saved{i}'
        assert model.save_pretrained(str(out), name) == str(out)
        assert sorted(p.name for p in out.iterdir()) == ['configuration.json', 'detection', 'pytorch_model.pt']
        again = Model.from_pretrained(str(out))
        assert all(torch.equal(again.state_dict()[k], v) for k, v in want.items())
        assert again.spec.detector.type == 'ssdlite' and md.load_model_spec(out).format == md.FORMAT_HANDKP
        x = torch.from_numpy(topdown_ref['input_tensor'][:1])
        with torch.no_grad():
            np.testing.assert_array_equal(again.forward_heatmaps(x).numpy(), model.forward_heatmaps(x).numpy())
    # nothing is replaced silently; a name that would not be loaded back is refused
    before = (tmp_path / 'saved0' / 'pytorch_model.pt').read_bytes()
    with pytest.raises(FileExistsError, match='overwrite=True'):
        model.save_pretrained(str(tmp_path / 'saved0'))
    assert (tmp_path / 'saved0' / 'pytorch_model.pt').read_bytes() == before
    with pytest.raises(ValueError, match='would not be loaded back'):
        model.save_pretrained(str(tmp_path / 'other'), 'model.safetensors')
    with pytest.raises(md.ModelDirError, match='is the source model directory'):
        model.save_pretrained(str(official_dir), overwrite=True)


def test_model_forward_serves_trainer_and_inference(official_dir, topdown_ref):
    from modelscope.models import Model
    model = Model.from_pretrained(str(official_dir))
    x = torch.from_numpy(topdown_ref['input_tensor'][:2])
    torch.manual_seed(0)
    target = torch.rand(2, 21, 64, 64)
    weight = torch.ones(2, 21, 1)
    weight[0, 3] = 0
    # inference: flip-test heatmaps and, given the crops' center/scale, keypoints in image pixels
    model.eval()
    with torch.no_grad():
        out = model(img=x, center=topdown_ref['centers'][:2], scale=topdown_ref['scales'][:2])
    np.testing.assert_allclose(out['heatmaps'].numpy(), topdown_ref['heatmaps_flip_avg'][:2], rtol=0,
                               atol=1e-4 * float(np.abs(topdown_ref['heatmaps_flip_avg']).max()))
    kp = out['keypoints']
    assert kp.shape == (2, 21, 3) and kp.dtype == np.float32
    np.testing.assert_allclose(kp[..., 2], topdown_ref['keypoints'][:2, :, 2], rtol=1e-5, atol=1e-4)
    # training: the trainer's call model(img=, target=, target_weight=) -> {'loss'} (JointsMSELoss)
    model.train()
    assert model.hand_model.training and model.backbone.training
    loss = model(img=x, target=target, target_weight=weight)['loss']
    assert loss.requires_grad
    with torch.no_grad():
        heatmaps = model.hand_model(x)  # train-mode BN, as in the loss
    expect = torch.mean(((heatmaps - target) * weight.reshape(2, 21, 1, 1))**2)
    assert float(loss.detach()) == pytest.approx(float(expect), rel=1e-5)
    with pytest.raises(ValueError, match='needs target'):
        model(img=x)
    model.eval()
    assert model.hand_model.training is False


# ----------------------------------------------------------------------------- conversion
def test_convert_model_dir_writes_our_format(official_dir, converted_dir, hrnet_synth_state_dict):
    cfg = json.loads((converted_dir / 'configuration.json').read_text())
    assert cfg == md.handkp_config_from_easycv(md.read_configuration(official_dir))
    assert 'plugins' not in cfg and cfg['model']['type'] == md.MODEL_TYPE
    ckpt = torch.load(converted_dir / 'pytorch_model.pt', weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'} and ckpt['meta']['source_format'] == 'easycv'
    assert list(ckpt['state_dict']) == list(hrnet_synth_state_dict)
    assert all(torch.equal(ckpt['state_dict'][k], v) for k, v in hrnet_synth_state_dict.items())
    for name in ('config.py', 'detection_model.pth'):
        assert (converted_dir / 'detection' / name).read_bytes() == (official_dir / 'detection' / name).read_bytes()
    spec = md.load_model_spec(converted_dir)
    assert spec.format == md.FORMAT_HANDKP and spec.detector.type == 'ssdlite'
    assert spec.detector.checkpoint == str(converted_dir / 'detection' / 'detection_model.pth')
    # converting our own format again is stable
    again = Path(modelscope_handkp.convert_model_dir(converted_dir, converted_dir.parent / 'again'))
    assert json.loads((again / 'configuration.json').read_text()) == cfg


def test_convert_never_overwrites_silently(official_dir, tmp_path):
    dst = tmp_path / 'dst'
    dst.mkdir()
    (dst / 'mine.txt').write_text('user file')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        modelscope_handkp.convert_model_dir(official_dir, dst)
    assert (dst / 'mine.txt').read_text() == 'user file' and len(list(dst.iterdir())) == 1
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(FileExistsError, match='is a file'):
        modelscope_handkp.convert_model_dir(official_dir, tmp_path / 'afile')
    with pytest.raises(md.ModelDirError, match='is the source model directory'):
        modelscope_handkp.convert_model_dir(official_dir, official_dir)
    lookalike = tmp_path / '.dst.replaced'  # a folder of the user's with the name a backup could have
    lookalike.mkdir()
    (lookalike / 'keep.txt').write_text('user file')
    out = Path(modelscope_handkp.convert_model_dir(official_dir, dst, overwrite=True))
    assert not (out / 'mine.txt').exists() and (out / 'pytorch_model.pt').is_file()
    assert (lookalike / 'keep.txt').read_text() == 'user file'
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert (Path(modelscope_handkp.convert_model_dir(official_dir, empty)) / 'configuration.json').is_file()
    # no temporary folders left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == ['.dst.replaced']


def test_convert_keeps_the_model_card(official_dir, tmp_path):
    src = tmp_path / 'src'
    shutil.copytree(official_dir, src)
    (src / 'README.md').write_text('# Model card\nlicence: Apache-2.0\n')
    old = os.umask(0o022)
    try:
        out = Path(modelscope_handkp.convert_model_dir(src, tmp_path / 'out'))
    finally:
        os.umask(old)
    assert (out / 'README.md').read_text() == '# Model card\nlicence: Apache-2.0\n'
    assert (out.stat().st_mode & 0o777) == 0o755  # a plain folder, readable by others (not mkdtemp's 0700)
    with pytest.raises(md.ModelDirError, match='contains the source model directory .* would delete the source'):
        modelscope_handkp.convert_model_dir(src, tmp_path, overwrite=True)
    assert (src / 'README.md').is_file()


def test_failed_conversion_leaves_nothing(official_dir, tmp_path):
    bad = tmp_path / 'bad'
    shutil.copytree(official_dir, bad)
    torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(8, 3, 3, 3)}}, bad / 'pytorch_model.pt')
    with pytest.raises(md.ModelDirError, match='does not load into the network'):
        modelscope_handkp.convert_model_dir(bad, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad']


# ----------------------------------------------------------------------------- ModelScope adaptations
def test_trainers_easycv_after_import():
    from modelscope.metainfo import Trainers
    assert Trainers.easycv == 'easycv'


def test_trainers_easycv_missing_without_the_plugin_and_present_with_it():
    code = ('from modelscope.metainfo import Trainers\n'
            'print(hasattr(Trainers, "easycv"))\n'
            'import modelscope_handkp\n'
            'print(Trainers.easycv)\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ['False', 'easycv']


def test_registered_names():
    from modelscope.models.builder import MODELS
    from modelscope.pipelines.builder import PIPELINES
    from modelscope.preprocessors.builder import PREPROCESSORS

    from modelscope_handkp.modelscope_model import HandKeypointsModel
    from modelscope_handkp.pipeline import HandKeypointsPipeline
    from modelscope_handkp.preprocessor import HandImagePreprocessor
    task = 'hand-2d-keypoints'
    assert MODELS.get(md.MODEL_TYPE, task) is HandKeypointsModel
    assert PIPELINES.get(md.PIPELINE_TYPE, task) is HandKeypointsPipeline
    assert PREPROCESSORS.get(md.PREPROCESSOR_TYPE, 'cv') is HandImagePreprocessor
    if compat.serves_official_model():
        assert MODELS.get(md.OFFICIAL_MODEL_TYPE, task) is HandKeypointsModel
        assert PIPELINES.get(md.OFFICIAL_PIPELINE_TYPE, task) is HandKeypointsPipeline
    importlib.reload(modelscope_handkp)  # importing twice is harmless
    assert PIPELINES.get(md.PIPELINE_TYPE, task) is HandKeypointsPipeline


def test_served_plugin_is_not_installed(monkeypatch):
    import modelscope.utils.plugins as plugins

    def refuse(*a, **k):
        raise AssertionError(f'ModelScope tried to install or inspect a plugin: {a}')

    monkeypatch.setattr(plugins, 'install_requirements_by_names', refuse)
    monkeypatch.setattr(plugins, 'get_modules_from_package', refuse)
    monkeypatch.setattr(compat, 'pai_easycv_installed', lambda: False)
    for name in compat._CALLER_MODULES:
        mod = importlib.import_module(name)
        mod.register_plugins_repo(['pai-easycv'])  # no install, no import, no error
        mod.register_plugins_repo('pai-easycv>=0.11')
        with pytest.raises(AssertionError, match='tried to install'):
            mod.register_plugins_repo(['pai-easycv', 'some-other-plugin'])  # others go to ModelScope as before
    assert compat.filter_served_plugins(['pai_easycv==0.11.7', 'x']) == ['x']
    assert compat.filter_served_plugins(['pai-easycv']) is None


def test_working_pai_easycv_is_left_alone(monkeypatch):
    monkeypatch.setattr(compat, 'pai_easycv_installed', lambda: True)
    assert compat.filter_served_plugins(['pai-easycv']) == ['pai-easycv']
    assert compat.serves_official_model() is False
    from modelscope.utils.plugins import filter_plugin_in_whitelist
    assert filter_plugin_in_whitelist(['pai-easycv']) == []  # still whitelisted: no trust_remote_code


def test_other_models_are_left_to_modelscope(monkeypatch, tmp_path):
    """Only hand keypoint models are adapted: another EasyCV model (with 'DETECTION' and pai-easycv in its
    plugins) keeps ModelScope's plugin handling, and a trainer may be given a folder without configuration."""
    from modelscope.utils.config import Config
    monkeypatch.setattr(compat, 'pai_easycv_installed', lambda: False)
    seen = []
    wrapped = compat._wrap_register_plugins_repo(seen.append)

    def modelscope_caller(cfg):  # as ModelScope's builders call it: the configuration is their local 'cfg'
        wrapped(cfg.safe_get('plugins'))

    wholebody = Config({'task': 'human-wholebody-keypoint', 'plugins': ['pai-easycv'], 'DETECTION': {},
                        'model': {'type': 'HRNet-WholeBody'}, 'pipeline': {'type': 'wholebody-image'}})
    hand = Config({'task': md.TASK, 'plugins': ['pai-easycv'], 'DETECTION': {},
                   'model': {'type': md.OFFICIAL_MODEL_TYPE}, 'pipeline': {'type': md.OFFICIAL_PIPELINE_TYPE}})
    modelscope_caller(wholebody)
    modelscope_caller(hand)
    assert seen == [['pai-easycv'], None]  # the hand model's plugin is served here, the other one is not
    assert not compat._is_hand_config(wholebody.to_dict()) and compat._is_hand_config(hand.to_dict())
    bare = tmp_path / 'bare'
    bare.mkdir()
    importlib.import_module('modelscope.trainers.builder').is_official_hub_path(str(bare))  # no error
    with pytest.raises(md.ModelDirError, match='is not a model directory: it has no configuration.json'):
        importlib.import_module('modelscope.pipelines.builder').is_official_hub_path(str(bare))


def test_names_of_a_working_pai_easycv_are_not_taken(monkeypatch):
    """Next to a working pai-easycv, the names it registers itself stay free (ModelScope refuses a second
    registration, which would break its import); this trainer is then 'handkp-easycv'."""
    from modelscope.trainers.builder import TRAINERS
    from modelscope_handkp import trainer as trainer_mod
    calls = []
    monkeypatch.setattr(compat, 'register', lambda registry, group, name, cls, module: calls.append(name))
    monkeypatch.setattr(compat, 'pai_easycv_installed', lambda: True)
    trainer_mod._register()
    assert not {'easycv', 'EasyCVMetric', 'AddLrLogHook', 'HandCocoWholeBodyDataset'} & set(calls)
    assert {'handkp-easycv', 'HandCheckpointHook', 'EasyCVLrScheduler'} <= set(calls)
    assert TRAINERS.get('handkp-easycv') is trainer_mod.HandKeypointTrainer  # registered at import
    metric = trainer_mod._build_metric({'type': 'EasyCVMetric'})  # this package's, whoever owns the name
    assert type(metric).__module__ == 'modelscope_handkp.evaluation'


def test_local_path_trust_check_makes_no_hub_request(monkeypatch, tmp_path):
    from modelscope.hub.api import HubApi

    def no_hub(*a, **k):
        raise AssertionError('hub request')

    monkeypatch.setattr(HubApi, 'get_model', no_hub)
    owner = tmp_path / 'damo'
    (owner / 'model').mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for name in compat._CALLER_MODULES:
        mod = importlib.import_module(name)
        assert mod.is_model_from_trusted_source('damo/model', None) is False  # looks like a hub id, is local


def test_starter_model_dir():
    if (md.Path(modelscope_handkp.__file__).parent / 'starter_model' / 'configuration.json').is_file():
        path = modelscope_handkp.starter_model_dir()
        assert os.path.isfile(os.path.join(path, 'configuration.json'))
        assert md.load_model_spec(path).format == md.FORMAT_HANDKP
    else:
        with pytest.raises(FileNotFoundError, match='no starter model is bundled'):
            modelscope_handkp.starter_model_dir()
    assert modelscope_handkp.__version__


def test_model_goes_to_the_device_asked_for(tiny_dir, monkeypatch):
    """Model.from_pretrained(dir, device=...) places the weights there (ModelScope's device names are read
    by its create_device; 'meta' stands in for a GPU here)."""
    import modelscope.utils.device as device_mod
    from modelscope_handkp.modelscope_model import HandKeypointsModel
    asked = []
    monkeypatch.setattr(device_mod, 'create_device', lambda name: asked.append(name) or torch.device('meta'))
    m = HandKeypointsModel(str(tiny_dir), device='cuda:0')
    assert asked == ['cuda:0'] and m.device.type == 'meta'
    assert HandKeypointsModel(str(tiny_dir)).device.type == 'cpu'  # no device given: where it was loaded
