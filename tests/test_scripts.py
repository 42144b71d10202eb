"""The scripts of tools/ and benchmarks/: --help, argument errors, and what they may overwrite or leave behind.

Only argument parsing and tiny runs (no training, no benchmark); nothing here needs ``../shared``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / 'tools'
BENCH = ROOT / 'benchmarks'
STARTER = ROOT / 'modelscope_handkp' / 'starter_model'

if not TOOLS.is_dir() or not BENCH.is_dir():
    pytest.skip('tools/ and benchmarks/ are not in this installation (installed package without the repository)',
                allow_module_level=True)

needs_starter = pytest.mark.skipif(not (STARTER / 'pytorch_model.pt').is_file(),
                                   reason='no starter model is bundled in this checkout (tools/make_starter_model.py)')


def run_script(script: Path, *args, timeout: float = 180, pythonpath_first: Path | None = None, env=None):
    """``python script args`` from the repository root; ``pythonpath_first`` is put in front of PYTHONPATH
    (to hide an installed module behind a stub that fails to import)."""
    e = dict(os.environ, **(env or {}))
    if pythonpath_first is not None:
        e['PYTHONPATH'] = os.pathsep.join([str(pythonpath_first)] + ([e['PYTHONPATH']] if e.get('PYTHONPATH') else []))
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT), env=e)


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # benchmarks import each other
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def blocked(tmp_path: Path, module: str) -> Path:
    """A folder with a stub ``module`` that raises ImportError, as when it is not installed."""
    d = tmp_path / f'no_{module}'
    d.mkdir()
    (d / f'{module}.py').write_text(f'raise ImportError("No module named {module!r} (test stub)")\n')
    return d


# ---------------------------------------------------------------------------------------------
# --help
# ---------------------------------------------------------------------------------------------
SCRIPTS_WITH_OPTIONS = {
    'tools/train_small.py': ['--init-from', '--augment', '--resume', '--overwrite'],
    'tools/make_starter_model.py': ['src', '--dest', '--overwrite'],
    'tools/pack_open_hands.py': ['src', 'dst', '--max-hand', '--quality'],
    'tools/train_within.py': ['--budget', '--work-dir', '--max-epochs'],
    'tools/convert_palm_detector.py': ['--variant', '--tflite', '--out-dir', '--overwrite'],
    'benchmarks/run.py': ['--quick', '--levers', '--json', '--backends'],
    'benchmarks/eval_hgc.py': ['--model', '--data', '--json'],
    'benchmarks/shared_hands.py': ['models', '--data', '--json'],
    'benchmarks/mediapipe_speed.py': ['--images', '--limit'],
    'benchmarks/palm_detector_quality.py': ['--variant', '--data', '--threads', '--batch', '--skip-eval-hgc'],
    'benchmarks/int8_lever.py': [],
}


@pytest.mark.parametrize('script', sorted(SCRIPTS_WITH_OPTIONS))
def test_help_prints_usage_and_does_nothing_else(script):
    proc = run_script(ROOT / script, '--help', timeout=120)  # int8_lever.py used to run its 3-minute benchmark
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith('usage: ')
    for option in SCRIPTS_WITH_OPTIONS[script]:
        assert option in proc.stdout


def test_original_like_is_a_module_and_says_so():
    proc = run_script(BENCH / 'original_like.py', '--help', timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'python benchmarks/run.py' in proc.stdout and 'original' in proc.stdout


# ---------------------------------------------------------------------------------------------
# tools/train_small.py
# ---------------------------------------------------------------------------------------------
@needs_starter
def test_train_small_never_starts_silently_from_weights_of_an_earlier_init_from(tmp_path):
    ts = load(TOOLS / 'train_small.py', 'train_small_under_test')
    dst = tmp_path / 'init_model'
    ts.small_model_dir(str(dst), 128, 16, 1, False, augment='clutter', init_from=str(STARTER))
    weights = dst / 'pytorch_model.pt'
    assert weights.read_bytes() == (STARTER / 'pytorch_model.pt').read_bytes()
    # the same work dir again without --init-from: the trainer would load these weights
    with pytest.raises(FileExistsError, match='earlier --init-from run.*--overwrite'):
        ts.small_model_dir(str(dst), 128, 16, 1, False, augment='clutter')
    assert weights.is_file()
    # --resume continues the run that started from them: kept
    ts.small_model_dir(str(dst), 128, 16, 1, True, augment='clutter', resume=True)
    assert weights.read_bytes() == (STARTER / 'pytorch_model.pt').read_bytes()
    # --overwrite: a fresh run from random weights
    ts.small_model_dir(str(dst), 128, 16, 1, True, augment='clutter')
    assert not weights.exists()
    cfg = json.loads((dst / 'configuration.json').read_text())
    assert cfg['model']['image_size'] == [128, 128] and cfg['train']['max_epochs'] == 8


def test_train_small_other_processes_wait_for_this_runs_configuration(tmp_path):
    """The processes > 0 of a torchrun started as soon as init_model/configuration.json existed: one left by an
    earlier run with other settings (--overwrite --size 96) built another network there than in process 0, and a
    file being written could be read half."""
    import threading
    import time
    ts = load(TOOLS / 'train_small.py', 'train_small_under_test')
    dst = tmp_path / 'init_model'
    ts.small_model_dir(str(dst), 96, 16, 1, False)  # the earlier run
    path = dst / 'configuration.json'
    want = ts.model_configuration_text(128, 16, 1)
    assert path.read_text() != want
    with pytest.raises(SystemExit, match=r'process 1: .*configuration.json was not written with this run.s settings'):
        ts.wait_for_configuration(str(path), want, 1, timeout=0.5)
    writer = threading.Timer(0.5, ts.small_model_dir, (str(dst), 128, 16, 1, True))
    t0 = time.time()
    writer.start()
    ts.wait_for_configuration(str(path), want, 1, timeout=30)
    writer.join()
    assert time.time() - t0 >= 0.45 and path.read_text() == want
    assert json.loads(want)['model']['image_size'] == [128, 128] and not list(dst.glob('*.tmp.*'))


def test_train_small_init_from_a_missing_folder_says_what_to_pass(tmp_path):
    wd = tmp_path / 'wd'
    proc = run_script(TOOLS / 'train_small.py', '--data', tmp_path, '--work-dir', wd, '--init-from', tmp_path / 'nope')
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'configuration.json not found' in proc.stderr and "output_best/" in proc.stderr
    assert not wd.exists()


@needs_starter
def test_train_small_init_from_another_network_is_an_argument_error(tmp_path):
    wd = tmp_path / 'wd'
    proc = run_script(TOOLS / 'train_small.py', '--data', tmp_path, '--work-dir', wd, '--init-from', STARTER,
                      '--size', 256)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'pass the same network options' in proc.stderr and '--size 256' in proc.stderr
    assert '--modules 1 1 2 1 --stem-blocks 2' in proc.stderr
    assert not (wd / 'init_model' / 'pytorch_model.pt').exists()


# ---------------------------------------------------------------------------------------------
# tools/make_starter_model.py
# ---------------------------------------------------------------------------------------------
@needs_starter
def test_make_starter_model_overwrite_keeps_folders_put_there_by_hand(tmp_path):
    msm = load(TOOLS / 'make_starter_model.py', 'make_starter_model_under_test')
    dest = tmp_path / 'starter_model'
    args = [str(STARTER), '--dest', str(dest), '--card', str(STARTER / 'README.md')]
    msm.main(args)
    (dest / 'extra').mkdir()
    (dest / 'extra' / 'notes.txt').write_text('mine')
    (dest / 'NOTICE.txt').write_text('also mine')
    (dest / 'pytorch_model.pt').write_bytes(b'stale')
    with pytest.raises(SystemExit, match='--overwrite'):
        msm.main(args)
    assert (dest / 'pytorch_model.pt').read_bytes() == b'stale'
    msm.main(args + ['--overwrite'])  # used to fail with IsADirectoryError on extra/
    assert (dest / 'pytorch_model.pt').read_bytes() == (STARTER / 'pytorch_model.pt').read_bytes()
    assert (dest / 'extra' / 'notes.txt').read_text() == 'mine' and (dest / 'NOTICE.txt').read_text() == 'also mine'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['starter_model']  # no staging folder left


@needs_starter
def test_make_starter_model_failing_to_move_the_new_folder_keeps_the_old(tmp_path, monkeypatch):
    """The old folder was removed before the new one was moved in: a failure in between left no model."""
    msm = load(TOOLS / 'make_starter_model.py', 'make_starter_model_under_test')
    dest = tmp_path / 'starter_model'
    args = [str(STARTER), '--dest', str(dest), '--card', str(STARTER / 'README.md')]
    msm.main(args)
    (dest / 'mine.txt').write_text('mine')
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    real = msm.os.replace

    def failing(a, b):
        if Path(a).name == 'starter_model' and Path(b) == dest:
            raise OSError(28, 'No space left on device')
        return real(a, b)

    monkeypatch.setattr(msm.os, 'replace', failing)
    with pytest.raises(OSError, match='No space left'):
        msm.main(args + ['--overwrite'])
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['starter_model']


@needs_starter
def test_make_starter_model_checks_the_card_before_touching_anything(tmp_path):
    msm = load(TOOLS / 'make_starter_model.py', 'make_starter_model_under_test')
    dest = tmp_path / 'starter_model'
    with pytest.raises(SystemExit, match='missing.md not found: pass --card'):
        msm.main([str(STARTER), '--dest', str(dest), '--card', str(tmp_path / 'missing.md')])
    assert not dest.exists()
    (tmp_path / 'file').write_text('x')
    with pytest.raises(SystemExit, match='is a file, not a model directory'):
        msm.main([str(STARTER), '--dest', str(tmp_path / 'file'), '--card', str(STARTER / 'README.md')])
    assert (tmp_path / 'file').read_text() == 'x'


def test_make_starter_model_without_a_model_directory(tmp_path):
    proc = run_script(TOOLS / 'make_starter_model.py', tmp_path, '--dest', tmp_path / 'dest')
    assert proc.returncode == 1 and 'configuration.json not found' in proc.stderr
    assert not (tmp_path / 'dest').exists()


# ---------------------------------------------------------------------------------------------
# tools/convert_palm_detector.py
# ---------------------------------------------------------------------------------------------
def test_convert_palm_detector_missing_tflite_file(tmp_path):
    out = tmp_path / 'out'
    proc = run_script(TOOLS / 'convert_palm_detector.py', '--variant', 'lite', '--tflite', tmp_path / 'x.tflite',
                      '--out-dir', out)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'x.tflite does not exist' in proc.stderr and 'palm_detection_lite.tflite' in proc.stderr
    assert 'leave --tflite out' in proc.stderr
    assert not out.exists()


def test_convert_palm_detector_without_tflite_names_the_extra_before_downloading(tmp_path):
    out = tmp_path / 'out'
    proc = run_script(TOOLS / 'convert_palm_detector.py', '--variant', 'full', '--out-dir', out,
                      pythonpath_first=blocked(tmp_path, 'tflite'),
                      env={'MODELSCOPE_HANDKP_CACHE': str(tmp_path / 'cache')})  # where a download would go
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert 'modelscope-handkp[convert]' in proc.stderr
    assert not out.exists() and not (tmp_path / 'cache').exists()


# ---------------------------------------------------------------------------------------------
# benchmarks/run.py
# ---------------------------------------------------------------------------------------------
def test_run_rejects_unknown_backends_before_measuring():
    proc = run_script(BENCH / 'run.py', '--backends', 'eager,onnx', '--no-memory', timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'unknown kind(s) onnx' in proc.stderr and 'eager, fused, onnxruntime, openvino' in proc.stderr
    assert '== machine ==' not in proc.stdout


def test_run_rejects_repeats_below_one():
    proc = run_script(BENCH / 'run.py', '--repeats', '-1', '--no-memory', timeout=120)
    assert proc.returncode == 2 and '--repeats must be at least 1, got -1' in proc.stderr


# ---------------------------------------------------------------------------------------------
# benchmarks/int8_lever.py
# ---------------------------------------------------------------------------------------------
def test_int8_lever_names_what_it_misses(tmp_path):
    proc = run_script(BENCH / 'int8_lever.py', timeout=120, env={'HANDKP_SHARED': str(tmp_path / 'shared')})
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert 'hrnet_w18_hand_manifest.json' in proc.stderr and 'HANDKP_SHARED' in proc.stderr
    assert str(tmp_path / 'shared' / 'data' / 'hands') in proc.stderr


def test_int8_lever_removes_its_quantised_graphs(monkeypatch):
    mod = load(BENCH / 'int8_lever.py', 'int8_lever_under_test')
    seen = []

    def fake_measure(tmp):
        (tmp / 'w18_int8.onnx').write_bytes(b'x' * 1000)
        seen.append(tmp)

    monkeypatch.setattr(mod, 'missing_prerequisites', lambda: [])
    monkeypatch.setattr(mod, 'measure', fake_measure)
    mod.main([])
    assert len(seen) == 1 and seen[0].name.startswith('handkp-int8-') and not seen[0].exists()


def test_int8_lever_prerequisites_name_the_onnx_extra(monkeypatch):
    mod = load(BENCH / 'int8_lever.py', 'int8_lever_under_test')
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'onnxruntime' else real(name, *a))
    missing = mod.missing_prerequisites()
    assert 'the onnxruntime package (pip install "modelscope-handkp[onnx]")' in missing


# ---------------------------------------------------------------------------------------------
# benchmarks/eval_hgc.py
# ---------------------------------------------------------------------------------------------
def test_eval_hgc_keypoints_inside_ignore_unlabelled_points():
    mod = load(BENCH / 'eval_hgc.py', 'eval_hgc_under_test')
    boxes = np.array([[50, 50, 150, 150], [0, 0, 60, 60]], np.float32)
    kp = np.array([[60, 60], [140, 140], [0, 0]], np.float32)  # the last one unlabelled, at (0, 0)
    assert mod.hand_inside(boxes, kp, np.array([1, 1, 0])).tolist() == [True, False]
    assert mod.hand_inside(boxes, kp, np.array([1, 1, 1])).tolist() == [False, False]
    assert mod.hand_inside(boxes, kp, np.zeros(3)).tolist() == [False, False]


def test_eval_hgc_missing_annotations_say_what_to_pass(tmp_path):
    proc = run_script(BENCH / 'eval_hgc.py', '--data', tmp_path, timeout=120)
    assert proc.returncode == 1 and 'has 0 files matching split None' in proc.stderr and '--data' in proc.stderr


@needs_starter
def test_eval_hgc_unreadable_image_is_named(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'images').mkdir()
    kp = [v for i in range(21) for v in (10.0 + i, 20.0 + i, 1)]
    (tmp_path / 'annotations' / 'test.json').write_text(json.dumps({
        'images': [{'id': 1, 'file_name': 'gone.jpg'}],
        'annotations': [{'image_id': 1, 'righthand_valid': True, 'righthand_kpts': kp,
                         'righthand_box': [5, 5, 40, 40]}]}))
    proc = run_script(BENCH / 'eval_hgc.py', '--data', tmp_path, timeout=180)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert 'gone.jpg' in proc.stderr and 'cannot be read' in proc.stderr


# ---------------------------------------------------------------------------------------------
# benchmarks/mediapipe_speed.py, palm_detector_quality.py, shared_hands.py
# ---------------------------------------------------------------------------------------------
def test_mediapipe_speed_missing_images_folder(tmp_path):
    proc = run_script(BENCH / 'mediapipe_speed.py', '--images', tmp_path / 'nope')
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert 'nope is not a folder; pass --images' in proc.stderr


def test_mediapipe_speed_without_mediapipe_says_how_to_install_it(tmp_path):
    proc = run_script(BENCH / 'mediapipe_speed.py', '--images', tmp_path, pythonpath_first=blocked(tmp_path, 'mediapipe'))
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert 'pip install mediapipe==0.10.21' in proc.stderr


def test_palm_detector_quality_rejects_batch_zero(tmp_path):
    proc = run_script(BENCH / 'palm_detector_quality.py', '--batch', 0, '--data', tmp_path, timeout=120)
    assert proc.returncode == 2 and '--batch must be at least 1, got 0' in proc.stderr


def test_palm_detector_quality_and_shared_hands_without_data(tmp_path):
    proc = run_script(BENCH / 'palm_detector_quality.py', '--data', tmp_path, timeout=120)
    assert proc.returncode == 1 and 'hands not found: pass --data' in proc.stderr
    proc = run_script(BENCH / 'shared_hands.py', '--data', tmp_path, timeout=120)
    assert proc.returncode == 1 and 'freihand/test_freihand.json missing' in proc.stderr


# ---------------------------------------------------------------------------------------------
# tools/pack_open_hands.py
# ---------------------------------------------------------------------------------------------
def _hand_folder(root: Path) -> Path:
    import cv2
    rng = np.random.default_rng(0)
    (root / 'images' / 'a').mkdir(parents=True)
    (root / 'annotations').mkdir()
    cv2.imwrite(str(root / 'images' / 'a' / 'big.png'), rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    cv2.imwrite(str(root / 'images' / 'a' / 'small.jpg'), rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
    kp = np.zeros((21, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(100, 300, 21), np.linspace(50, 250, 21), 1
    big = {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0, 'righthand_valid': True,
           'righthand_kpts': kp.ravel().tolist(), 'righthand_box': [100, 50, 200, 200], 'lefthand_valid': False,
           'lefthand_kpts': [0] * 63, 'lefthand_box': [0, 0, 0, 0], 'bbox': [100, 50, 200, 200], 'area': 40000,
           'face_kpts': [0] * 204}
    small = dict(big, id=2, image_id=2, righthand_kpts=(kp * (0.2, 0.2, 1)).ravel().tolist(),
                 righthand_box=[20, 10, 40, 40], bbox=[20, 10, 40, 40], area=1600)
    data = {'images': [{'id': 1, 'file_name': 'a/big.png', 'width': 400, 'height': 300},
                       {'id': 2, 'file_name': 'a/small.jpg', 'width': 100, 'height': 100}],
            'annotations': [big, small], 'categories': [{'id': 1, 'name': 'person'}]}
    (root / 'annotations' / 'train.json').write_text(json.dumps(data))
    return root


def test_pack_open_hands_scales_images_and_labels_together(tmp_path):
    import cv2
    src = _hand_folder(tmp_path / 'src')
    dst = tmp_path / 'dst'
    proc = run_script(TOOLS / 'pack_open_hands.py', src, dst, '--splits', 'train', '--max-hand', 160)
    assert proc.returncode == 0, proc.stderr
    d = json.loads((dst / 'annotations' / 'train.json').read_text())
    big, small = d['annotations']
    assert d['images'][0] == {'id': 1, 'file_name': 'a/big.webp', 'width': 320, 'height': 240}
    assert cv2.imread(str(dst / 'images' / 'a' / 'big.webp')).shape == (240, 320, 3)
    np.testing.assert_allclose(np.reshape(big['righthand_kpts'], (21, 3))[[0, 20]], [[80, 40, 1], [240, 200, 1]])
    assert big['righthand_box'] == [80, 40, 160, 160] and big['area'] == 25600 and 'face_kpts' not in big
    # a JPEG whose hands are small enough is copied byte for byte, its labels unchanged
    assert d['images'][1]['file_name'] == 'a/small.jpg'
    assert (dst / 'images' / 'a' / 'small.jpg').read_bytes() == (src / 'images' / 'a' / 'small.jpg').read_bytes()
    assert small['righthand_kpts'] == json.loads((src / 'annotations' / 'train.json').read_text())[
        'annotations'][1]['righthand_kpts']
    # the packed folder is a dataset this package reads
    from modelscope_handkp.datasets.coco_wholebody_hand import CocoWholeBodyHandDataset
    ds = CocoWholeBodyHandDataset(str(dst / 'annotations' / 'train.json'), str(dst / 'images'), test_mode=True)
    assert len(ds) == 2
    # an existing destination is never overwritten
    again = run_script(TOOLS / 'pack_open_hands.py', src, dst, '--splits', 'train')
    assert again.returncode == 2 and 'exists' in again.stderr


# ---------------------------------------------------------------------------------------------
# tools/train_within.py
# ---------------------------------------------------------------------------------------------
def test_train_within_refuses_options_it_sets_and_existing_work_dirs(tmp_path):
    wd = tmp_path / 'run'
    proc = run_script(TOOLS / 'train_within.py', '--budget', 60, '--work-dir', wd, '--', '--epochs', 5)
    assert proc.returncode == 2 and '--epochs is set by this script' in proc.stderr
    (tmp_path / 'run_calibration').mkdir()
    proc = run_script(TOOLS / 'train_within.py', '--budget', 60, '--work-dir', wd, '--', '--data', tmp_path)
    assert proc.returncode == 2 and 'run_calibration exists' in proc.stderr and 'Traceback' not in proc.stderr
    assert not wd.exists()


def test_train_within_reports_a_failed_calibration(tmp_path):
    wd = tmp_path / 'run'
    proc = run_script(TOOLS / 'train_within.py', '--budget', 60, '--work-dir', wd, '--', '--data',
                      tmp_path / 'missing', '--device', 'cpu')
    assert proc.returncode == 1 and 'calibration run failed' in proc.stderr
    assert not wd.exists()
