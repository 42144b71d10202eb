"""Tracking and one-euro smoothing (issue 6: video)."""
import math

import numpy as np
import pytest

from modelscope_handkp.tracking import HandTracker, OneEuroFilter, box_iou


# ----------------------------------------------------------------------------- OneEuroFilter
def test_constant_signal_stays_constant():
    x = np.array([[3.0, -7.5], [1e4, 0.25]])
    for f, ts in ((OneEuroFilter(1.0, 0.5, 1.0), [None] * 50), (OneEuroFilter(0.3, 2.0, 1.0), np.arange(50) * 0.04)):
        outs = np.stack([f(x, t) for t in ts])
        np.testing.assert_allclose(outs, np.broadcast_to(x, outs.shape), rtol=0, atol=1e-9)


def test_first_steps_match_the_formula():
    min_cutoff, beta, d_cutoff, freq = 1.0, 0.05, 1.0, 30.0
    f = OneEuroFilter(min_cutoff, beta, d_cutoff, freq)
    assert f(np.array([0.0]))[0] == 0.0  # first sample passes
    dt = 1 / freq

    def alpha(cutoff):
        return 1 / (1 + 1 / (2 * math.pi * cutoff) / dt)

    dx1 = alpha(d_cutoff) * (100.0 / dt)  # low-passed speed after the step
    y1 = alpha(min_cutoff + beta * dx1) * 100.0
    assert f(np.array([100.0]))[0] == pytest.approx(y1, rel=1e-12)
    dx2 = dx1 + alpha(d_cutoff) * ((100.0 - y1) / dt - dx1)
    y2 = y1 + alpha(min_cutoff + beta * abs(dx2)) * (100.0 - y1)
    assert f(np.array([100.0]))[0] == pytest.approx(y2, rel=1e-12)
    assert 80 < y1 < y2 < 100


def test_noise_on_a_static_point_is_reduced():
    rng = np.random.default_rng(0)
    noisy = 50.0 + rng.normal(0, 2.0, (600, 2))
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0, freq=30.0)
    out = np.stack([f(x) for x in noisy])[60:]
    # a first-order low-pass with alpha = 0.173 keeps alpha / (2 - alpha) = 9.5 % of white-noise variance
    ratio = out.var(0) / noisy[60:].var(0)
    assert (ratio < 0.15).all() and (ratio > 0.05).all(), ratio
    np.testing.assert_allclose(out.mean(0), 50.0, atol=0.5)


def test_fast_step_is_followed_with_beta():
    step = np.r_[np.zeros(10), np.full(20, 100.0)]
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    fast = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    y_slow = np.array([slow(np.array([v]))[0] for v in step])
    y_fast = np.array([fast(np.array([v]))[0] for v in step])
    assert y_slow[12] < 50  # without beta: heavy lag 3 frames after the step
    assert y_fast[10] > 80 and y_fast[12] > 97  # with beta the step is followed within a few frames
    assert (np.diff(y_fast) >= 0).all() and y_fast.max() <= 100 + 1e-9  # no overshoot


