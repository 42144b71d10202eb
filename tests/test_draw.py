"""Drawn results (issue 6): known synthetic hands rendered on gray images, pixel colours checked."""
import numpy as np
import pytest

from modelscope_handkp import draw
from modelscope_handkp.draw import (BOX_COLOR, FINGER_COLORS, KEYPOINT_COLORS, SKELETON, TRACK_COLORS,
                                    WRIST_COLOR, draw_hands)

GRAY = 128


def fan_hand(scale=1.0, offset=(0.0, 0.0)):
    """A hand with well separated keypoints: wrist at (200, 350), five fingers fanned over -60..60 degrees,
    bases 80 px from the wrist, joints 30 px apart (all times ``scale``, plus ``offset``).
    -> keypoints [21, 2] float64, box [4] (x1, y1, x2, y2)."""
    xy = np.zeros((21, 2))
    xy[0] = (200, 350)
    for f, ang in enumerate(np.radians([-60, -30, 0, 30, 60])):
        d = np.array([np.sin(ang), -np.cos(ang)])
        for j in range(4):
            xy[1 + 4 * f + j] = xy[0] + d * (80 + 30 * j)
    xy = np.rint(xy)  # integer positions: the checked pixel is each keypoint's centre
    box = np.array([60.0, 140.0, 340.0, 370.0])
    return xy * scale + offset, box * scale + np.tile(offset, 2)


def result_of(xy, box, kp_scores=None, det_score=0.87):
    s = np.full(21, 0.9) if kp_scores is None else np.asarray(kp_scores, np.float64)
    return {'keypoints': np.concatenate([xy, s[:, None]], -1)[None].astype(np.float32),
            'boxes': np.asarray(box, np.float32)[None], 'scores': np.asarray([det_score], np.float32)}


def gray(h, w):
    return np.full((h, w, 3), GRAY, np.uint8)


def px(img, xy):
    x, y = np.rint(xy).astype(int)
    return img[y, x].astype(int).tolist()


def test_palette_and_skeleton():
    assert KEYPOINT_COLORS.shape == (21, 3) and KEYPOINT_COLORS.dtype == np.uint8
    assert (KEYPOINT_COLORS[0] == WRIST_COLOR).all()
    for f in range(5):
        assert (KEYPOINT_COLORS[1 + 4 * f:5 + 4 * f] == FINGER_COLORS[f]).all()
    assert len({tuple(c) for c in FINGER_COLORS.tolist()} | {tuple(WRIST_COLOR)}) == 6  # all distinct
    # 20 limbs, each finger a chain wrist -> base -> ... -> tip (COCO-WholeBody / MediaPipe order)
    assert SKELETON.shape == (20, 2)
    assert SKELETON[:4].tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert SKELETON[16:].tolist() == [[0, 17], [17, 18], [18, 19], [19, 20]]


def test_output_keys_are_the_result_keys():
    from modelscope.outputs import OutputKeys
    assert (OutputKeys.KEYPOINTS, OutputKeys.BOXES, OutputKeys.SCORES) == (draw.KEYPOINTS, draw.BOXES, draw.SCORES)


def test_keypoint_limb_and_box_colours():
    xy, box = fan_hand()
    img = gray(400, 400)
    before = img.copy()
    out = draw_hands(img, result_of(xy, box))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == before).all() and not np.shares_memory(out, img)  # input unchanged
    for j in range(21):  # every keypoint's centre has its finger's colour, exactly
        assert px(out, xy[j]) == KEYPOINT_COLORS[j].tolist(), j
    for f in range(5):  # the middle of the limb between joints 2 and 3 of each finger
        mid = (xy[2 + 4 * f] + xy[3 + 4 * f]) / 2
        assert px(out, mid) == FINGER_COLORS[f].tolist(), f
    # the box edges in the box colour; a pixel well outside everything stays gray
    assert px(out, (60, 300)) == BOX_COLOR.tolist() and px(out, (340, 300)) == BOX_COLOR.tolist()
    assert px(out, (200, 370)) == BOX_COLOR.tolist()
    assert px(out, (380, 390)) == [GRAY] * 3
    # the score label: a box-coloured patch with dark text above the box's top-left corner
    label = out[100:139, 55:160]
    assert (label == BOX_COLOR).all(-1).sum() > 300
    assert (label.max(-1) < 60).sum() > 20  # text pixels
    # sizes follow the hand: radius round(0.018 * box diagonal)
    diag = np.hypot(280, 230)
    r = max(2, round(draw.RADIUS_FRACTION * diag))
    row = out[350, 150:250]
    assert abs((row == WRIST_COLOR).all(-1).sum() - (2 * r + 1)) <= 2


