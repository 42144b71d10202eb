"""DARK codec: parity with EasyCV's keypoints_from_heatmaps, encoding, round trip."""
import numpy as np
import pytest
import torch

from modelscope_handkp.codec import HeatmapCodec, decode_heatmaps


@pytest.mark.parametrize('mode,key', [('unbiased', 'unbiased'), ('default', 'default'), (None, 'none')])
def test_decode_parity(decode_ref, mode, key):
    coords, scores = decode_heatmaps(decode_ref['heatmaps'], decode_ref['centers'], decode_ref['scales'], mode, 11)
    assert coords.dtype == np.float32 and scores.dtype == np.float32
    assert np.abs(coords - decode_ref[f'preds_{key}']).max() <= 1e-3
    assert np.abs(scores - decode_ref[f'maxvals_{key}']).max() <= 1e-6


def test_dark_beats_argmax(decode_ref):
    codec = HeatmapCodec(post_process='unbiased')
    hm = decode_ref['heatmaps']
    n = len(hm)
    true = decode_ref['true_peaks_heatmap_xy']

    def err(mode):
        c = HeatmapCodec(post_process=mode).decode_to_input(hm)[0] / 4.0  # crop px -> heatmap px
        return np.linalg.norm(c - true, axis=-1).mean()

    e_dark, e_argmax, e_default = err('unbiased'), err(None), err('default')
    assert n == 6 and codec.kernel == 11
    # measured mean errors in heatmap pixels: argmax 0.408, quarter shift 0.241, DARK 0.021
    assert e_argmax == pytest.approx(0.408, abs=0.005)
    assert e_default == pytest.approx(0.241, abs=0.005)
    assert e_dark == pytest.approx(0.021, abs=0.003)
    assert e_dark < 0.1 * e_argmax


def test_topdown_keypoints_from_flip_averaged_heatmaps(topdown_ref):
    coords, scores = decode_heatmaps(topdown_ref['heatmaps_flip_avg'], topdown_ref['centers'],
                                     topdown_ref['scales'], 'unbiased', 11)
    ref = topdown_ref['keypoints']
    assert np.abs(coords - ref[..., :2]).max() <= 1e-3
    assert np.abs(scores[..., 0] - ref[..., 2]).max() <= 1e-6


def test_decode_accepts_tensor_and_empty():
    codec = HeatmapCodec()
    hm = torch.zeros(0, 21, 64, 64)
    c, s = codec.decode(hm, np.zeros((0, 2)), np.zeros((0, 2)))
    assert c.shape == (0, 21, 2) and s.shape == (0, 21, 1)


def test_encode_matches_original_msra_target():
    codec = HeatmapCodec(sigma=3, zero_outside=False)
    kp = np.array([[100.3, 60.9], [2.0, 250.0], [-30.0, 10.0], [300.0, 300.0]], np.float32)
    target, weight = codec.encode(kp, np.array([1, 1, 1, 0]))
    assert target.shape == (4, 64, 64) and weight.shape == (4, 1)
    # keypoint 0: stride 4 -> (25.075, 15.225) -> integer centre (25, 15)
    assert target[0, 15, 25] == 1.0
    assert target[0, 15, 25 + 9] == pytest.approx(np.exp(-81 / 18), rel=1e-6)
    assert target[0, 15, 25 + 10] == 0.0  # outside the 19x19 patch
    # keypoint 2 at heatmap x=-7.5: trunc(-7.5+0.5) = -7, window reaches x=2 -> weight kept (original rule)
    assert weight[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert target[2].max() == pytest.approx(np.exp(-(7**2) / 18), rel=1e-6)  # nearest column x=0 is 7 px away
    assert target[3].max() == 0.0
    # the documented default: keypoints outside the heatmap get weight 0
    _, w2 = HeatmapCodec(sigma=3).encode(kp, np.array([1, 1, 1, 0]))
    assert w2[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_encode_batch_equals_single():
    codec = HeatmapCodec()
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 250, (3, 21, 2)).astype(np.float32)  # all centres inside the heatmap
    vis = rng.integers(0, 2, (3, 21))
    t, w = codec.encode(kp, vis)
    for i in range(3):
        ti, wi = codec.encode(kp[i], vis[i])
        assert np.array_equal(t[i], ti) and np.array_equal(w[i], wi)
    assert np.array_equal(w[..., 0], (vis > 0).astype(np.float32))


def test_unbiased_round_trip_subpixel():
    codec = HeatmapCodec(unbiased_encoding=True, post_process='unbiased', sigma=2.0)
    rng = np.random.default_rng(1)
    kp = rng.uniform(40, 216, (8, 21, 2)).astype(np.float32)
    target, weight = codec.encode(kp, np.ones((8, 21)))
    assert weight.min() == 1.0
    decoded, scores = codec.decode_to_input(target)
    err_hm = np.abs(decoded - kp).max() / 4.0
    assert err_hm < 0.002  # measured 0.00034 heatmap px (issue: < 0.05)
    # the integer-centred (MSRA) encoding cannot carry sub-pixel positions: error ~0.25+ px
    msra = HeatmapCodec(unbiased_encoding=False, sigma=2.0)
    d2, _ = msra.decode_to_input(msra.encode(kp, np.ones((8, 21)))[0])
    assert np.abs(d2 - kp).max() / 4.0 > 0.3  # measured 0.499