def test_vectorised_elements_are_independent_and_timestamps():
    rng = np.random.default_rng(1)
    seq = np.cumsum(rng.normal(0, 3, (40, 2, 21, 2)), 0)
    ts = np.cumsum(rng.uniform(0.02, 0.06, 40))
    f = OneEuroFilter(0.8, 0.1, 1.0)
    together = np.stack([f(x, t) for x, t in zip(seq, ts)])
    g = OneEuroFilter(0.8, 0.1, 1.0)
    one = np.array([g(x[1, 7, 0], t) for x, t in zip(seq, ts)])
    np.testing.assert_allclose(together[:, 1, 7, 0], one, rtol=1e-12)
    # no timestamps = timestamps 1 / freq apart
    a, b = OneEuroFilter(1.0, 0.1, freq=25.0), OneEuroFilter(1.0, 0.1, freq=25.0)
    np.testing.assert_allclose([a(x) for x in seq[:10]], [b(x, i / 25) for i, x in enumerate(seq[:10])], rtol=1e-12)
    # a longer gap between samples moves the output further toward the new value
    c, d = OneEuroFilter(1.0, 0.0), OneEuroFilter(1.0, 0.0)
    c(np.zeros(1), 0.0), d(np.zeros(1), 0.0)
    assert c(np.ones(1), 0.5)[0] > d(np.ones(1), 0.05)[0]
    # non-finite samples keep the element's state
    e = OneEuroFilter(1.0, 0.0)
    e(np.array([1.0, 2.0]))
    y = e(np.array([np.nan, 3.0]))
    assert y[0] == 1.0 and 2.0 < y[1] < 3.0
    with pytest.raises(ValueError, match='shape'):
        e(np.zeros(3))
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0)


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float64)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1, 0], [0, 0, 0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


# ----------------------------------------------------------------------------- HandTracker
def hand(cx, cy, size=100.0, score=0.9, rng=None, noise=0.0):
    """A hand: 21 keypoints spread around (cx, cy) over ``size`` px, its box, its score."""
    base = np.stack(np.meshgrid(np.linspace(-0.4, 0.4, 7), np.linspace(-0.4, 0.4, 3)), -1).reshape(21, 2)
    xy = np.array([cx, cy]) + base * size
    if rng is not None:
        xy = xy + rng.normal(0, noise, xy.shape)
    kps = np.concatenate([xy, np.linspace(0.5, 1.0, 21)[:, None]], -1)
    box = [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]
    return kps, box, score


def result(*hands):
    if not hands:
        return {'keypoints': np.zeros((0, 21, 3), np.float32), 'boxes': np.zeros((0, 4), np.float32),
                'scores': np.zeros(0, np.float32)}
    return {'keypoints': np.stack([h[0] for h in hands]).astype(np.float32),
            'boxes': np.asarray([h[1] for h in hands], np.float32),
            'scores': np.asarray([h[2] for h in hands], np.float32)}


def test_ids_follow_hands_when_the_input_order_swaps():
    tr = HandTracker(max_missed=2)
    ids_left, ids_right = [], []
    for i in range(12):
        left, right = hand(100 + 3 * i, 200), hand(400 - 3 * i, 210, score=0.8)
        order = [left, right] if i % 2 == 0 else [right, left]
        out = tr.update(result(*order))
        ids = out['track_ids']
        assert ids.dtype == np.int64 and ids.shape == (2,)
        ids_left.append(ids[0] if i % 2 == 0 else ids[1])
        ids_right.append(ids[1] if i % 2 == 0 else ids[0])
        # boxes and scores pass unchanged, in the input order
        np.testing.assert_array_equal(out['boxes'], result(*order)['boxes'])
        np.testing.assert_array_equal(out['scores'], result(*order)['scores'])
    assert set(ids_left) == {0} and set(ids_right) == {1}
    # a third hand gets the next id
    out = tr.update(result(hand(100 + 36, 200), hand(400 - 36, 210), hand(250, 500)))
    assert out['track_ids'].tolist() == [0, 1, 2]


def test_overlapping_hands_are_told_apart_by_keypoints():
    # two hands with the same box moving in opposite directions: IoU cannot tell them apart
    tr = HandTracker(smoothing=False)
    a0, b0 = hand(200, 200, size=100), hand(200, 200, size=100)
    kb = b0[0].copy()
    kb[:, :2] = kb[::-1, :2]  # hand b: keypoints mirrored through the centre
    first = tr.update(result(a0, (kb, b0[1], 0.8)))
    assert first['track_ids'].tolist() == [0, 1]
    a1 = hand(205, 200, size=100)
    kb1 = kb.copy()
    kb1[:, 0] -= 5
    out = tr.update(result((kb1, [145, 150, 245, 250], 0.8), a1))
    assert out['track_ids'].tolist() == [1, 0]


@pytest.mark.parametrize('gap, same', [(3, True), (4, False)])
def test_hand_gone_longer_than_max_missed_gets_a_new_id(gap, same):
    tr = HandTracker(max_missed=3)
    for _ in range(5):
        assert tr.update(result(hand(300, 300)))['track_ids'].tolist() == [0]
    for _ in range(gap):
        out = tr.update(result())
        assert out['track_ids'].shape == (0,) and out['track_ids'].dtype == np.int64
        assert out['keypoints'].shape == (0, 21, 3)
    out = tr.update(result(hand(302, 300)))
    assert out['track_ids'].tolist() == ([0] if same else [1])


def test_keypoints_are_smoothed_scores_unchanged():
    rng = np.random.default_rng(0)
    tr = HandTracker(fps=30.0)
    raw, smooth = [], []
    for i in range(150):
        res = result(hand(320, 240, size=200, rng=rng, noise=3.0))
        keep = {k: v.copy() for k, v in res.items()}
        out = tr.update(res)
        for k in keep:  # the input is not modified
            np.testing.assert_array_equal(res[k], keep[k])
        assert out['keypoints'].dtype == np.float32
        np.testing.assert_array_equal(out['keypoints'][..., 2], res['keypoints'][..., 2])
        raw.append(res['keypoints'][0, :, :2])
        smooth.append(out['keypoints'][0, :, :2])
    raw, smooth = np.stack(raw)[30:], np.stack(smooth)[30:]
    ratio = smooth.var(0).mean() / raw.var(0).mean()
    assert ratio < 0.4, ratio
    np.testing.assert_allclose(smooth.mean(0), raw.mean(0), atol=1.0)
    # without smoothing: the keypoints pass unchanged
    plain = HandTracker(smoothing=False)
    for _ in range(3):
        res = result(hand(320, 240, size=200, rng=rng, noise=3.0))
        np.testing.assert_array_equal(plain.update(res)['keypoints'], res['keypoints'])


def test_smoothing_does_not_depend_on_the_resolution():
    """beta is per hand size: the same motion at 10x the resolution gives 10x the smoothed keypoints."""
    rng = np.random.default_rng(3)
    path = np.cumsum(rng.normal(0, 4, (40, 2)), 0) + 300
    small, big = HandTracker(), HandTracker()
    for i, (x, y) in enumerate(path):
        h1 = hand(x, y, size=100, rng=np.random.default_rng(i), noise=2.0)
        h10 = (np.concatenate([h1[0][:, :2] * 10, h1[0][:, 2:]], -1), [v * 10 for v in h1[1]], h1[2])
        o1, o10 = small.update(result(h1)), big.update(result(h10))
        np.testing.assert_allclose(o10['keypoints'][..., :2], 10 * o1['keypoints'][..., :2], rtol=1e-5, atol=0.05)


def test_fast_motion_is_followed():
    tr = HandTracker()
    for i in range(10):
        tr.update(result(hand(200, 200)))
    # the hand jumps by 0.4 of its size per frame (12 hand sizes / s at 30 fps)
    for i in range(1, 6):
        out = tr.update(result(hand(200 + 40 * i, 200)))
        assert out['track_ids'].tolist() == [0]
    lag = np.abs(out['keypoints'][0, :, 0] - result(hand(400, 200))['keypoints'][0, :, 0]).max()
    assert lag < 15, lag  # under 0.15 hand sizes behind


# ----------------------------------------------------------------------------- non-finite keypoints (review)
def test_element_non_finite_at_first_sample_starts_at_its_first_finite_value():
    f = OneEuroFilter(1.0, 0.0, 1.0, freq=30.0)
    np.testing.assert_array_equal(f(np.array([np.nan, 1.0, np.inf])), [np.nan, 1.0, np.inf])
    y = f(np.array([5.0, 1.0, np.nan]))
    np.testing.assert_array_equal(y, [5.0, 1.0, np.inf])  # the first finite value passes unchanged
    y = f(np.array([6.0, 1.0, 2.0]))
    a = 1 / (1 + 1 / (2 * math.pi * 1.0) * 30.0)  # alpha at min_cutoff (beta 0)
    np.testing.assert_allclose(y, [5.0 + a * 1.0, 1.0, 2.0], rtol=1e-12)


def test_hand_with_a_nan_keypoint_in_its_first_frame_is_smoothed_back():
    tr = HandTracker(fps=30.0)
    kps, box, score = hand(300, 300)
    first = kps.copy()
    first[3, :2] = np.nan  # e.g. a keypoint the model could not decode
    out = tr.update(result((first, box, score)))
    assert np.isnan(out['keypoints'][0, 3, :2]).all()
    for _ in range(3):
        out = tr.update(result((kps, box, score)))
    assert out['track_ids'].tolist() == [0]
    np.testing.assert_allclose(out['keypoints'][0, :, :2], kps[:, :2], atol=1e-3)  # not NaN forever


def test_a_nan_keypoint_does_not_break_the_match():
    # the hand moves 0.45 of its size: box IoU 0.379, keypoint similarity 0.364 -> affinity 0.37 >= 0.2;
    # one NaN keypoint must not turn the keypoint similarity to 0 (affinity 0.19: a new id)
    tr = HandTracker(smoothing=False)
    assert tr.update(result(hand(300, 300)))['track_ids'].tolist() == [0]
    kps, box, score = hand(345, 300)
    kps[0, :2] = np.nan
    out = tr.update(result((kps, box, score)))
    assert out['track_ids'].tolist() == [0]
    # and a track whose keypoint is NaN still matches the hand by the other keypoints
    out = tr.update(result(hand(390, 300)))
    assert out['track_ids'].tolist() == [0]


def test_xy_only_keypoints_keep_two_columns_in_frames_without_hands():
    tr = HandTracker()
    xy = result(hand(300, 300))['keypoints'][..., :2]
    assert tr.update({'keypoints': xy})['keypoints'].shape == (1, 21, 2)
    empty = tr.update({'keypoints': np.zeros((0, 21, 2), np.float32)})
    assert empty['keypoints'].shape == (0, 21, 2) and empty['keypoints'].dtype == np.float32
    assert empty['track_ids'].shape == (0,)
    assert tr.update({'keypoints': []})['keypoints'].shape == (0, 21, 3)
    np.testing.assert_allclose(tr.update({'keypoints': xy})['keypoints'], xy, atol=1e-4)  # track 0 continues
    assert tr.track_ids == [0]