def test_low_score_keypoints_are_faded_not_dropped():
    xy, box = fan_hand()
    scores = np.full(21, 0.9)
    scores[20] = 0.1  # little finger tip: below kpt_thr=0.3
    scores[8] = 0.25  # index tip
    out = draw_hands(gray(400, 400), result_of(xy, box, scores), kpt_thr=0.3, faded_alpha=0.35)

    def blended(color):
        return np.rint(0.65 * GRAY + 0.35 * np.asarray(color, np.float64)).astype(int).tolist()

    for j, f in ((20, 4), (8, 1)):
        assert px(out, xy[j]) == blended(FINGER_COLORS[f])
        assert px(out, (xy[j] + xy[j - 1]) / 2) == blended(FINGER_COLORS[f])  # its limb too
        assert px(out, xy[j - 1]) == FINGER_COLORS[f].tolist()  # the neighbour keeps its colour
    # kpt_thr below the scores: all opaque
    out2 = draw_hands(gray(400, 400), result_of(xy, box, scores), kpt_thr=0.05)
    assert px(out2, xy[20]) == FINGER_COLORS[4].tolist()
    # skip_thr: the tip (and its limb) are not drawn at all, the index tip is still faded
    out3 = draw_hands(gray(400, 400), result_of(xy, box, scores), kpt_thr=0.3, skip_thr=0.2)
    assert px(out3, xy[20]) == [GRAY] * 3 and px(out3, (xy[20] + xy[19]) / 2) == [GRAY] * 3
    assert px(out3, xy[8]) == blended(FINGER_COLORS[1])
    assert px(out3, xy[19]) == FINGER_COLORS[4].tolist()


@pytest.mark.parametrize('h, w, scale, offset', [(100, 100, 0.25, (0, -20)), (3000, 4000, 7.5, (400, 100))])
def test_scales_with_the_hand_on_tiny_and_large_images(h, w, scale, offset):
    xy, box = fan_hand(scale, offset)
    img = gray(h, w)
    out = draw_hands(img, result_of(xy, box))
    assert (img == GRAY).all()
    for j in range(21):
        assert px(out, xy[j]) == KEYPOINT_COLORS[j].tolist(), j
    diag = np.hypot(*(box[2:] - box[:2]))
    r = max(2, round(draw.RADIUS_FRACTION * diag))
    t = max(1, round(draw.LINE_FRACTION * diag))
    assert (r, t) == ((2, 1) if scale < 1 else (49, 24))
    x0, y0 = np.rint(xy[0]).astype(int)
    # the wrist disc: its width along the row through its centre is 2 r + 1 px; its area ~ pi r^2
    row = (out[y0, max(0, x0 - 3 * r):x0 + 3 * r + 1] == WRIST_COLOR).all(-1)
    assert abs(row.sum() - (2 * r + 1)) <= 2
    if r > 10:
        patch = (out[y0 - 2 * r:y0 + 2 * r, x0 - 2 * r:x0 + 2 * r] == WRIST_COLOR).all(-1)
        assert patch.sum() == pytest.approx(np.pi * r * r, rel=0.05)
        # the middle finger's limb (vertical) is t px wide at the middle between joints 2 and 3
        mx, my = np.rint((xy[10] + xy[11]) / 2).astype(int)
        width = (out[my, mx - 3 * t:mx + 3 * t + 1] == FINGER_COLORS[2]).all(-1).sum()
        assert abs(width - t) <= 2


