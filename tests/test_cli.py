"""The ``modelscope-handkp`` command line (issue 6): predict, video, train, eval, export, convert.

Commands run in-process through ``cli.main([...])`` (one real subprocess checks ``python -m
modelscope_handkp --help``).  A tiny random HRNet (64 x 64 px input) keeps the CPU time low; the
published-model test uses the synthetic HRNet-w18 weights of the reference fixtures.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import modelscope_handkp
from modelscope_handkp import cli
from modelscope_handkp.checkpoint import read_state_dict
from modelscope_handkp.model_dir import decode_jsonplus, handkp_configuration
from modelscope_handkp.models import build_hand_model, hrnet_extra, hrnet_model_cfg

ROOT = Path(__file__).resolve().parents[1]
K = 21


# ----------------------------------------------------------------------------- helpers
def tiny_model_dir(dst: Path, detector=None, seed: int = 0) -> str:
    """This plugin's model directory: the repository's configuration.json (when present) with a tiny
    HRNet (width 8, 64 x 64 px input) and random weights."""
    base = None
    if (ROOT / 'configuration.json').is_file():
        base = decode_jsonplus(json.loads((ROOT / 'configuration.json').read_text()))
    mc = hrnet_model_cfg(hrnet_extra(8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1), image_size=(64, 64))
    cfg = handkp_configuration(mc, detector or {'type': 'none'}, base=base)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / 'configuration.json').write_text(json.dumps(cfg, indent=1))
    torch.manual_seed(seed)
    net = build_hand_model(mc)
    with torch.no_grad():  # non-trivial BN statistics, so the heatmaps are not flat
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save({'state_dict': net.state_dict(), 'meta': {}}, dst / 'pytorch_model.pt')
    return str(dst)


def run(argv, capsys):
    """main(argv) -> (exit code, stdout JSON lines (parsed), stderr text)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return code, lines, err


def hand_pipeline(model_dir, **kwargs):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    return pipeline(Tasks.hand_2d_keypoints, model=model_dir, **kwargs)


def central_boxes(w, h, n=1):
    """``n`` square boxes around the image centre whose padded (x1.25) crops lie inside the image."""
    side = 0.5 * min(w, h) / 1.25
    cx, cy = w / 2, h / 2
    boxes = []
    for i in range(n):
        dx = (i - (n - 1) / 2) * side * 0.3
        boxes.append([cx + dx - side / 2, cy - side / 2, cx + dx + side / 2, cy + side / 2])
    return boxes


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp('cli') / 'tiny')


@pytest.fixture(scope='module')
def images(data_dir):
    files = sorted((data_dir / 'hands' / 'onehand10k').glob('*.jpg'))
    assert len(files) == 4
    return [str(f) for f in files]


# ----------------------------------------------------------------------------- help / arguments
def test_module_help_subprocess():
    r = subprocess.run([sys.executable, '-m', 'modelscope_handkp', '--help'], capture_output=True, text=True,
                       timeout=300, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    for cmd in ('predict', 'video', 'train', 'eval', 'export', 'convert', 'convert-palm-detector'):
        assert cmd in r.stdout
    assert r.stdout.startswith('usage: modelscope-handkp')


def test_bad_arguments_exit_2(capsys, tmp_path, images):
    assert cli.main([]) == 2
    assert cli.main(['no-such-command']) == 2
    assert cli.main(['predict']) == 2  # INPUT is required
    assert cli.main(['predict', images[0], '--detector', 'yolo']) == 2
    assert cli.main(['predict', '--help']) == 0
    capsys.readouterr()
    code, _, err = run(['predict', images[0], '--score-thr', '1.5', '--out', tmp_path / 'o'], capsys)
    assert code == 2 and '--score-thr must be in [0, 1]' in err
    code, _, err = run(['predict', images[0], '--boxes', '[[1, 2, 3', '--out', tmp_path / 'o'], capsys)
    assert code == 2 and 'not valid JSON' in err
    code, _, err = run(['predict', *images[:2], '--boxes', '[[10, 10, 50, 50]]', '--out', tmp_path / 'o'], capsys)
    assert code == 2 and 'single image' in err and '2 images' in err
    code, _, err = run(['predict', images[0], '--boxes', '[[10, 10, NaN, 50]]', '--out', tmp_path / 'o'], capsys)
    assert code == 2 and 'NaN' in err
    code, _, err = run(['predict', images[0], '--boxes', '[[10, 10, 50]]', '--out', tmp_path / 'o'], capsys)
    assert code == 2 and 'x1, y1, x2, y2' in err
    code, _, err = run(['train', '--data', tmp_path, '--work-dir', tmp_path / 'w', '--epochs', '0'], capsys)
    assert code == 2 and '--epochs' in err
    code, _, err = run(['train', '--data', tmp_path, '--work-dir', tmp_path / 'w', '--cfg-options', 'novalue'],
                       capsys)
    assert code == 2 and 'key=value' in err
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'w').exists()  # nothing written
    assert 'Traceback' not in err


def test_parse_boxes_keys_name_one_image_each(tmp_path, capsys):
    a, b = tmp_path / 'a' / 'img.jpg', tmp_path / 'b' / 'img.jpg'
    ims = [cli.InputImage(str(a), 'a/img.jpg'), cli.InputImage(str(b), 'b/img.jpg')]
    box = [[1, 2, 30, 40]]
    # a path names its image only -- also when another input has the same file name
    out = cli.parse_boxes(json.dumps({str(b): box}), ims)
    assert list(out) == [1]
    np.testing.assert_allclose(out[1], box)
    # a bare name shared by two inputs is ambiguous: a usage error, not boxes for both (nor for the first)
    with pytest.raises(cli.UsageError, match=r"'img.jpg' is the file name of 2 input images.*by their paths"):
        cli.parse_boxes(json.dumps({'img.jpg': box}), ims)
    single_files = [cli.InputImage(str(a), 'img.jpg'), cli.InputImage(str(b), 'img_2.jpg')]  # as predict names them
    with pytest.raises(cli.UsageError, match='is the file name of 2 input images'):
        cli.parse_boxes(json.dumps({'img.jpg': box}), single_files)
    assert cli.parse_boxes(json.dumps({'img_2.jpg': box}), single_files) == {}  # a drawing's name is no key
    # a path that is none of the inputs does not fall back to its file name
    assert cli.parse_boxes(json.dumps({str(tmp_path / 'c' / 'img.jpg'): box}), ims) == {}
    assert 'matches none of the input images' in capsys.readouterr().err
    # a bare name of a single input still works; two entries for one image are refused
    out = cli.parse_boxes(json.dumps({'img.jpg': box}), ims[:1])
    assert list(out) == [0]
    with pytest.raises(cli.UsageError, match=r"both name"):
        cli.parse_boxes(json.dumps({'img.jpg': box, str(a): [[5, 5, 9, 9]]}), ims[:1])


def test_parse_boxes_reads_a_file_with_a_byte_order_mark_and_names_a_folder(tmp_path):
    ims = [cli.InputImage(str(tmp_path / 'img.jpg'), 'img.jpg')]
    bom = tmp_path / 'boxes.json'
    bom.write_bytes(b'\xef\xbb\xbf[[60, 40, 250, 260]]')  # as Windows Notepad saves UTF-8
    np.testing.assert_allclose(cli.parse_boxes(str(bom), ims)[0], [[60, 40, 250, 260]])
    with pytest.raises(cli.UsageError, match='is a folder; pass a .json file'):
        cli.parse_boxes(str(tmp_path), ims)


def test_parse_cfg_options():
    assert cli.parse_cfg_options(['a.b=1', 'c=[170, 200]', 'd=text', 'e=true', 'f=0.5', 'g=null']) == {
        'a.b': 1, 'c': [170, 200], 'd': 'text', 'e': True, 'f': 0.5, 'g': None}


