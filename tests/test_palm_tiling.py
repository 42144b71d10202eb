"""Zoom-in tile fallback of the palm detector (issue 8: small hands) and the keypoint-score check."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest


from modelscope_handkp import model_dir as md
from modelscope_handkp.detection.base import Detections, HandDetector
from modelscope_handkp.detection.palm import PALM_INPUT_SIZE, build_palm_detector
from modelscope_handkp.detection.tiling import (TiledDetections, TileSettings, tile_matrices, tile_palm_keep,
                                                tile_settings, tile_windows)


# ------------------------------------------------------------------------------------------ geometry
def test_tile_windows_cover_the_image_with_the_overlap():
    w, h = 640, 429
    win = tile_windows(w, h, tiles=5, overlap=0.25)
    side = 640 / (5 - 4 * 0.25)  # 160
    np.testing.assert_allclose(win[:, 2] - win[:, 0], side)
    np.testing.assert_allclose(win[:, 3] - win[:, 1], side)
    xs, ys = np.unique(win[:, 0]), np.unique(win[:, 1])
    np.testing.assert_allclose(xs, [0, 120, 240, 360, 480])  # neighbours share 40 px = 0.25 * 160
    # rows: fewest windows overlapping >= 40 px: ceil((429 - 160) / 120) + 1 = 4, evenly from 0 to 269
    np.testing.assert_allclose(ys, np.linspace(0, 429 - side, 4))
    assert np.all(np.diff(ys) <= side * 0.75 + 1e-9)
    assert len(win) == 20
    # every pixel centre lies in at least one window, all windows inside the image
    gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    inside = ((gx[..., None] >= win[:, 0]) & (gx[..., None] <= win[:, 2]) &
              (gy[..., None] >= win[:, 1]) & (gy[..., None] <= win[:, 3])).any(-1)
    assert inside.all()
    assert win[:, :2].min() == 0 and win[:, 2].max() == pytest.approx(w) and win[:, 3].max() == pytest.approx(h)


def test_tile_windows_short_side_gets_one_centred_window():
    win = tile_windows(800, 100, tiles=4, overlap=0.0)  # side 200 > 100
    np.testing.assert_allclose(win[:, 1], -50.0)
    np.testing.assert_allclose(win[:, 0], [0, 200, 400, 600])


def test_tile_matrices_map_window_corners_to_the_tensor_corners():
    win = np.array([[30.0, -20.0, 190.0, 140.0]])
    m = tile_matrices(win, PALM_INPUT_SIZE)[0]
    pts = np.array([[30.0, -20.0, 1.0], [190.0, 140.0, 1.0], [110.0, 60.0, 1.0]])
    np.testing.assert_allclose(pts @ m.T, [[0, 0], [192, 192], [96, 96]], atol=1e-12)


def test_tile_palm_keep_drops_palms_cut_by_inner_edges_only():
    window = np.array([100.0, 0.0, 300.0, 200.0])  # left edge inside the image, top on its border
    palms = np.array([[101, 50, 130, 80],     # touches the inner left edge -> cut
                      [150, 0, 180, 30],      # at the image's top border -> fine
                      [150, 50, 180, 80],     # well inside
                      [270, 150, 299, 199]])  # near right/bottom edges, which are inner (image 640x429)
    keep = tile_palm_keep(palms, window, (640, 429), edge_margin=0.02)  # margin 4 px
    assert keep.tolist() == [False, True, True, False]
    keep = tile_palm_keep(palms, window, (300, 199), edge_margin=0.02)  # now right/bottom are image borders
    assert keep.tolist() == [False, True, True, True]


def test_settings_parse_and_reject():
    assert tile_settings(None) == TileSettings()
    assert tile_settings('off').mode == 'off'
    s = tile_settings({'mode': 'always', 'tiles': 6, 'min_keypoint_score': None})
    assert (s.mode, s.tiles, s.min_keypoint_score) == ('always', 6, None)
    with pytest.raises(ValueError, match='mode'):
        tile_settings('sometimes')
    with pytest.raises(ValueError, match='unknown tiles setting'):
        tile_settings({'grid': 3})
    with pytest.raises(ValueError, match='>= 2'):
        tile_settings({'tiles': 1})


def test_model_dir_detector_section_carries_tiles(tmp_path):
    base = {'framework': 'pytorch', 'task': 'hand-2d-keypoints', 'handkp': {'format_version': 1},
            'model': {'type': 'handkp-topdown-hrnet'}}
    spec = md.detector_spec({**base, 'detector': {'type': 'palm', 'tiles': {'mode': 'always', 'tiles': 4}}}, tmp_path)
    assert spec.tiles == {'mode': 'always', 'tiles': 4}
    assert spec.to_config()['tiles'] == {'mode': 'always', 'tiles': 4}
    assert md.detector_spec({**base, 'detector': {'type': 'palm'}}, tmp_path).tiles is None
    with pytest.raises(md.ModelDirError, match='detector.tiles'):
        md.detector_spec({**base, 'detector': {'type': 'palm', 'tiles': 'sometimes'}}, tmp_path)


# ------------------------------------------------------------------------------------------ real detector
@pytest.fixture(scope='module')
def small_hand(data_dir):
    """A FreiHAND 224x224 hand pasted at native size into an 896x896 black canvas exactly on the tile
    window of row 1, column 2 (5 windows of 224 px across, starting at 0, 168, 336, 504, 672)."""
    import cv2
    path = data_dir / 'hands' / 'freihand' / '00032915.jpg'
    if not path.is_file():
        pytest.skip(f'missing {path}')
    im = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
    assert im.shape == (224, 224, 3)
    canvas = np.zeros((896, 896, 3), np.uint8)
    x0, y0 = 336, 168
    canvas[y0:y0 + 224, x0:x0 + 224] = im
    return im, canvas, np.array([x0, y0], np.float32)


@pytest.fixture(scope='module')
def palm_off():
    return build_palm_detector('full', tiles='off')


def test_fallback_finds_a_small_hand_exactly_where_it_is(small_hand, palm_off):
    im, canvas, offset = small_hand
    assert tile_windows(896, 896, 5, 0.25)[7].tolist() == [336, 168, 560, 392]
    ref = palm_off.palms(im)  # the hand at full size: found by the plain detector
    assert len(ref) == 1
    assert len(palm_off.detect_hands(canvas)) == 0  # too small in the whole canvas
    det = build_palm_detector('full')  # default: tiles='fallback'
    assert det.tiles.mode == 'fallback'
    found = det.palms(canvas)
    assert len(found) == 1 and found.from_tiles.tolist() == [True]
    # the window holds exactly the pasted pixels, so the tile sees what the letterbox of `im` sees
    np.testing.assert_allclose(found.centers - offset, ref.centers, atol=0.05)
    np.testing.assert_allclose(found.sizes, ref.sizes, atol=0.05)
    np.testing.assert_allclose(found.rotations, ref.rotations, atol=0.05)
    np.testing.assert_allclose(found.keypoints - offset, ref.keypoints, atol=0.05)
    hands = det.detect_hands(canvas)
    assert isinstance(hands, TiledDetections) and hands.from_tiles.tolist() == [True]
    assert hands.min_keypoint_score == det.tiles.min_keypoint_score
    np.testing.assert_allclose(hands.rotations, ref.rotations, atol=0.05)


def test_off_is_the_plain_detector_and_fallback_keeps_whole_image_hands(small_hand, palm_off):
    im, canvas, _ = small_hand
    plain = palm_off.detect_hands(im)
    assert type(plain) is Detections
    fb = build_palm_detector('full', tiles='fallback').detect_hands(im)  # whole image finds it: no tiles
    np.testing.assert_array_equal(fb.boxes, plain.boxes)
    np.testing.assert_array_equal(fb.rotations, plain.rotations)
    assert fb.from_tiles.tolist() == [False]
    # 'off' never looks at tiles; tile_palms on a batch of two images gives one result each
    assert len(palm_off.palms([canvas, canvas])[1]) == 0
    both = palm_off.tile_palms([canvas, np.zeros((50, 50, 3), np.uint8)])
    assert [len(p) for p in both] == [1, 0]  # the 50x50 image's windows are below min_side: not tiled


def test_always_merges_tiles_with_the_whole_image_pass(small_hand):
    im, _, _ = small_hand
    # a bigger canvas whose whole-image pass finds the hand too; its tiles see it as well
    canvas = np.zeros((448, 448, 3), np.uint8)
    canvas[112:336, 112:336] = im
    whole = build_palm_detector('full', tiles='off').palms(canvas)
    assert len(whole) == 1
    det = build_palm_detector('full', tiles={'mode': 'always', 'tiles': 2, 'overlap': 0.5, 'min_side': 0})
    win = tile_windows(448, 448, 2, 0.5)
    assert len(win) == 4
    merged = det.palms(canvas)
    assert len(merged) == 1  # the same palm from several windows and the whole image -> one hand
    d = np.hypot(*(merged.centers[0] - whole.centers[0]))
    assert d < 0.1 * whole.sizes[0]
    assert abs(merged.rotations[0] - whole.rotations[0]) < 20.0  # tiles see the hand 2x larger: angles differ a bit
    tiles_only = det.tile_palms(canvas)
    assert len(tiles_only) == 1
    # the merged hand keeps the best score; it counts as a tile hand when a tile had that best score
    assert merged.scores[0] == max(whole.scores[0], tiles_only.scores[0])
    assert merged.from_tiles[0] == bool(tiles_only.scores[0] > whole.scores[0])


# ------------------------------------------------------------------------------------------ verification
class _FixedTileDetector(HandDetector):
    """Test double: two hands, the second one 'found on tiles'."""
    crop_padding = 1.1

    def __init__(self, min_keypoint_score):
        self.min_keypoint_score = min_keypoint_score

    def detect_hands(self, image_rgb, score_thr=None):
        return TiledDetections([[20, 20, 100, 100], [120, 40, 200, 120]], [0.9, 0.8], [0.0, 30.0],
                               from_tiles=[False, True], min_keypoint_score=self.min_keypoint_score)


def test_verification_drops_tile_hands_with_low_keypoint_scores(tmp_path):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    from test_model_dir import write_tiny_dir

    import modelscope_handkp  # noqa: F401  (registers the pipeline)
    model = write_tiny_dir(tmp_path / 'tiny')
    img = np.random.default_rng(0).integers(0, 255, (160, 240, 3), dtype=np.uint8)

    def run(**kw):
        det = kw.pop('det')
        pipe = pipeline(Tasks.hand_2d_keypoints, model=str(model), detector=det, backend='eager', **kw)
        return pipe(img)

    keep_all = run(det=_FixedTileDetector(None))
    assert len(keep_all['boxes']) == 2
    means = keep_all['keypoints'][..., 2].mean(1)
    thr = float(means[1]) + 1e-4  # just above the tile hand's mean score
    out = run(det=_FixedTileDetector(thr))
    assert out['scores'].tolist() == pytest.approx([0.9])  # the tile hand is gone, the other stays
    np.testing.assert_allclose(out['keypoints'], keep_all['keypoints'][:1], atol=1e-5)
    assert len(run(det=_FixedTileDetector(float(means[1]) - 1e-4))['boxes']) == 2
    # the pipeline option checks every detected hand (not boxes given by the caller)
    lo = float(min(means)) - 1e-4
    assert len(run(det=_FixedTileDetector(None), min_keypoint_score=float(max(means)) + 1e-4)['boxes']) == 0
    assert len(run(det=_FixedTileDetector(None), min_keypoint_score=lo)['boxes']) == 2
    pipe = pipeline(Tasks.hand_2d_keypoints, model=str(model), detector=_FixedTileDetector(None), backend='eager',
                    min_keypoint_score=1.0)
    assert len(pipe(img, boxes=[[20, 20, 100, 100]])['boxes']) == 1
    with pytest.raises(ValueError, match='min_keypoint_score'):
        pipeline(Tasks.hand_2d_keypoints, model=str(model), detector='whole_image', min_keypoint_score=2)


def test_always_keeps_the_whole_image_palms_when_no_tile_finds_one(small_hand):
    """tiles='always' on an image without tile palms (too small to tile, or nothing found) returns the
    whole-image palms unchanged; merging them a second time could fuse two hands already kept apart."""
    im, _, _ = small_hand
    whole = build_palm_detector('full', tiles='off').palms(im)
    assert len(whole) >= 1
    # two overlapping copies, IoU ~0.6 > the merge threshold: a second weighted NMS would fuse them
    twin = dataclasses.replace(
        whole, boxes=np.concatenate([whole.boxes[:1], whole.boxes[:1] + np.float32(12)]),
        keypoints=np.concatenate([whole.keypoints[:1], whole.keypoints[:1] + np.float32(12)]),
        scores=np.array([0.9, 0.8], np.float32), centers=np.concatenate([whole.centers[:1], whole.centers[:1] + 12]),
        sizes=np.repeat(whole.sizes[:1], 2), rotations=np.repeat(whole.rotations[:1], 2),
        from_tiles=np.zeros(2, bool))
    det = build_palm_detector('full', tiles={'mode': 'always', 'tiles': 2, 'min_side': 10 ** 6})  # no tiles
    out = det.tile_palms(im, whole=twin)
    assert len(out) == 2 and np.array_equal(out.boxes, twin.boxes) and np.array_equal(out.scores, twin.scores)