def test_keypoints_without_scores_tracks_and_two_hands():
    xy, box = fan_hand(0.5)
    xy2, box2 = fan_hand(0.5, (200, 0))
    res = {'keypoints': np.stack([xy, xy2]), 'boxes': np.stack([box, box2]), 'scores': np.array([0.9, 0.6]),
           'track_ids': np.array([3, 12])}
    out = draw_hands(gray(200, 400), res)
    for j in range(21):
        assert px(out, xy[j]) == KEYPOINT_COLORS[j].tolist()
        assert px(out, xy2[j]) == KEYPOINT_COLORS[j].tolist()
    # box colours by track id
    assert px(out, (box[0], 150)) == TRACK_COLORS[3].tolist()
    assert px(out, (box2[2], 150)) == TRACK_COLORS[12 % len(TRACK_COLORS)].tolist()
    # a single hand [21, 3] without boxes: keypoints only
    only = draw_hands(gray(200, 400), {'keypoints': np.concatenate([xy, np.ones((21, 1))], -1)})
    assert px(only, xy[4]) == FINGER_COLORS[0].tolist() and px(only, (box[0], 150)) == [GRAY] * 3


def test_no_hands_returns_a_copy_and_bad_inputs_raise():
    img = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    empty = {'keypoints': np.zeros((0, 21, 3), np.float32), 'boxes': np.zeros((0, 4), np.float32),
             'scores': np.zeros(0, np.float32)}
    out = draw_hands(img, empty)
    assert (out == img).all() and out is not img and not np.shares_memory(out, img)
    with pytest.raises(TypeError, match='uint8'):
        draw_hands(img.astype(np.float32), empty)
    with pytest.raises(ValueError, match=r'\[N, K, 3\]'):
        draw_hands(img, {'keypoints': np.zeros((1, 21, 4))})
    with pytest.raises(ValueError, match='21 keypoints'):
        draw_hands(img, {'keypoints': np.zeros((1, 17, 3))})
    with pytest.raises(ValueError, match='2 entries for 1 hands'):
        draw_hands(img, {'keypoints': np.zeros((1, 21, 3)), 'boxes': np.zeros((2, 4))})
    with pytest.raises(KeyError, match='keypoints'):
        draw_hands(img, {'boxes': np.zeros((1, 4))})
    # NaN keypoints and far-away coordinates are skipped / clipped without errors
    xy, box = fan_hand(0.1)
    kps = np.concatenate([xy, np.ones((21, 1))], -1)
    kps[3] = np.nan
    kps[7, :2] = 1e12
    out = draw_hands(img, {'keypoints': kps[None], 'boxes': box[None]})
    assert out.shape == img.shape


def test_rotated_hand_is_boxed_by_its_keypoints():
    """A palm-detector hand: the result box is the region around its rotated crop (here far larger
    than the image); the drawing boxes the keypoints' extent plus 10 % instead."""
    xy, _ = fan_hand()
    res = result_of(xy, [-300.0, -200.0, 700.0, 800.0])
    lo, hi = xy.min(0), xy.max(0)
    pad = (hi - lo) * 0.1
    x1, y1 = np.rint(lo - pad).astype(int)
    x2, y2 = np.rint(hi + pad).astype(int)
    mid_y = (y1 + y2) // 2
    plain = draw_hands(gray(400, 400), res)  # no rotations: the given box (outside the image: not seen)
    assert px(plain, (x1, mid_y)) == [GRAY] * 3
    res['rotations'] = np.array([30.0], np.float32)
    out = draw_hands(gray(400, 400), res)
    assert px(out, (x1, mid_y)) == BOX_COLOR.tolist() and px(out, (x2, mid_y)) == BOX_COLOR.tolist()
    res['rotations'] = np.array([0.0], np.float32)  # not rotated: the result's box again
    assert (draw_hands(gray(400, 400), res) == plain).all()