# ----------------------------------------------------------------------------- predict
def test_predict_with_boxes_matches_pipeline(tiny_dir, images, tmp_path, capsys):
    sizes = {p: cv2.imread(p).shape[:2] for p in images}
    boxes = {os.path.basename(p): central_boxes(sizes[p][1], sizes[p][0], n=2 if i == 1 else 1)
             for i, p in enumerate(images)}
    boxes_file = tmp_path / 'boxes.json'
    boxes_file.write_text(json.dumps(boxes))
    out = tmp_path / 'out'
    code, lines, err = run(['predict', *images, '--model', tiny_dir, '--out', out, '--boxes', boxes_file,
                            '--no-progress'], capsys)
    assert code == 0, err
    assert [r['image'] for r in lines] == images
    pipe = hand_pipeline(tiny_dir)
    for path, rec in zip(images, lines):
        h, w = sizes[path]
        assert (rec['width'], rec['height']) == (w, h)
        given = boxes[os.path.basename(path)]
        assert len(rec['hands']) == len(given)
        kps = np.asarray([hand['keypoints'] for hand in rec['hands']], np.float64)
        assert kps.shape == (len(given), K, 3)
        assert (kps[..., 0] >= 0).all() and (kps[..., 0] < w).all()
        assert (kps[..., 1] >= 0).all() and (kps[..., 1] < h).all()
        np.testing.assert_allclose([hand['box'] for hand in rec['hands']], given, atol=1e-3)
        assert [hand['score'] for hand in rec['hands']] == [1.0] * len(given)
        # the same numbers as the pipeline called on the file path (BGR file -> RGB, flip test on)
        ref = pipe(path, boxes=given)
        np.testing.assert_allclose(kps[..., :2], ref['keypoints'][..., :2], atol=1e-3)
        np.testing.assert_allclose(kps[..., 2], ref['keypoints'][..., 2], atol=1e-4)
        assert not np.allclose(kps[0, :, :2], kps[0, :1, :2])  # not all keypoints at one spot
        # the drawn image: same size as the input, different pixels
        drawn = cv2.imread(str(out / os.path.basename(path)))
        orig = cv2.imread(path)
        assert drawn is not None and drawn.shape == orig.shape
        assert np.abs(drawn.astype(np.int16) - orig.astype(np.int16)).max() > 100
    saved = [json.loads(line) for line in (out / 'predictions.jsonl').read_text().splitlines()]
    assert saved == lines
    assert 'Traceback' not in err


