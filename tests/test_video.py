"""Video processing (issue 6): synthetic videos, a fake predict_fn with known hands, and the real CLI."""
import json
import os

import cv2
import numpy as np
import pytest

from modelscope_handkp import cli
from modelscope_handkp.draw import KEYPOINT_COLORS
from modelscope_handkp.video import VideoError, process_video

W, H, FPS, N_FRAMES = 160, 120, 10, 12


def synthetic_frame(i: int) -> np.ndarray:
    """A textured BGR frame translated 4 px per frame."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (H, W + 64, 3), dtype=np.uint8), (0, 0), 3)
    return np.ascontiguousarray(base[:, 4 * i:4 * i + W])


def write_video(path, n=N_FRAMES, fourcc='MJPG', fps=FPS):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(synthetic_frame(i))
    writer.release()
    return path


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def known_hand(cx, cy, size=40.0):
    g = np.stack(np.meshgrid(np.linspace(-0.4, 0.4, 7), np.linspace(-0.4, 0.4, 3)), -1).reshape(21, 2)
    kps = np.concatenate([np.array([cx, cy]) + g * size, np.full((21, 1), 0.9)], -1)
    return kps, [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


class FakePredict:
    """Two hands moving 4 px per frame in opposite directions, given in alternating order."""

    def __init__(self, fail_at=None, interrupt_at=None):
        self.calls = 0
        self.shapes = []
        self.fail_at, self.interrupt_at = fail_at, interrupt_at

    @staticmethod
    def hands(i):
        return known_hand(40 + 4 * i, 50), known_hand(120 - 4 * i, 70)

    def __call__(self, frame_rgb):
        i = self.calls
        self.calls += 1
        self.shapes.append(frame_rgb.shape)
        if i == self.fail_at:
            raise RuntimeError('model failed')
        if i == self.interrupt_at:
            raise KeyboardInterrupt
        a, b = self.hands(i)
        order = [a, b] if i % 2 == 0 else [b, a]
        return {'keypoints': np.stack([h[0] for h in order]).astype(np.float32),
                'boxes': np.asarray([h[1] for h in order], np.float32),
                'scores': np.asarray([0.95, 0.8] if i % 2 == 0 else [0.8, 0.95], np.float32)}


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / 'in.avi')


@pytest.mark.parametrize('ext', ['.avi', '.mp4'])
def test_process_video_outputs(video, tmp_path, ext):
    fake = FakePredict()
    out, jsonl = tmp_path / f'out{ext}', tmp_path / 'out.jsonl'
    summary = process_video(str(video), fake, out, jsonl_path=jsonl, smoothing=False, progress=False)
    assert fake.calls == N_FRAMES and set(fake.shapes) == {(H, W, 3)}
    assert summary['frames'] == N_FRAMES and (summary['width'], summary['height']) == (W, H)
    assert summary['input_fps'] == FPS and summary['output_fps'] == FPS
    assert summary['hands'] == {'total': 2 * N_FRAMES, 'min': 2, 'max': 2, 'mean': 2.0,
                                'frames_with_hands': N_FRAMES}
    assert summary['tracks'] == 2 and summary['interrupted'] is False
    assert summary['out_path'] == str(out) and summary['jsonl_path'] == str(jsonl)
    assert summary['processing_fps'] > 0

    frames, fps = read_video(out)
    assert len(frames) == N_FRAMES and fps == FPS
    assert all(f.shape == (H, W, 3) for f in frames)
    # the hands are drawn: the keypoint of the first hand at frame 6 has its finger's colour (lossy codec)
    kps6 = FakePredict.hands(6)[0][0]
    x, y = np.rint(kps6[10, :2]).astype(int)
    rgb = frames[6][y, x, ::-1].astype(int)
    assert np.abs(rgb - KEYPOINT_COLORS[10].astype(int)).max() < 60, rgb

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r['frame'] for r in records] == list(range(N_FRAMES))
    assert [r['time'] for r in records] == pytest.approx([i / FPS for i in range(N_FRAMES)])
    for i, rec in enumerate(records):
        assert len(rec['hands']) == 2
        assert set(rec['hands'][0]) == {'track_id', 'box', 'score', 'keypoints'}
        a, b = FakePredict.hands(i)
        first, second = (a, b) if i % 2 == 0 else (b, a)
        for hand, (kps, box) in zip(rec['hands'], (first, second)):
            assert hand['box'] == pytest.approx(box, abs=1e-3)
            np.testing.assert_allclose(hand['keypoints'], kps, atol=1e-3)  # no smoothing: as predicted
        # the ids follow the hands, whatever their order in the frame
        ids = [h['track_id'] for h in rec['hands']]
        assert ids == ([0, 1] if i % 2 == 0 else [1, 0])
        assert [h['score'] for h in rec['hands']] == ([0.95, 0.8] if i % 2 == 0 else [0.8, 0.95])
    assert sorted(os.listdir(tmp_path)) == sorted(['in.avi', f'out{ext}', 'out.jsonl'])  # no temp files left


def test_live_source_output_plays_in_real_time(video, tmp_path):
    """A stream processed slower than it runs: the output repeats each drawn frame until the next one, so
    its length is the wall time and frame i / fps matches the JSON 'time'."""
    import time
    fake = FakePredict()

    def slow(frame):
        time.sleep(0.25)  # 2.5 frame periods of the 10 fps input
        return fake(frame)

    out, jsonl = tmp_path / 'live.avi', tmp_path / 'live.jsonl'
    summary = process_video(video.resolve().as_uri(), slow, out, jsonl_path=jsonl, progress=False)
    assert summary['frames'] == N_FRAMES  # every frame of the stream was processed
    frames, fps = read_video(out)
    assert len(frames) == summary['output_frames'] > N_FRAMES
    times = [json.loads(line)['time'] for line in jsonl.read_text().splitlines()]
    # each processed frame starts where its JSON 'time' says: output frame int(time * fps)
    starts = [0] + [i for i in range(1, len(frames)) if not np.array_equal(frames[i], frames[i - 1])]
    assert len(starts) == N_FRAMES
    assert np.abs(np.asarray(starts) - np.floor(np.asarray(times) * fps)).max() <= 1
    assert abs(summary['output_frames'] - summary['seconds'] * fps) <= 2


def test_smoothing_and_max_frames(video, tmp_path):
    jsonl = tmp_path / 's.jsonl'
    summary = process_video(video, FakePredict(), tmp_path / 's.avi', jsonl_path=jsonl, max_frames=5,
                            progress=False)
    assert summary['frames'] == 5 and len(read_video(tmp_path / 's.avi')[0]) == 5
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 5
    # frame 0 passes unchanged; later frames lag slightly behind the moving hands (by < 4 px per frame)
    kps0 = np.asarray(records[0]['hands'][0]['keypoints'])
    np.testing.assert_allclose(kps0, FakePredict.hands(0)[0][0], atol=1e-3)
    kps4 = np.asarray([h['keypoints'] for h in records[4]['hands'] if h['track_id'] == 0][0])
    true4 = FakePredict.hands(4)[0][0]
    dx = true4[:, 0] - kps4[:, 0]
    assert (dx > 0.01).all() and (dx < 4).all()
    np.testing.assert_allclose(kps4[:, 1], true4[:, 1], atol=1e-3)  # no vertical motion
    np.testing.assert_allclose(kps4[:, 2], true4[:, 2], atol=1e-4)  # scores unsmoothed


def test_never_overwrites_without_overwrite(video, tmp_path):
    out, jsonl = tmp_path / 'o.avi', tmp_path / 'o.jsonl'
    process_video(video, FakePredict(), out, jsonl_path=jsonl, progress=False)
    before = {p: p.read_bytes() for p in (out, jsonl)}
    for kwargs in ({'jsonl_path': jsonl}, {'jsonl_path': tmp_path / 'new.jsonl'}):
        fake = FakePredict()
        with pytest.raises(FileExistsError, match='already exists.*overwrite'):
            process_video(video, fake, out, progress=False, **kwargs)
        assert fake.calls == 0  # checked before any work
    fake = FakePredict()
    with pytest.raises(FileExistsError, match='o.jsonl already exists'):
        process_video(video, fake, tmp_path / 'other.avi', jsonl_path=jsonl, progress=False)
    assert fake.calls == 0 and not (tmp_path / 'other.avi').exists() and not (tmp_path / 'new.jsonl').exists()
    assert {p: p.read_bytes() for p in (out, jsonl)} == before
    summary = process_video(video, FakePredict(), out, jsonl_path=jsonl, overwrite=True, max_frames=3,
                            progress=False)
    assert summary['frames'] == 3 and len(jsonl.read_text().splitlines()) == 3
    # the input video is never an output
    with pytest.raises(VideoError, match='is the input video'):
        process_video(video, FakePredict(), video, overwrite=True, progress=False)


@pytest.mark.parametrize('user_level', [None, '16'])
def test_ffmpeg_error_lines_are_silenced_unless_the_user_asks(tmp_path, user_level):
    """An undecodable file gives our message only; FFmpeg's own line ("moov atom not found") appears only when
    the user set OPENCV_FFMPEG_LOGLEVEL (the variable is read once per process: a fresh interpreter each)."""
    import subprocess
    import sys
    bad = tmp_path / 'bad.mp4'
    bad.write_text('not a video\n')
    env = {k: v for k, v in os.environ.items() if k != 'OPENCV_FFMPEG_LOGLEVEL'}
    if user_level is not None:
        env['OPENCV_FFMPEG_LOGLEVEL'] = user_level
    code = ('import sys\nfrom modelscope_handkp.video import VideoError, process_video\n'
            'try:\n    process_video(sys.argv[1], lambda f: None, sys.argv[2], progress=False)\n'
            'except VideoError as e:\n    print("VideoError:", e)\n')
    r = subprocess.run([sys.executable, '-c', code, str(bad), str(tmp_path / 'o.mp4')], env=env,
                       capture_output=True, text=True, timeout=120)
    assert 'VideoError: cannot open video source' in r.stdout, r.stdout + r.stderr
    # (FFmpeg's own logger writes to stderr; OpenCV's, used when the level is set, to stdout)
    assert ('moov atom not found' in r.stdout + r.stderr) == (user_level is not None), r.stdout + r.stderr


def test_bad_sources_and_outputs(tmp_path, video):
    with pytest.raises(FileNotFoundError, match='no such video file'):
        process_video(tmp_path / 'missing.mp4', FakePredict(), tmp_path / 'a.mp4', progress=False)
    bad = tmp_path / 'bad.mp4'
    bad.write_text('not a video\n')
    with pytest.raises(VideoError, match='cannot open video source .*bad.mp4'):
        process_video(bad, FakePredict(), tmp_path / 'a.mp4', progress=False)
    with pytest.raises(VideoError, match='camera 97.*index'):
        process_video(97, FakePredict(), tmp_path / 'a.mp4', progress=False)
    with pytest.raises(VideoError, match=r"unsupported video extension '.mkv'.*\.mp4 or \.avi"):
        process_video(video, FakePredict(), tmp_path / 'a.mkv', progress=False)
    with pytest.raises(FileNotFoundError, match='does not exist; create it'):
        process_video(video, FakePredict(), tmp_path / 'nodir' / 'a.avi', progress=False)
    with pytest.raises(ValueError, match='max_frames'):
        process_video(video, FakePredict(), tmp_path / 'a.avi', max_frames=0, progress=False)
    assert sorted(os.listdir(tmp_path)) == ['bad.mp4', 'in.avi']


def test_unwritable_output_folder_is_named_before_any_work(video, tmp_path, monkeypatch):
    import tempfile

    from modelscope_handkp.video import check_outputs
    real = tempfile.mkstemp
    ro = tmp_path / 'ro'
    ro.mkdir()

    def mkstemp(*a, dir=None, **k):  # a read-only mount / immutable folder, also for root
        if dir is not None and os.path.realpath(dir) == os.path.realpath(ro):
            raise OSError(30, 'Read-only file system')
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, 'mkstemp', mkstemp)
    with pytest.raises(PermissionError, match=r'folder .*ro is not writable \(Read-only file system\)'):
        check_outputs(video, str(ro / 'o.mp4'), None, overwrite=False)
    check_outputs(video, str(tmp_path / 'o.mp4'), None, overwrite=False)  # elsewhere: fine, nothing left behind
    assert sorted(os.listdir(tmp_path)) == ['in.avi', 'ro']


def test_failure_leaves_no_files_interrupt_keeps_frames(video, tmp_path):
    out, jsonl = tmp_path / 'f.avi', tmp_path / 'f.jsonl'
    with pytest.raises(RuntimeError, match='model failed'):
        process_video(video, FakePredict(fail_at=5), out, jsonl_path=jsonl, progress=False)
    assert sorted(os.listdir(tmp_path)) == ['in.avi']  # neither outputs nor temp files
    summary = process_video(video, FakePredict(interrupt_at=4), out, jsonl_path=jsonl, progress=False)
    assert summary['interrupted'] is True and summary['frames'] == 4
    assert len(read_video(out)[0]) == 4 and len(jsonl.read_text().splitlines()) == 4


# ----------------------------------------------------------------------------- through the CLI
def test_cli_video_file_stopped_early_exits_130(tmp_path, capsys, monkeypatch):
    from test_cli import tiny_model_dir
    model = tiny_model_dir(tmp_path / 'model')
    src = write_video(tmp_path / 'in.avi', n=6)
    calls = []
    orig = cli.build_pipeline

    def stop_at_third(*a, **k):
        real = orig(*a, **k)

        def predict(frame, **kw):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(frame, **kw)
        return predict

    monkeypatch.setattr(cli, 'build_pipeline', stop_at_third)
    code = cli.main(['video', str(src), '--out', str(tmp_path / 'o.avi'), '--model', model, '--detector',
                     'whole-image', '--no-flip', '--no-progress'])
    err = capsys.readouterr().err
    assert code == 130 and 'interrupted after 2 frames' in err
    assert len(read_video(tmp_path / 'o.avi')[0]) == 2


@pytest.mark.parametrize('camera', [False, True])
def test_cli_video_terminated_exits_143_and_keeps_the_frames(tmp_path, capsys, monkeypatch, camera):
    """SIGTERM during a video (file or camera) exited 130 (file) or 0 (camera): process_video catches the
    interrupt to keep the frames done, so the CLI now asks its SIGTERM handler whether it was one."""
    from test_cli import tiny_model_dir
    model = tiny_model_dir(tmp_path / 'model')
    src = write_video(tmp_path / 'in.avi', n=6)
    orig = cli.build_pipeline
    calls = []

    def terminated_at_third(*a, **k):
        real = orig(*a, **k)

        def predict(frame, **kw):
            calls.append(1)
            if len(calls) == 3:
                cli._on_sigterm(15, None)  # what the signal does
            return real(frame, **kw)
        return predict

    monkeypatch.setattr(cli, 'build_pipeline', terminated_at_third)
    if camera:  # the camera index reads the same file
        monkeypatch.setattr(cli, '_video_source', lambda text: 0)
        real_capture = cv2.VideoCapture
        monkeypatch.setattr(cv2, 'VideoCapture', lambda s, *a: real_capture(str(src)) if s == 0 else
                            real_capture(s, *a))
    code = cli.main(['video', str(src), '--out', str(tmp_path / 'o.avi'), '--jsonl', str(tmp_path / 'o.jsonl'),
                     '--model', model, '--detector', 'whole-image', '--no-flip', '--no-progress'])
    err = capsys.readouterr().err
    assert code == 143 and 'terminated (SIGTERM) after 2 frames' in err, err
    assert len((tmp_path / 'o.jsonl').read_text().splitlines()) == 2
    written = len(read_video(tmp_path / 'o.avi')[0])  # a camera's frames are held for the time they lasted
    assert written >= 2 if camera else written == 2
    # the next in-process run starts with a clean flag
    monkeypatch.setattr(cli, 'build_pipeline', orig)
    code = cli.main(['video', str(src), '--out', str(tmp_path / 'o2.avi'), '--model', model, '--detector',
                     'whole-image', '--no-flip', '--no-progress', '--max-frames', '2'])
    assert code == 0


def test_cli_video_matches_pipeline_per_frame(tmp_path, capsys):
    from test_cli import hand_pipeline, tiny_model_dir
    model = tiny_model_dir(tmp_path / 'model')
    src = write_video(tmp_path / 'in.avi', n=4)
    out, jsonl = tmp_path / 'out.mp4', tmp_path / 'out.jsonl'
    args = ['video', str(src), '--out', str(out), '--jsonl', str(jsonl), '--model', model, '--detector',
            'whole-image', '--no-flip', '--no-smoothing', '--no-progress']
    assert cli.main(args) == 0
    stdout, err = capsys.readouterr()
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary['frames'] == 4 and summary['tracks'] == 1 and summary['hands']['total'] == 4
    frames, _ = read_video(out)
    assert len(frames) == 4
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    pipe = hand_pipeline(model, detector='whole_image', flip_test=False, input_color='rgb')
    for rec, frame in zip(records, read_video(src)[0]):
        (hand,) = rec['hands']
        assert hand['track_id'] == 0 and hand['box'] == [0.0, 0.0, W, H] and hand['score'] == 1.0
        ref = pipe(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        np.testing.assert_allclose(hand['keypoints'], ref['keypoints'][0], atol=1e-3)
    # existing outputs: exit 1, nothing replaced; a missing input: exit 1 with the reason
    data = out.read_bytes()
    assert cli.main(args) == 1
    assert 'already exists' in capsys.readouterr().err and out.read_bytes() == data
    assert cli.main(['video', str(tmp_path / 'none.avi'), '--out', str(tmp_path / 'x.avi'), '--model', model]) == 1
    assert 'no such video file' in capsys.readouterr().err
    # an output extension with no codec here is a usage error (exit 2): a clear message, no traceback, before
    # the model loads
    assert cli.main(['video', str(src), '--out', str(tmp_path / 'x.webm'), '--model', str(tmp_path / 'nomodel'),
                     '--detector', 'whole-image']) == 2
    err = capsys.readouterr().err
    assert 'unsupported video extension' in err and 'Traceback' not in err


def test_cli_video_all_digit_source_prefers_an_existing_file(tmp_path, capsys, monkeypatch):
    from test_cli import tiny_model_dir
    model = tiny_model_dir(tmp_path / 'model')
    monkeypatch.chdir(tmp_path)
    assert cli._video_source('0') == 0 and cli._video_source('12') == 12  # no such files: cameras
    os.replace(write_video(tmp_path / 'clip.avi', n=3), tmp_path / '0')
    assert cli._video_source('0') == '0'
    assert cli.main(['video', '0', '--out', 'out.avi', '--model', model, '--detector', 'whole-image', '--no-flip',
                     '--no-progress']) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary['source'] == '0' and summary['frames'] == 3
    assert len(read_video(tmp_path / 'out.avi')[0]) == 3
    video_help = cli.build_parser()._subparsers._group_actions[0].choices['video'].format_help()
    assert 'unless a file of that name exists' in ' '.join(video_help.split())


# ----------------------------------------------------------------------------- review: edge cases
class FakeCapture:
    """A cv2.VideoCapture stand-in that plays given BGR frames (sizes may change, as in some streams)."""

    def __init__(self, frames, fps=FPS):
        self.frames, self.fps, self.released = list(frames), fps, False

    def isOpened(self):
        return True

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: 0.0}.get(prop, 0.0)

    def release(self):
        self.released = True


def test_frames_of_another_size_are_resized_not_dropped(tmp_path, monkeypatch):
    from modelscope_handkp import video as video_mod
    big = [cv2.resize(synthetic_frame(i), (200, 100)) for i in range(3, 6)]
    cap = FakeCapture([synthetic_frame(i) for i in range(3)] + big)
    monkeypatch.setattr(video_mod, '_open_capture', lambda source: cap)
    fake = FakePredict()
    out, jsonl = tmp_path / 'r.avi', tmp_path / 'r.jsonl'
    with pytest.warns(UserWarning, match=r'frame 3 is 200x100 pixels, the first one 160x120.*resized') as rec:
        summary = process_video(str(tmp_path / 'changing.avi'), fake, out, jsonl_path=jsonl, smoothing=False,
                                progress=False)
    assert len([w for w in rec if 'resized' in str(w.message)]) == 1  # warned once
    assert cap.released and fake.shapes == [(H, W, 3)] * 3 + [(100, 200, 3)] * 3  # predicted on the input frames
    frames, _ = read_video(out)
    assert summary['frames'] == summary['output_frames'] == len(frames) == 6  # none silently dropped
    assert {f.shape for f in frames} == {(H, W, 3)}
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    np.testing.assert_allclose(records[4]['hands'][1]['keypoints'], FakePredict.hands(4)[1][0], atol=1e-3)


def test_json_lines_have_null_for_non_finite_numbers(video, tmp_path):
    def predict(frame_rgb):
        kps, box = known_hand(60, 60)
        kps[3, :2] = np.nan
        kps[4, 2] = np.inf
        return {'keypoints': kps[None].astype(np.float32), 'boxes': np.asarray([box], np.float32),
                'scores': np.asarray([np.nan], np.float32)}

    jsonl = tmp_path / 'n.jsonl'
    process_video(video, predict, tmp_path / 'n.avi', jsonl_path=jsonl, smoothing=False, max_frames=2,
                  progress=False)

    def reject(constant):
        raise ValueError(f'{constant} is not JSON')

    for line in jsonl.read_text().splitlines():
        (hand,) = json.loads(line, parse_constant=reject)['hands']  # strict JSON (jq, JavaScript)
        assert hand['keypoints'][3] == [None, None, 0.9] and hand['keypoints'][4][2] is None
        assert hand['keypoints'][0] == pytest.approx(list(known_hand(60, 60)[0][0]), abs=1e-3)
        assert hand['score'] is None and hand['box'] == pytest.approx([40, 40, 80, 80])


def test_output_created_while_processing_is_kept_and_so_are_the_results(video, tmp_path):
    out, jsonl = tmp_path / 'c.avi', tmp_path / 'c.jsonl'
    fake = FakePredict()

    def predict(frame_rgb):
        if fake.calls == 3:
            out.write_bytes(b'a user file')
        return fake(frame_rgb)

    with pytest.raises(FileExistsError, match=r'c.avi was created by someone else.*results are kept in') as e:
        process_video(video, predict, out, jsonl_path=jsonl, progress=False)
    assert out.read_bytes() == b'a user file' and not jsonl.exists()
    kept = sorted(p for p in os.listdir(tmp_path) if '.partial-' in p)
    assert len(kept) == 2 and all(str(tmp_path / p) in str(e.value) for p in kept)
    assert len(read_video(tmp_path / [p for p in kept if p.endswith('.avi')][0])[0]) == N_FRAMES
    assert len((tmp_path / [p for p in kept if p.endswith('.jsonl')][0]).read_text().splitlines()) == N_FRAMES


def test_truncated_video_is_processed_with_a_warning(video, tmp_path):
    """A video cut off in the middle gave exit 0 and a summary of fewer frames without a word."""
    data = video.read_bytes()
    cut = tmp_path / 'cut.avi'
    cut.write_bytes(data[:len(data) // 2])
    declared = int(cv2.VideoCapture(str(cut)).get(cv2.CAP_PROP_FRAME_COUNT))
    assert declared == N_FRAMES
    with pytest.warns(UserWarning, match=rf'of the {N_FRAMES} frames the file declares could be read') as rec:
        summary = process_video(str(cut), FakePredict(), tmp_path / 'o.avi', smoothing=False, progress=False)
    assert 0 < summary['frames'] < N_FRAMES and summary['frames_declared'] == N_FRAMES
    assert f"{summary['frames']} of the" in str(rec[0].message)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the whole file, or stopped on purpose: no warning
        assert process_video(str(video), FakePredict(), tmp_path / 'w.avi', smoothing=False,
                             progress=False)['frames'] == N_FRAMES
        assert process_video(str(cut), FakePredict(), tmp_path / 'm.avi', smoothing=False, progress=False,
                             max_frames=2)['frames'] == 2