def test_predict_whole_image_folder_json_only(tiny_dir, data_dir, images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = data_dir / 'hands' / 'onehand10k'
    code, lines, err = run(['predict', folder, '--model', tiny_dir, '--detector', 'whole-image', '--json-only',
                            '--no-flip'], capsys)
    assert code == 0, err
    assert sorted(r['image'] for r in lines) == images  # the folder, searched for images
    pipe = hand_pipeline(tiny_dir, detector='whole_image', flip_test=False)
    for rec in lines:
        w, h = rec['width'], rec['height']
        assert len(rec['hands']) == 1
        hand = rec['hands'][0]
        assert hand['box'] == [0.0, 0.0, float(w), float(h)] and hand['score'] == 1.0
        kps = np.asarray(hand['keypoints'])
        assert kps.shape == (K, 3)
        # inside the padded square crop around the whole image (DARK may step one heatmap pixel beyond
        # its border: random weights put peaks anywhere)
        side = 1.25 * max(w, h)
        limit = side / 2 + 1.01 * side / 16
        assert (np.abs(kps[:, :2] - [w / 2, h / 2]) <= limit).all()
        ref = pipe(rec['image'])
        np.testing.assert_allclose(kps[:, :2], ref['keypoints'][0, :, :2], atol=1e-3)
    assert os.listdir(tmp_path) == []  # --json-only without --out writes nothing


def test_predict_auto_detector_is_palm_for_models_without_one(tiny_dir, images, capsys):
    """A model directory that names no detector (detector.type "none") gets the bundled palm detector."""
    code, lines, err = run(['predict', *images, '--model', tiny_dir, '--json-only', '--no-flip'], capsys)
    assert code == 0, err
    pipe = hand_pipeline(tiny_dir, detector='palm', flip_test=False)
    for rec in lines:
        assert len(rec['hands']) >= 1  # one real hand per OneHand10K image
        ref = pipe(rec['image'])
        assert len(rec['hands']) == len(ref['boxes'])
        np.testing.assert_allclose([h['box'] for h in rec['hands']], ref['boxes'], atol=1e-3)
        np.testing.assert_allclose([h['rotation'] for h in rec['hands']], ref['rotations'], atol=1e-3)
        np.testing.assert_allclose([h['score'] for h in rec['hands']], ref['scores'], atol=1e-4)
        np.testing.assert_allclose([h['keypoints'] for h in rec['hands']], ref['keypoints'], atol=1e-3)
        assert all(0.5 <= h['score'] <= 1 for h in rec['hands'])
    # a threshold no detection reaches: no hands, still one line per image
    code, lines, err = run(['predict', *images, '--model', tiny_dir, '--json-only', '--score-thr', '1'], capsys)
    assert code == 0 and [r['hands'] for r in lines] == [[]] * len(images), err


def test_predict_overwrite_protection(tiny_dir, images, tmp_path, capsys):
    out = tmp_path / 'out'
    args = ['predict', images[0], '--model', tiny_dir, '--out', out, '--boxes', '[[40, 120, 160, 240]]',
            '--no-flip']
    code, lines, _ = run(args, capsys)
    assert code == 0 and len(lines) == 1
    drawn = out / os.path.basename(images[0])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {'predictions.jsonl', drawn.name}
    code, lines, err = run(args, capsys)
    assert code == 1 and lines == []
    assert str(out / 'predictions.jsonl') in err and 'already exists' in err and '--overwrite' in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # only the drawn image is in the way
    (out / 'predictions.jsonl').unlink()
    code, _, err = run(args, capsys)
    assert code == 1 and str(drawn) in err
    code, lines, err = run(args + ['--overwrite'], capsys)
    assert code == 0 and len(lines) == 1, err
    # never over an input image, even with --overwrite
    src = tmp_path / 'in'
    src.mkdir()
    shutil.copy(images[0], src / 'hand.jpg')
    data = (src / 'hand.jpg').read_bytes()
    code, _, err = run(['predict', src / 'hand.jpg', '--model', tiny_dir, '--out', src, '--overwrite',
                        '--detector', 'whole-image'], capsys)
    assert code == 2 and 'input image' in err
    assert (src / 'hand.jpg').read_bytes() == data and sorted(os.listdir(src)) == ['hand.jpg']


def test_predict_unreadable_inputs_continue_and_exit_1(tiny_dir, images, tmp_path, capsys):
    src = tmp_path / 'in'
    src.mkdir()
    shutil.copy(images[0], src / 'good.jpg')
    (src / 'text.jpg').write_text('not an image at all\n')
    (src / 'empty.png').write_bytes(b'')
    jpeg = Path(images[1]).read_bytes()
    (src / 'truncated.jpg').write_bytes(jpeg[:len(jpeg) // 2])
    missing = tmp_path / 'missing.jpg'
    code, lines, err = run(['predict', src, missing, tmp_path / 'nothing-*.png', '--model', tiny_dir,
                            '--detector', 'whole-image', '--out', tmp_path / 'out', '--no-flip'], capsys)
    assert code == 1
    assert [r['image'] for r in lines] == [str(src / 'good.jpg')] and len(lines[0]['hands']) == 1
    assert f'{missing}: no such file or folder' in err
    assert 'nothing-*.png: no file matches' in err
    assert f'{src / "text.jpg"}: ' in err and 'not a readable image' in err
    assert f'{src / "empty.png"}: ' in err and 'empty (0 bytes)' in err
    assert f'{src / "truncated.jpg"}: ' in err and 'truncated JPEG' in err
    assert '5 input(s) failed' in err and 'Traceback' not in err
    assert sorted(os.listdir(tmp_path / 'out')) == ['good.jpg', 'predictions.jsonl']


def _image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    """A random BGR picture of ``w`` x ``h`` px written as JPEG bytes to ``path`` (whatever its extension)."""
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode('.jpg', img)[1].tobytes())
    return path


def _size(path: Path):
    img = cv2.imread(str(path))
    return img.shape[1], img.shape[0]


def test_predict_repeated_names_never_share_a_drawing(tiny_dir, tmp_path, capsys):
    imgs = tmp_path / 'imgs'
    inputs = [_image(imgs / 'a_2.jpg', 40, 30), _image(imgs / 'd1' / 'a.jpg', 50, 30),
              _image(imgs / 'd2' / 'a.jpg', 60, 30)]
    found, errors = cli.collect_inputs([str(p) for p in inputs])
    assert errors == [] and [im.rel for im in found] == ['a_2.jpg', 'a.jpg', 'a_3.jpg']
    out = tmp_path / 'o1'
    args = ['predict', *inputs, '--model', tiny_dir, '--out', out, '--detector', 'whole-image', '--no-flip']
    for extra in ([], ['--overwrite']):
        code, lines, err = run(args + extra, capsys)
        assert code == 0 and [r['image'] for r in lines] == [str(p) for p in inputs], err
        # each input has its own drawing (of its own size)
        assert {n: _size(out / n) for n in ('a_2.jpg', 'a.jpg', 'a_3.jpg')} == {
            'a_2.jpg': (40, 30), 'a.jpg': (50, 30), 'a_3.jpg': (60, 30)}
        assert sorted(os.listdir(out)) == ['a.jpg', 'a_2.jpg', 'a_3.jpg', 'predictions.jsonl']
    # a drawing that cannot be written: the image failed, and its JSON line is not written as a success
    (out / 'a.jpg').unlink()
    (out / 'a.jpg').mkdir()
    code, lines, err = run(args + ['--overwrite'], capsys)
    assert code == 1 and f'{inputs[1]}: ' in err and '1 input(s) failed' in err
    assert [r['image'] for r in lines] == [str(inputs[0]), str(inputs[2])]
    saved = [json.loads(line)['image'] for line in (out / 'predictions.jsonl').read_text().splitlines()]
    assert saved == [str(inputs[0]), str(inputs[2])]


def test_predict_input_extension_opencv_cannot_write(tiny_dir, tmp_path, capsys, monkeypatch):
    src = tmp_path / 'in'
    inputs = [_image(src / 'photo.jfif', 40, 30), _image(src / 'photo.jpg', 50, 30), _image(src / 'scan', 60, 30),
              _image(src / 'pic.PNG', 70, 30)]
    out = tmp_path / 'out'
    code, lines, err = run(['predict', *inputs, '--model', tiny_dir, '--out', out, '--detector', 'whole-image',
                            '--no-flip'], capsys)
    assert code == 0 and len(lines) == 4, err
    assert sorted(os.listdir(out)) == ['photo.jpg', 'photo_2.jpg', 'pic.PNG', 'predictions.jsonl', 'scan.jpg']
    assert [_size(out / n) for n in ('photo.jpg', 'photo_2.jpg', 'scan.jpg', 'pic.PNG')] == [
        (40, 30), (50, 30), (60, 30), (70, 30)]
    # an OpenCV error while drawing one image fails that image only
    import modelscope_handkp.draw as draw_mod
    real = draw_mod.draw_hands

    def draw_hands(image, result, **kw):
        if image.shape[1] == 50:
            raise cv2.error('OpenCV(4) bad drawing')
        return real(image, result, **kw)

    monkeypatch.setattr(draw_mod, 'draw_hands', draw_hands)
    code, lines, err = run(['predict', *inputs, '--model', tiny_dir, '--out', tmp_path / 'out2', '--detector',
                            'whole-image', '--no-flip'], capsys)
    assert code == 1 and len(lines) == 3 and f'{inputs[1]}: OpenCV(4) bad drawing' in err
    assert '1 input(s) failed' in err and 'Traceback' not in err


def test_predict_globs_skip_the_output_folder(tiny_dir, images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(('a.jpg', 'b.jpg')):
        shutil.copy(images[i], tmp_path / name)
    args = ['predict', '*', '--model', tiny_dir, '--detector', 'whole-image', '--no-flip', '--overwrite']
    for _ in range(2):  # the second run must not pick up the drawings of the first (in ./handkp_out)
        code, lines, err = run(args, capsys)
        assert code == 0 and [r['image'] for r in lines] == ['a.jpg', 'b.jpg'], err
    assert sorted(os.listdir('handkp_out')) == ['a.jpg', 'b.jpg', 'predictions.jsonl']
    args = ['predict', 'imgs/**/*.jpg', '--out', 'imgs/out', '--model', tiny_dir, '--detector', 'whole-image',
            '--no-flip', '--overwrite']
    os.makedirs('imgs/sub')
    shutil.copy(images[0], 'imgs/sub/c.jpg')
    for _ in range(2):
        code, lines, err = run(args, capsys)
        assert code == 0 and [r['image'] for r in lines] == ['imgs/sub/c.jpg'], err
    # only drawings match: say so
    code, lines, err = run(['predict', 'imgs/out/*.jpg', '--out', 'imgs/out', '--model', tiny_dir], capsys)
    assert code == 1 and lines == [] and 'inside the output folder imgs/out' in err


def test_predict_without_results_leaves_no_predictions_file(tiny_dir, images, tmp_path, capsys):
    bad = tmp_path / 'bad.jpg'
    bad.write_text('not an image\n')
    out = tmp_path / 'out'
    args = ['--model', tiny_dir, '--out', out, '--detector', 'whole-image', '--no-flip']
    code, lines, err = run(['predict', bad, *args], capsys)
    assert code == 1 and lines == [] and 'not a readable image' in err
    assert not out.exists()  # neither predictions.jsonl nor a temporary file, nor the folder this run made
    code, lines, err = run(['predict', images[0], *args], capsys)  # the next run is not blocked
    assert code == 0 and len(lines) == 1, err
    umask = os.umask(0)
    os.umask(umask)
    assert (out / 'predictions.jsonl').stat().st_mode & 0o777 == 0o666 & ~umask  # a plain file, not a private temp
    # with --overwrite and no result, an earlier predictions.jsonl is kept as it was
    before = (out / 'predictions.jsonl').read_bytes()
    code, lines, err = run(['predict', bad, *args, '--overwrite'], capsys)
    assert code == 1 and 'left as it was' in err
    assert (out / 'predictions.jsonl').read_bytes() == before
    assert sorted(os.listdir(out)) == [os.path.basename(images[0]), 'predictions.jsonl']


def test_bad_device_and_video_arguments_exit_2(images, tmp_path, capsys, monkeypatch):
    missing_model = tmp_path / 'no_model'  # never reached: arguments are checked first
    for cmd in (['predict', images[0], '--out', tmp_path / 'o'], ['video', images[0], '--out', tmp_path / 'o.avi'],
                ['train', '--data', tmp_path, '--work-dir', tmp_path / 'w'], ['eval', '--data', tmp_path]):
        code, _, err = run(cmd + ['--model', missing_model, '--device', 'foo'], capsys)
        assert code == 2 and "--device 'foo': not a device" in err and 'gpu:N' in err, (cmd, err)
    assert [cli.check_device(d) for d in ('cpu', 'GPU', 'cuda', 'cuda:1', 'gpu:0', None)] == [
        'cpu', 'gpu', 'cuda', 'cuda:1', 'gpu:0', None]
    for bad in ('cpu:0', 'cuda:', 'gpu:x', 'tpu', ''):
        with pytest.raises(cli.UsageError):
            cli.check_device(bad)
    src = tmp_path / 'in.avi'
    src.write_bytes(b'not checked')
    code, _, err = run(['video', src, '--out', tmp_path / 'o.avi', '--score-thr', '5', '--model', missing_model],
                       capsys)
    assert code == 2 and '--score-thr must be in [0, 1], got 5.0' in err
    # the output is the input / a folder: said so, with and without --overwrite
    folder = tmp_path / 'folder'
    folder.mkdir()
    for extra in ([], ['--overwrite']):
        code, _, err = run(['video', src, '--out', src, '--model', missing_model] + extra, capsys)
        assert code == 2 and 'is the input video' in err and 'already exists' not in err
        code, _, err = run(['video', src, '--out', folder, '--model', missing_model] + extra, capsys)
        assert code == 2 and 'is a folder' in err and 'already exists' not in err
    assert src.read_bytes() == b'not checked' and os.listdir(folder) == []
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'w').exists()


def test_train_epochs_rescales_lr_steps(tiny_dir, tmp_path, capsys, monkeypatch):
    calls = []

    class FakeTrainer:
        epoch = 0
        metric_values = {}

        def train(self):
            pass

    def build(default_args):
        calls.append(default_args['cfg_options'])
        return FakeTrainer()

    monkeypatch.setattr(cli, '_build_trainer', build)  # the config the command builds, no training

    def model_with(max_epochs, step):
        d = tmp_path / f'model_{max_epochs}_{step}'
        d.mkdir()
        cfg = json.loads((Path(tiny_dir) / 'configuration.json').read_text())
        cfg['train']['max_epochs'] = max_epochs
        cfg['train']['lr_scheduler'] = {'policy': 'step', 'step': step, 'warmup': 'linear', 'warmup_iters': 10}
        (d / 'configuration.json').write_text(json.dumps(cfg))
        return d

    def steps(model, *extra):
        code, _, err = run(['train', '--data', tmp_path, '--work-dir', tmp_path / 'w', '--model', model, *extra],
                           capsys)
        assert code == 0, err
        return calls[-1].get('train.lr_scheduler.step', 'unchanged'), err

    m = model_with(8, [6])  # the starter model's schedule: the LR drops after epoch 6 of 8
    got, err = steps(m, '--epochs', '30')
    assert got == [23] and calls[-1]['train.max_epochs'] == 30
    assert 'step epochs [6]' in err and 'rescaled to [23] for 30 epochs' in err
    assert steps(m, '--epochs', '4')[0] == [3]
    assert steps(m, '--epochs', '1')[0] == []  # no step fits in one epoch
    assert steps(m, '--epochs', '8')[0] == 'unchanged'
    assert steps(m)[0] == 'unchanged'
    assert steps(m, '--epochs', '30', '--cfg-options', 'train.lr_scheduler.step=[10]')[0] == [10]
    assert steps(m, '--epochs', '30', '--cfg-options', 'train.max_epochs=12')[0] == 'unchanged'
    m = model_with(210, [170, 200])
    assert steps(m, '--epochs', '20')[0] == [16, 19]
    assert steps(m, '--epochs', '3')[0] == [2]  # increasing, below 3
    assert steps(model_with(10, 4), '--epochs', '25')[0] == 10  # an interval
    # the bundled starter model (the default --model)
    from modelscope_handkp import starter_model_dir
    try:
        starter = starter_model_dir()
    except FileNotFoundError:
        return
    cfg = json.loads((Path(starter) / 'configuration.json').read_text())['train']
    old_max, old = cfg['max_epochs'], cfg['lr_scheduler']['step']
    epochs = 3 * old_max + 6
    got, err = steps(starter, '--epochs', str(epochs))
    assert got == [int(s * epochs / old_max + 0.5) for s in old] and f'step epochs {old}' in err


def test_model_resolution(tiny_dir, images, tmp_path, capsys, monkeypatch):
    args = ['predict', images[0], '--boxes', '[[40, 120, 160, 240]]', '--json-only', '--no-flip']
    # a missing local directory
    code, _, err = run(args + ['--model', tmp_path / 'no_model'], capsys)
    assert code == 1 and 'no such model directory' in err and 'Traceback' not in err
    # a directory without weights
    empty = tmp_path / 'config_only'
    shutil.copytree(tiny_dir, empty)
    (empty / 'pytorch_model.pt').unlink()
    code, _, err = run(args + ['--model', empty], capsys)
    assert code == 1 and 'pytorch_model.pt is missing' in err
    # no --model: the bundled starter model when the package has one
    monkeypatch.setattr(modelscope_handkp, 'starter_model_dir', lambda: tiny_dir)
    code, lines, err = run(args, capsys)
    assert code == 0 and len(lines[0]['hands']) == 1, err

    # no starter model: the hub model; offline, the error says so and how to pass a directory
    def no_starter():
        raise FileNotFoundError('no starter model')

    calls = []

    def offline(model_id):
        calls.append(model_id)
        raise ConnectionError("Failed to resolve 'modelscope.cn' ([Errno -2] Name or service not known)")

    monkeypatch.setattr(modelscope_handkp, 'starter_model_dir', no_starter)
    monkeypatch.setattr(cli, '_download', offline)
    code, _, err = run(args, capsys)
    assert code == 1 and calls == ['damo/cv_hrnetw18_hand-pose-keypoints_coco-wholebody']
    assert 'ModelScope hub' in err and 'unreachable' in err and '--model DIR' in err and 'Traceback' not in err
    code, _, err = run(args + ['--debug'], capsys)
    assert code == 1 and 'Traceback' in err


# ----------------------------------------------------------------------------- published model: convert + predict
def official_like_dir(dst: Path, reference_dir, hrnet_sd, ssdlite_sd) -> Path:
    shutil.copytree(reference_dir / 'official_like_model', dst)
    for d in (dst, dst / 'detection'):
        os.chmod(d, 0o755)
    torch.save({'state_dict': hrnet_sd, 'meta': {'epoch': 210}}, dst / 'pytorch_model.pt')
    torch.save({'state_dict': ssdlite_sd, 'meta': {}}, dst / 'detection' / 'detection_model.pth')
    return dst


def test_convert_official_like_and_predict_parity(reference_dir, shared_dir, hrnet_synth_state_dict,
                                                  ssdlite_synth_state_dict, topdown_ref, tmp_path, capsys):
    src = official_like_dir(tmp_path / 'official', reference_dir, hrnet_synth_state_dict, ssdlite_synth_state_dict)
    dst = tmp_path / 'converted'
    code, lines, err = run(['convert', src, dst], capsys)
    assert code == 0, err
    assert lines == [{'model_dir': str(dst)}]
    cfg = json.loads((dst / 'configuration.json').read_text())
    assert cfg['model']['type'] == 'handkp-topdown-hrnet' and 'plugins' not in cfg
    assert cfg['detector']['type'] == 'ssdlite'
    assert (dst / cfg['detector']['config_file']).is_file() and (dst / cfg['detector']['checkpoint']).is_file()
    sd = read_state_dict(str(dst / 'pytorch_model.pt'))
    assert sd.keys() == hrnet_synth_state_dict.keys()
    assert all(torch.equal(sd[k], hrnet_synth_state_dict[k]) for k in sd)
    # DST exists now: not replaced without --overwrite
    code, _, err = run(['convert', src, dst], capsys)
    assert code == 1 and 'already exists' in err and '--overwrite' in err
    code, _, err = run(['convert', tmp_path / 'nowhere', tmp_path / 'x'], capsys)
    assert code == 1 and 'no such model directory' in err

    # predict on the converted directory with the fixture boxes gives the reference keypoints
    files = [str(shared_dir / f) for f in topdown_ref['image_files']]
    xywh = topdown_ref['boxes_xywh'].astype(np.float64)
    boxes = {f: [[b[0], b[1], b[0] + b[2], b[1] + b[3]]] for f, b in zip(files, xywh.tolist())}
    code, lines, err = run(['predict', *files, '--model', dst, '--boxes', json.dumps(boxes), '--json-only'], capsys)
    assert code == 0, err
    kps = np.asarray([r['hands'][0]['keypoints'] for r in lines])
    ref_xy = topdown_ref['keypoints'][..., :2]
    # with random weights one keypoint lands at x = 3260 px, ~30 box sizes away (a DARK step on a flat
    # heatmap: the Taylor step divides by a near-zero Hessian), where float32 rounding differences of the
    # decoding (and between the pipeline's backends: eager 0.1 px, auto 0.37 px) are amplified; such
    # far-away keypoints get rtol 2e-4, all others the strict tolerance
    centre = xywh[:, None, :2] + xywh[:, None, 2:] / 2
    far = (np.abs(ref_xy - centre) > 5 * xywh[:, None, 2:].max(-1, keepdims=True)).any(-1)
    assert far.sum() <= 2
    np.testing.assert_allclose(kps[..., :2][~far], ref_xy[~far], rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(kps[..., :2][far], ref_xy[far], rtol=2e-4, atol=2e-3)
    np.testing.assert_allclose(kps[..., 2], topdown_ref['keypoints'][..., 2], atol=2e-4)


# ----------------------------------------------------------------------------- export
def test_export_onnx_matches_pipeline(tiny_dir, images, tmp_path, capsys):
    onnx = pytest.importorskip('onnx')
    out = tmp_path / 'kp.onnx'
    code, lines, err = run(['export', '--model', tiny_dir, '--out', out], capsys)
    assert code == 0, err
    assert lines == [{'keypoints_onnx': str(out), 'flip_test': True, 'rotations_input': False}]
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ['crops', 'centers', 'scales']
    assert 'warning' not in err
    code, _, err = run(['export', '--model', tiny_dir, '--out', out], capsys)
    assert code == 1 and 'already exists' in err and '--overwrite' in err
    code, _, err = run(['export', '--model', tiny_dir, '--out', tmp_path / 'kp.txt'], capsys)
    assert code == 0 and 'kp.txt does not end in .onnx' in err
    assert (tmp_path / 'kp.txt').read_bytes() == out.read_bytes()
    code, _, err = run(['export', '--model', tiny_dir, '--out', tmp_path / 'b.onnx', '--detector-out',
                        tmp_path / 'det.onnx'], capsys)
    assert code == 1 and 'SSDLite' in err and 'palm' in err and not (tmp_path / 'b.onnx').exists()
    (tmp_path / 'afile').write_text('x')  # a detector path under a file: refused before anything is written
    code, _, err = run(['export', '--model', tiny_dir, '--out', tmp_path / 'c.onnx', '--detector-out',
                        tmp_path / 'afile' / 'det.onnx'], capsys)
    assert code == 2 and 'is a file, not a folder' in err and not (tmp_path / 'c.onnx').exists()

    ort = pytest.importorskip('onnxruntime')
    from modelscope_handkp.transforms import box_to_center_scale, crop_to_tensor
    rgb = cv2.cvtColor(cv2.imread(images[0]), cv2.COLOR_BGR2RGB)
    box = [40.0, 120.0, 160.0, 240.0]
    c, s = box_to_center_scale(np.asarray([box], np.float32), 'xyxy', image_size=(64, 64))
    crops = crop_to_tensor(rgb, c, s, image_size=(64, 64)).numpy()
    sess = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    coords, scores = sess.run(None, {'crops': crops, 'centers': np.asarray(c, np.float32),
                                     'scales': np.asarray(s, np.float32)})
    ref = hand_pipeline(tiny_dir)(images[0], boxes=[box])['keypoints']
    np.testing.assert_allclose(coords, ref[..., :2], atol=1e-3)
    np.testing.assert_allclose(scores, ref[..., 2:], atol=1e-4)


def test_export_follows_the_models_flip_test_setting(tiny_dir, images, tmp_path, capsys):
    """export wrote a flip-test graph for a model whose test_cfg.flip_test is false: its keypoints differed from
    the pipeline's for the same directory."""
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    import shutil
    model = tmp_path / 'noflip'
    shutil.copytree(tiny_dir, model)
    cfg = json.loads((model / 'configuration.json').read_text())
    cfg['model']['test_cfg']['flip_test'] = False
    (model / 'configuration.json').write_text(json.dumps(cfg))
    out = tmp_path / 'kp.onnx'
    code, lines, err = run(['export', '--model', model, '--out', out], capsys)
    assert code == 0 and lines == [{'keypoints_onnx': str(out), 'flip_test': False, 'rotations_input': False}], err
    from modelscope_handkp.transforms import box_to_center_scale, crop_to_tensor
    rgb = cv2.cvtColor(cv2.imread(images[0]), cv2.COLOR_BGR2RGB)
    box = [40.0, 120.0, 160.0, 240.0]
    c, s = box_to_center_scale(np.asarray([box], np.float32), 'xyxy', image_size=(64, 64))
    crops = crop_to_tensor(rgb, c, s, image_size=(64, 64)).numpy()
    coords, _ = ort.InferenceSession(str(out), providers=['CPUExecutionProvider']).run(
        None, {'crops': crops, 'centers': np.asarray(c, np.float32), 'scales': np.asarray(s, np.float32)})
    pipe = hand_pipeline(str(model))
    np.testing.assert_allclose(coords, pipe(images[0], boxes=[box])['keypoints'][..., :2], atol=1e-3)
    flipped = pipe(images[0], boxes=[box], flip_test=True)['keypoints'][..., :2]
    assert np.abs(coords - flipped).max() > 1e-2  # the two settings differ on this model: the check can fail


def test_export_detector_onnx(reference_dir, ssdlite_synth_state_dict, tmp_path, capsys):
    onnx = pytest.importorskip('onnx')
    model = Path(tiny_model_dir(tmp_path / 'det_model', detector={
        'type': 'ssdlite', 'config_file': 'detection/config.py', 'checkpoint': 'detection/detection_model.pth'}))
    (model / 'detection').mkdir()
    shutil.copy(reference_dir / 'official_like_model' / 'detection' / 'config.py', model / 'detection' / 'config.py')
    torch.save({'state_dict': ssdlite_synth_state_dict, 'meta': {}}, model / 'detection' / 'detection_model.pth')
    code, lines, err = run(['export', '--model', model, '--out', tmp_path / 'kp.onnx', '--detector-out',
                            tmp_path / 'det.onnx', '--no-flip'], capsys)
    assert code == 0, err
    assert lines[0]['detector_onnx'] == str(tmp_path / 'det.onnx') and lines[0]['flip_test'] is False
    proto = onnx.load(str(tmp_path / 'det.onnx'))
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == ['cls_logits', 'bbox_deltas']


def test_export_palm_detector_onnx_of_the_starter_model(tmp_path, capsys):
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    code, lines, err = run(['export', '--out', tmp_path / 'kp.onnx', '--detector-out', tmp_path / 'palm.onnx'],
                           capsys)
    assert code == 0, err
    assert lines[0]['detector_onnx'] == str(tmp_path / 'palm.onnx') and lines[0]['rotations_input'] is True
    proto = onnx.load(str(tmp_path / 'palm.onnx'))
    assert [o.name for o in proto.graph.output] == ['regressors', 'scores']
    from modelscope_handkp.detection.palm import build_palm_detector
    det = build_palm_detector(backend='eager')
    x = torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    regs, scores = ort.InferenceSession(str(tmp_path / 'palm.onnx'),
                                        providers=['CPUExecutionProvider']).run(None, {'images': x.numpy()})
    ref_regs, ref_scores = det.forward_raw(x)
    assert regs.shape == (2, 2016, 18) and scores.shape == (2, 2016, 1)
    assert np.abs(regs - ref_regs.numpy()).max() <= 2e-3 and np.abs(scores - ref_scores.numpy()).max() <= 2e-3
    # --overwrite is all or nothing: a detector export that fails leaves the existing keypoint graph as it was
    kp_bytes = (tmp_path / 'kp.onnx').read_bytes()
    import modelscope_handkp.export as export_mod

    def broken(*a, **k):
        raise OSError('disk full')

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_mod, 'export_palm_net', broken)
        code, _, err = run(['export', '--out', tmp_path / 'kp.onnx', '--detector-out', tmp_path / 'palm.onnx',
                            '--no-flip', '--overwrite'], capsys)
    assert code == 1 and 'disk full' in err
    assert (tmp_path / 'kp.onnx').read_bytes() == kp_bytes
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []  # no staged leftovers


def test_closed_stdout_is_no_failure_of_a_finished_command(capsys, monkeypatch):
    import builtins

    def closed(*a, **k):
        raise BrokenPipeError(32, 'Broken pipe')

    monkeypatch.setattr(builtins, 'print', closed)
    cli._print_result({'a': 1})  # no exception: the work is done, only its reader is gone


# ----------------------------------------------------------------------------- train / eval
def _subset(src: Path, dst: Path, n: int, start: int = 0) -> str:
    d = json.loads(src.read_text())
    d['annotations'] = d['annotations'][start:start + n]
    ids = {a['image_id'] for a in d['annotations']}
    d['images'] = [im for im in d['images'] if im['id'] in ids]
    dst.write_text(json.dumps(d))
    return str(dst)


def _gt_hands(ann_file: str, img_prefix: Path):
    d = json.loads(Path(ann_file).read_text())
    names = {im['id']: im['file_name'] for im in d['images']}
    out = []
    for a in d['annotations']:
        for side in ('left', 'right'):
            kp = np.asarray(a[f'{side}hand_kpts'], np.float32).reshape(K, 3)
            if a[f'{side}hand_valid'] and kp.max() > 0:
                out.append((str(img_prefix / names[a['image_id']]), a[f'{side}hand_box'], kp))
    return out


def test_eval_matches_pipeline_metrics(tiny_dir, data_dir, tmp_path, capsys):
    from modelscope_handkp.metrics import keypoint_metrics
    root = data_dir / 'open_hands'
    ann = _subset(root / 'annotations' / 'val.json', tmp_path / 'val6.json', 6, start=40)
    # the images are not next to this annotation file: the error says which file is missing
    code, lines, err = run(['eval', '--model', tiny_dir, '--data', ann, '--device', 'cpu'], capsys)
    assert code == 1 and 'does not exist' in err and 'img_prefix' in err and 'Traceback' not in err
    assert '--skip-invalid' in err  # the CLI's own option, not only the Python argument
    code, _, err = run(['eval', '--model', tiny_dir, '--data', tmp_path, '--img-prefix', root / 'images'], capsys)
    assert code == 2 and '--img-prefix is for annotation files' in err  # not silently ignored
    # --skip-invalid: the hand whose image is missing is left out (and counted), the others evaluated
    some = tmp_path / 'some_images'
    some.mkdir()
    names = sorted({im['file_name'] for im in json.loads(Path(ann).read_text())['images']})
    for name in names[1:]:
        (some / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(root / 'images' / name, some / name)
    code, lines, err = run(['eval', '--model', tiny_dir, '--data', ann, '--img-prefix', some, '--skip-invalid',
                            '--no-flip'], capsys)
    assert code == 0, err
    assert 0 < lines[-1]['num_hands'] < len(_gt_hands(ann, root / 'images'))
    code, lines, err = run(['eval', '--model', tiny_dir, '--data', ann, '--img-prefix', root / 'images',
                            '--device', 'cpu'], capsys)
    assert code == 0, err
    res = lines[-1]
    assert set(res['metrics']) == {'PCK', 'AUC', 'EPE', 'NME'} and res['flip_test'] is True
    hands = _gt_hands(ann, root / 'images')
    assert res['num_hands'] == len(hands) > 0
    # the same metrics from the pipeline's keypoints for the GT boxes
    pipe = hand_pipeline(tiny_dir)
    pred = np.stack([pipe(f, boxes=[[b[0], b[1], b[0] + b[2], b[1] + b[3]]])['keypoints'][0, :, :2]
                     for f, b, _ in hands])
    gt = np.stack([kp[:, :2] for _, _, kp in hands])
    vis = np.stack([np.minimum(1, kp[:, 2]) for _, _, kp in hands])
    ref = keypoint_metrics(pred, gt, vis, np.asarray([b for _, b, _ in hands], np.float32), pck_thr=0.2, auc_norm=30)
    for k in ref:
        assert res['metrics'][k] == pytest.approx(ref[k], rel=1e-4, abs=1e-5), (k, res, ref)
    # the flip_test reported is the one that ran, however it was switched off
    base = ['eval', '--model', tiny_dir, '--data', ann, '--img-prefix', root / 'images', '--device', 'cpu']
    code, lines, err = run(base + ['--no-flip'], capsys)
    assert code == 0 and lines[-1]['flip_test'] is False
    no_flip = lines[-1]['metrics']
    code, lines, err = run(base + ['--cfg-options', 'model.test_cfg.flip_test=false'], capsys)
    assert code == 0 and lines[-1]['flip_test'] is False and lines[-1]['metrics'] == no_flip


def test_train_one_epoch_then_predict(tiny_dir, data_dir, images, tmp_path, capsys):
    root = data_dir / 'open_hands'
    folder = tmp_path / 'ds'
    (folder / 'annotations').mkdir(parents=True)
    _subset(root / 'annotations' / 'train.json', folder / 'annotations' / 'train.json', 8)
    _subset(root / 'annotations' / 'val.json', folder / 'annotations' / 'val.json', 4)
    os.symlink(root / 'images', folder / 'images')
    wd = tmp_path / 'work'
    args = ['train', '--data', folder, '--work-dir', wd, '--model', tiny_dir, '--epochs', '1', '--batch-size', '4',
            '--workers', '0', '--device', 'cpu', '--cfg-options', 'train.hooks=[{"type": "EvaluationHook", '
            '"interval": 1}, {"type": "CheckpointHook", "interval": 1}]']
    code, lines, err = run(args, capsys)
    assert code == 0, err
    res = lines[-1]
    assert res['work_dir'] == str(wd) and res['epochs'] == 1
    assert set(res['metrics']) >= {'PCK', 'AUC', 'EPE', 'NME'}
    assert (wd / 'output' / 'pytorch_model.pt').is_file() and (wd / 'latest.pth').is_file()
    # the trained model directory works with predict
    code, lines, err = run(['predict', images[0], '--model', wd / 'output', '--boxes', '[[40, 120, 160, 240]]',
                            '--json-only'], capsys)
    assert code == 0 and len(lines[0]['hands'][0]['keypoints']) == K, err
    # --resume of the finished run trains nothing and reports the run's last metrics
    code, again, err = run(args + ['--resume'], capsys)
    assert code == 0 and again[-1]['epochs'] == 1, err
    assert again[-1]['metrics'] == pytest.approx(res['metrics'], abs=1e-4)
    # an existing run is neither replaced nor continued silently
    code, _, err = run(args, capsys)
    assert code == 1 and 'already holds a training run' in err
    # a run that fails before writing anything leaves no work dir behind
    i = args.index('--work-dir')
    failing = args[:i + 1] + [str(tmp_path / 'never')] + args[i + 2:] + ['--cfg-options', 'train.optimizer.lr="abc"']
    code, _, err = run(failing, capsys)
    assert code == 1 and not (tmp_path / 'never').exists(), err
    code, _, err = run(args + ['--resume', '--overwrite'], capsys)
    assert code == 2


def test_train_on_a_folder_without_a_val_split_trains_without_evaluation(tiny_dir, data_dir, tmp_path, capsys):
    """train --data FOLDER with train.json only was refused ("the evaluation split was asked for") and the CLI
    had no way to train without validation."""
    root = data_dir / 'open_hands'
    folder = tmp_path / 'ds'
    (folder / 'annotations').mkdir(parents=True)
    _subset(root / 'annotations' / 'train.json', folder / 'annotations' / 'train.json', 4)
    os.symlink(root / 'images', folder / 'images')
    wd = tmp_path / 'work'
    code, lines, err = run(['train', '--data', folder, '--work-dir', wd, '--model', tiny_dir, '--epochs', '1',
                            '--batch-size', '4', '--workers', '0', '--device', 'cpu'], capsys)
    assert code == 0, err
    assert f'warning: no validation split in --data {folder}' in err
    assert 'Training runs without evaluation: no metrics and no output_best/; pass --val DIR_OR_ANN' in err
    assert lines[-1]['epochs'] == 1 and lines[-1]['metrics'] == {} and 'best_model_dir' not in lines[-1]
    assert (wd / 'output' / 'pytorch_model.pt').is_file() and not (wd / 'output_best').exists()
    # `evaluate` is the same command as `eval`
    code, lines, err = run(['evaluate', '--model', wd / 'output', '--data', folder / 'annotations' / 'train.json',
                            '--batch-size', '4', '--workers', '0', '--device', 'cpu'], capsys)
    assert code == 0 and set(lines[-1]['metrics']) >= {'PCK', 'AUC', 'EPE', 'NME'}, err


def test_train_on_a_folder_with_an_ambiguous_val_split_is_refused(tiny_dir, data_dir, tmp_path, capsys):
    """A folder with two val files (val_a.json, val_b.json) has a val split, only an ambiguous one: it must be
    refused as before ("cannot tell which ..."), not trained on without evaluation as if it had none."""
    root = data_dir / 'open_hands'
    folder = tmp_path / 'ds'
    (folder / 'annotations').mkdir(parents=True)
    for name, start in (('train', 0), ('val_a', 4), ('val_b', 8)):
        _subset(root / 'annotations' / 'train.json', folder / 'annotations' / f'{name}.json', 4, start)
    os.symlink(root / 'images', folder / 'images')
    wd = tmp_path / 'work'
    code, lines, err = run(['train', '--data', folder, '--work-dir', wd, '--model', tiny_dir, '--epochs', '1',
                            '--batch-size', '4', '--workers', '0', '--device', 'cpu'], capsys)
    assert code != 0 and 'cannot tell which annotation file' in err and 'evaluation split' in err, err
    assert 'Training runs without evaluation' not in err and not (wd / 'output').exists()


# ----------------------------------------------------------------------------- video
def test_video_max_frames(tiny_dir, images, tmp_path, capsys):
    pytest.importorskip('modelscope_handkp.video')
    frame = cv2.resize(cv2.imread(images[0]), (96, 128))
    src = tmp_path / 'in.avi'
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*'MJPG'), 10, (96, 128))
    assert writer.isOpened()
    for i in range(6):
        writer.write(np.roll(frame, 4 * i, axis=1))
    writer.release()
    out, jsonl = tmp_path / 'out.avi', tmp_path / 'out.jsonl'
    args = ['video', src, '--out', out, '--jsonl', jsonl, '--model', tiny_dir, '--detector', 'whole-image',
            '--max-frames', '3', '--no-flip', '--no-progress']
    code, _, err = run(args, capsys)
    assert code == 0, err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 3
    cap = cv2.VideoCapture(str(out))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape[:2] == (128, 96)
        n += 1
    cap.release()
    assert n == 3
    code, _, err = run(args, capsys)
    assert code == 1 and 'already exists' in err
    code, _, err = run(['video', tmp_path / 'none.mp4', '--out', tmp_path / 'x.mp4', '--model', tiny_dir], capsys)
    assert code == 1 and 'no such video file' in err


# ----------------------------------------------------------------------------- convert-palm-detector
def test_convert_palm_detector_refuses_overwrite(tmp_path, capsys):
    (tmp_path / 'palm_detection_lite.pt').write_bytes(b'x')
    code, _, err = run(['convert-palm-detector', '--variant', 'lite', '--out-dir', tmp_path,
                        '--tflite', tmp_path / 'missing.tflite'], capsys)
    assert code == 1 and 'no such file' in err
    tfl = tmp_path / 'palm_detection_lite.tflite'
    tfl.write_bytes(b'\0' * 16)
    code, _, err = run(['convert-palm-detector', '--variant', 'lite', '--out-dir', tmp_path, '--tflite', tfl],
                       capsys)
    assert code == 1 and 'already exists' in err and '--overwrite' in err
    assert (tmp_path / 'palm_detection_lite.pt').read_bytes() == b'x'
    pytest.importorskip('tflite')
    code, _, err = run(['convert-palm-detector', '--variant', 'lite', '--out-dir', tmp_path / 'new', '--tflite', tfl],
                       capsys)
    assert code == 1 and 'is not a TFLite model' in err and not (tmp_path / 'new').exists()


def test_result_record_writes_non_finite_numbers_as_json_null():
    """predict's JSON must be valid JSON (jq, JSON.parse): NaN / Infinity become null, the rest is kept."""
    from modelscope_handkp.cli import result_record
    kps = np.zeros((1, 21, 3), np.float32)
    kps[0, :, 0] = np.arange(21, dtype=np.float32) + 0.12345
    kps[0, 4, 1] = np.nan
    kps[0, 7, 2] = np.inf
    result = {'keypoints': kps, 'boxes': np.array([[1.0, 2.0, 30.5, np.nan]], np.float32),
              'scores': np.array([0.87654], np.float32), 'rotations': np.zeros(1, np.float32)}
    text = json.dumps(result_record('a.jpg', 64, 48, result), allow_nan=False)  # raises on NaN
    hand = json.loads(text)['hands'][0]
    assert hand['box'] == [1.0, 2.0, 30.5, None] and hand['score'] == 0.8765
    assert hand['keypoints'][4] == [4.123, None, 0.0] and hand['keypoints'][7][2] is None
    assert hand['keypoints'][20] == [20.123, 0.0, 0.0]


# ----------------------------------------------------------------------------- review fixes
class _ClosingStdout:
    """A stdout whose reader goes away after ``keep`` writes (like ``| head -1``; print() writes a line
    and its newline separately)."""

    def __init__(self, keep: int):
        self.keep, self.lines = keep, []

    def write(self, text):
        if len(self.lines) >= self.keep:
            raise BrokenPipeError(32, 'Broken pipe')
        self.lines.append(text)
        return len(text)

    def flush(self):
        pass


def test_predict_broken_stdout_is_no_image_failure(tiny_dir, images, tmp_path, capsys, monkeypatch):
    common = ['predict', *images, '--model', tiny_dir, '--detector', 'whole-image', '--no-flip', '--no-progress']
    # with --out the run goes on: every image gets its drawing and its line in predictions.jsonl
    out = tmp_path / 'out'
    monkeypatch.setattr(sys, 'stdout', _ClosingStdout(keep=2))
    code = cli.main([str(a) for a in common + ['--out', out]])
    err = capsys.readouterr().err
    assert code == 0, err
    assert 'Broken pipe' not in err and f'{len(images)} of {len(images)} inputs processed' in err
    recs = [json.loads(line) for line in (out / 'predictions.jsonl').read_text().splitlines()]
    assert [r['image'] for r in recs] == images
    assert sorted(p.name for p in out.glob('*.jpg')) == sorted(os.path.basename(i) for i in images)
    # without files to write there is nothing left to do: stop at once, say so once; the reader got what it
    # asked for (`| head`), so this is no failure either (docs/api.md)
    stdout = _ClosingStdout(keep=2)
    monkeypatch.setattr(sys, 'stdout', stdout)
    code = cli.main([str(a) for a in common + ['--json-only']])
    err = capsys.readouterr().err
    assert code == 0 and 'error' not in err
    assert len(stdout.lines) == 2 and json.loads(stdout.lines[0])['image'] == images[0]  # line + '\n'
    assert err.count('stdout was closed') == 1 and f'{len(images) - 1} input(s) not processed' in err
    assert f'1 of {len(images)} inputs processed' in err and 'Broken pipe]' not in err


def test_folder_inputs_follow_symlinked_folders_once(data_dir, tmp_path):
    src = tmp_path / 'real'
    src.mkdir()
    shutil.copy(data_dir / 'hands' / 'onehand10k' / '9.jpg', src / 'a.jpg')
    top = tmp_path / 'top'
    top.mkdir()
    (top / 'linked').symlink_to(src, target_is_directory=True)
    (top / 'loop').symlink_to(top, target_is_directory=True)  # a cycle: searched no further
    images, errors = cli.collect_inputs([str(top)])
    assert errors == []
    assert [(im.path, im.rel) for im in images] == [(str(top / 'linked' / 'a.jpg'), os.path.join('linked', 'a.jpg'))]
    # a symlinked folder inside the output folder stays skipped
    images, errors = cli.collect_inputs([str(top)], exclude_dir=str(src))
    assert images == [] and len(errors) == 1


def test_a_folder_inside_the_output_folder_holds_inputs(data_dir, tmp_path):
    proj = tmp_path / 'proj'
    (proj / 'photos').mkdir(parents=True)
    shutil.copy(data_dir / 'hands' / 'onehand10k' / '9.jpg', proj / 'photos' / 'x.jpg')
    shutil.copy(data_dir / 'hands' / 'onehand10k' / '9.jpg', proj / 'old_drawing.jpg')
    images, errors = cli.collect_inputs([str(proj / 'photos')], exclude_dir=str(proj))
    assert errors == [] and [im.rel for im in images] == ['x.jpg']
    # the output folder itself, or a folder around it, still skips the drawings in it
    images, errors = cli.collect_inputs([str(proj)], exclude_dir=str(proj))
    assert images == [] and 'inside the output folder' in errors[0]
    # a folder around the output folder: the images in the output folder's sub-folders are counted too
    images, errors = cli.collect_inputs([str(tmp_path)], exclude_dir=str(proj))
    assert images == [] and 'all 2 images of this folder are inside the output folder' in errors[0]
    images, errors = cli.collect_inputs([str(tmp_path)], exclude_dir=str(proj / 'photos'))
    assert [im.rel for im in images] == [os.path.join('proj', 'old_drawing.jpg')]


def test_a_run_without_results_leaves_no_output_folder(tmp_path, capsys):
    notes = tmp_path / 'notes.txt'
    notes.write_text('not an image')
    code, _, err = run(['predict', notes, '--out', tmp_path / 'o' / 'deep', '--no-progress'], capsys)
    assert code == 1 and 'results in' not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt']


def test_empty_path_arguments_are_usage_errors(images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in (['predict', images[0], '--out', ''], ['video', images[0], '--out', 'o.mp4', '--jsonl', ''],
                ['export', '--out', ''], ['convert', str(tmp_path), ''], ['train', '--data', '', '--work-dir', 'w']):
        code, _, err = run(cmd, capsys)
        assert code == 2 and 'is empty; pass a path' in err, (cmd, err)
    for cmd in (['predict', images[0], ' ', '--out', 'o'], ['video', '', '--out', 'o.mp4']):
        code, _, err = run(cmd, capsys)
        assert code == 2 and 'an INPUT is empty' in err, (cmd, err)
    assert list(tmp_path.iterdir()) == [] and list(tmp_path.parent.glob('.*partial*')) == []


def test_sigterm_stops_a_run_like_ctrl_c(images, tmp_path):
    """A terminated predict run exits 143 and leaves no hidden temporary file behind."""
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / 'out'
    many = tmp_path / 'many'
    many.mkdir()
    for i in range(300):  # distinct files (repeated or linked paths are one input): far more than run in time
        shutil.copyfile(images[i % len(images)], many / f'{i:03d}{os.path.splitext(images[i % len(images)])[1]}')
    proc = subprocess.Popen([sys.executable, '-m', 'modelscope_handkp', 'predict', str(many), '--out', str(out),
                             '--no-progress'], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / 'predictions.jsonl').exists() and \
            not list(out.glob('.predictions.jsonl.*')):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    assert 'terminated' in err and 'Traceback' not in err
    if (out / 'predictions.jsonl').exists():  # the results so far are kept, and said to be partial
        n = len((out / 'predictions.jsonl').read_text().splitlines())
        assert f'stopped after {n} of 300 images' in err
    assert [p.name for p in out.glob('.*')] == []  # the partial JSON lines were finished or removed


def test_overlapping_inputs_are_no_error(data_dir, tmp_path):
    folder = tmp_path / 'b'
    folder.mkdir()
    shutil.copy(data_dir / 'hands' / 'onehand10k' / '9.jpg', folder / 'x.jpg')
    images, errors = cli.collect_inputs([str(folder), str(folder / '*.jpg')])  # the pattern's file came first
    assert errors == [] and [im.path for im in images] == [str(folder / 'x.jpg')]
    images, errors = cli.collect_inputs([str(folder / '*.png')])
    assert images == [] and 'no file matches this pattern' in errors[0]


def test_eval_and_train_loader_arguments_exit_2(tmp_path, capsys):
    missing_model = tmp_path / 'no_model'  # never reached: arguments are checked first
    for cmd, flag, value in ((['eval', '--data', tmp_path], '--batch-size', '0'),
                             (['eval', '--data', tmp_path], '--workers', '-1'),
                             (['train', '--data', tmp_path, '--work-dir', tmp_path / 'w'], '--workers', '-2')):
        code, _, err = run(cmd + ['--model', missing_model, flag, value], capsys)
        assert code == 2 and f'{flag} must be' in err and f'got {value}' in err, (cmd, err)
        assert 'no such model' not in err
    code, _, err = run(['eval', '--data', tmp_path, '--model', missing_model, '--cfg-options', 'novalue'], capsys)
    assert code == 2 and 'key=value' in err
    assert not (tmp_path / 'w').exists()


def test_eval_keeps_modelscope_quiet_without_verbose(tiny_dir, tmp_path, capsys, monkeypatch):
    import logging

    from modelscope.utils.logger import get_logger
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    class FakeTrainer:  # like EpochBasedTrainer: get_logger() sets the level back to INFO, then logs
        eval_dataset = [0, 1]
        hand_net = type('Net', (), {'flip_test': True})()

        def __init__(self, default_args):
            get_logger().info('Training Config Start')
            get_logger().warning('a real warning')

        def evaluate(self):
            return {'PCK': 0.5}

    monkeypatch.setattr(cli, '_build_trainer', FakeTrainer)
    handler = Collect(level=logging.DEBUG)
    logging.getLogger('modelscope').addHandler(handler)
    ann = tmp_path / 'ann.json'
    ann.write_text('{}')
    try:
        code, lines, err = run(['eval', '--model', tiny_dir, '--data', ann], capsys)
        assert code == 0 and lines[-1]['metrics'] == {'PCK': 0.5} and lines[-1]['num_hands'] == 2, err
        assert records == ['a real warning']
        records.clear()
        code, lines, err = run(['eval', '--model', tiny_dir, '--data', ann, '--verbose'], capsys)
        assert code == 0 and records == ['Training Config Start', 'a real warning']
    finally:
        logging.getLogger('modelscope').removeHandler(handler)
    assert cli._QUIET not in logging.getLogger('modelscope').filters  # in-process callers get it back


def test_device_gpu_without_cuda_warns_and_bad_index_is_usage_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert cli.check_device('cuda') == 'cuda'
    assert 'no CUDA GPU is available' in capsys.readouterr().err
    assert cli.check_device('cpu') == 'cpu' and capsys.readouterr().err == ''
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert cli.check_device('GPU:1') == 'gpu:1' and capsys.readouterr().err == ''
    with pytest.raises(cli.UsageError, match='no GPU number 2; this machine has 2'):
        cli.check_device('cuda:2')
    code, _, err = run(['predict', 'x.jpg', '--device', 'cuda:5'], capsys)
    assert code == 2 and 'no GPU number 5' in err


def test_predict_warns_about_ignored_detector_options(tiny_dir, images, capsys):
    box = [40.0, 120.0, 160.0, 240.0, 0.1]
    code, lines, err = run(['predict', images[0], '--model', tiny_dir, '--json-only', '--no-flip',
                            '--boxes', json.dumps([box]), '--score-thr', '0.5', '--detector', 'palm'], capsys)
    assert code == 0, err
    assert '--score-thr and --detector ignored: --boxes gives the boxes of every input image' in err
    assert [h['box'] + [h['score']] for h in lines[0]['hands']] == [box]  # the low-score box is kept
    code, lines, err = run(['predict', images[0], '--model', tiny_dir, '--json-only', '--no-flip',
                            '--detector', 'whole-image', '--score-thr', '1'], capsys)
    assert code == 0 and '--score-thr ignored: --detector whole-image' in err
    assert [h['score'] for h in lines[0]['hands']] == [1.0]
    code, lines, err = run(['predict', images[0], '--model', tiny_dir, '--json-only', '--no-flip',
                            '--boxes', json.dumps([box])], capsys)
    assert code == 0 and 'warning' not in err


def test_video_same_out_and_jsonl_is_usage_error(tmp_path, capsys):
    src = tmp_path / 'in.avi'
    src.write_bytes(b'not read')
    code, _, err = run(['video', src, '--out', tmp_path / 'o.avi', '--jsonl', tmp_path / 'o.avi',
                        '--model', tmp_path / 'no_model'], capsys)
    assert code == 2 and 'same file' in err
    assert sorted(os.listdir(tmp_path)) == ['in.avi']


def test_export_opset_out_of_range_is_a_usage_error(tmp_path, capsys):
    """--opset outside what the graph and the installed exporter support: exit 2 with the range, before
    any model is loaded or file written (it was exit 1, 'ValueError', after loading)."""
    pytest.importorskip('onnx')
    from modelscope_handkp.export import MIN_OPSET
    for bad in (9, 99):
        code, _, err = run(['export', '--opset', bad, '--out', tmp_path / 'k.onnx'], capsys)
        assert code == 2 and f'--opset: opset {bad} is not supported' in err and f'from {MIN_OPSET} to' in err
    assert list(tmp_path.iterdir()) == []


def test_folders_and_globs_take_tiff_files(tmp_path):
    """An explicit .tif path worked, but folders and globs skipped TIFF files without a word."""
    for name in ('a.tif', 'b.TIFF', 'c.jpg', 'notes.txt'):
        (tmp_path / name).write_bytes(b'x')
    images, errors = cli.collect_inputs([str(tmp_path)])
    assert errors == [] and sorted(im.rel for im in images) == ['a.tif', 'b.TIFF', 'c.jpg']
    images, errors = cli.collect_inputs([str(tmp_path / '*.tif')])
    assert errors == [] and [im.rel for im in images] == ['a.tif']


def test_folders_and_globs_of_videos_point_to_the_video_command(tmp_path):
    (tmp_path / 'clips').mkdir()
    for name in ('clips/a.MP4', 'clips/b.mov', 'clips/notes.txt'):
        (tmp_path / name).write_bytes(b'x')
    images, errors = cli.collect_inputs([str(tmp_path / 'clips')])
    assert images == [] and len(errors) == 1
    assert errors[0].startswith(f'{tmp_path / "clips"}: folder has no images (jpg/')
    assert errors[0].endswith(f'; 2 video file(s) (e.g. {tmp_path / "clips" / "a.MP4"}): videos are read by '
                              '`modelscope-handkp video FILE --out OUT.mp4`, one video each.')
    images, errors = cli.collect_inputs([str(tmp_path / 'clips' / '*.mov')])
    assert images == [] and errors[0].endswith('1 video file(s) (e.g. '
                                               f'{tmp_path / "clips" / "b.mov"}): videos are read by '
                                               '`modelscope-handkp video FILE --out OUT.mp4`, one video each.')
    images, errors = cli.collect_inputs([str(tmp_path / 'clips' / '*.txt')])  # no videos: no hint
    assert images == [] and 'video' not in errors[0]


def test_train_names_an_unwritable_work_dir_before_building(tmp_path, capsys, monkeypatch):
    """A read-only work dir ended in a raw OSError from deep inside ModelScope's trainer."""
    import tempfile
    real = tempfile.mkstemp
    ro = tmp_path / 'ro'
    ro.mkdir()

    def mkstemp(*a, dir=None, **k):  # a read-only mount, also for root
        if dir is not None and os.path.realpath(dir) == os.path.realpath(ro):
            raise OSError(30, 'Read-only file system')
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, 'mkstemp', mkstemp)
    built = []
    monkeypatch.setattr(cli, '_build_trainer', lambda kw: built.append(kw))
    for wd in (ro, ro / 'new' / 'run'):
        code, _, err = run(['train', '--data', tmp_path, '--work-dir', wd], capsys)
        assert code == 1 and 'is not writable (Read-only file system)' in err and '--work-dir' in err, err
    assert built == [] and sorted(os.listdir(ro)) == []


def test_export_rotations_and_no_rotations_together_is_a_usage_error(tmp_path, capsys):
    """--rotations --no-rotations was accepted, the last one winning."""
    code, _, err = run(['export', '--rotations', '--no-rotations', '--out', tmp_path / 'k.onnx'], capsys)
    assert code == 2 and 'not allowed with argument' in err
    assert list(tmp_path.iterdir()) == []
