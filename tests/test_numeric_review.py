"""Numeric review: edge cases where the codec, metrics and BN folding differed from the original
(EasyCV 0.11.7 / mmpose 0.x), checked against closed-form values and against small reference
implementations written here from the definitions (per keypoint, loops: slow but plain), so the checks
need no EasyCV."""
import numpy as np
import pytest
import torch
from torch import nn

from modelscope_handkp.codec import HeatmapCodec
from modelscope_handkp.metrics import keypoint_metrics

# ---------------------------------------------------------------- reference implementations


def _reference_integer_target(kp, vis, image_size, heatmap_size, sigma):
    """The integer-centred ("MSRA") target from its definition: centre pixel c = trunc(kp / stride + 0.5);
    on each axis a patch over the pixels trunc(c - 3 sigma) <= x < trunc(c + 3 sigma + 1) whose pixel at
    offset i from the patch start holds the Gaussian of (i - m), m = (6 sigma + 1) // 2; weight = visibility,
    0 when the patch misses the map; drawn only where the weight is > 0.5; float32 throughout."""
    w, h = heatmap_size
    stride = np.asarray(image_size, np.float64) / np.array([w, h], np.float64)
    r = sigma * 3
    m = (2 * r + 1) // 2
    maps = np.zeros((len(kp), h, w), np.float32)
    weights = np.asarray(vis, np.float32).reshape(-1, 1).copy()
    for j in range(len(kp)):
        c = np.trunc(np.asarray(kp[j], np.float64) / stride + 0.5)
        start = np.trunc(c - r).astype(np.int64)
        stop = np.trunc(c + r + 1).astype(np.int64)
        if start[0] >= w or start[1] >= h or stop[0] < 0 or stop[1] < 0:
            weights[j] = 0
        if weights[j, 0] <= 0.5:
            continue
        x0, x1 = max(start[0], 0), min(stop[0], w)
        y0, y1 = max(start[1], 0), min(stop[1], h)
        ox = np.arange(x0, x1, dtype=np.float32) - np.float32(start[0]) - np.float32(m)
        oy = np.arange(y0, y1, dtype=np.float32) - np.float32(start[1]) - np.float32(m)
        maps[j, y0:y1, x0:x1] = np.exp(-(ox[None, :]**2 + oy[:, None]**2) / np.float32(2 * sigma**2))
    return maps, weights


def _reference_pck(pred, gt, visible, norm, thr):
    """PCK from its definition: for each keypoint, over the instances where it is visible and the
    normaliser has no zero, the fraction whose normalised distance, stored as float32, is below thr
    (compared in float32, as NumPy compares a float32 array with a Python float); the mean over the
    keypoints visible at least once, 0 when none is.  The division runs in the normaliser's dtype."""
    d = np.linalg.norm((pred - gt) / norm[:, None, :], axis=-1).astype(np.float32)  # [N, K]
    usable = (visible > 0) & (norm != 0).all(axis=1)[:, None]
    per_keypoint = [np.mean(d[usable[:, k], k] < np.float32(thr)) for k in range(d.shape[1]) if usable[:, k].any()]
    return float(np.mean(per_keypoint)) if per_keypoint else 0.0


def _reference_evaluator(pred, gt, visible, bboxes, pck_thr=0.2, auc_nor=30):
    """PCK normalised by max(w, h) of each box (in the boxes' own dtype: float64 for lists), and AUC: the
    mean PCK at thresholds i / 20, i = 0 .. 19, of distances divided by the integer auc_nor (float64)."""
    boxes = np.asarray(bboxes)
    side = boxes[:, 2:].max(axis=1)
    pck = _reference_pck(pred, gt, visible, np.stack([side, side], axis=1), pck_thr)
    nor = np.full((len(pred), 2), auc_nor, dtype=np.int64)
    auc = sum(_reference_pck(pred, gt, visible, nor, i / 20) for i in range(20)) / 20
    return pck, auc


# ---------------------------------------------------------------- metrics


def test_auc_and_pck_compare_thresholds_in_float32_as_the_original():
    """An error of exactly 10.5 px at auc_norm 30 is 0.35 = float32 0.34999999: the original's
    ``distances < thr`` compares in float32 and counts it a miss at the 0.35 threshold; the float64
    comparison counted it a hit (AUC 0.65 instead of 0.6)."""
    gt = np.zeros((1, 2, 2), np.float32)
    pred = np.array([[[10.5, 0.0], [10.5, 0.0]]], np.float32)
    m = keypoint_metrics(pred, gt, np.ones((1, 2)), [[0, 0, 30, 30]], pck_thr=0.35)
    assert m['AUC'] == pytest.approx(12 / 20, abs=1e-12)  # thresholds 0.40 .. 0.95 only
    assert m['PCK'] == 0.0  # 10.5 / 30 is not < float32(0.35)
    assert m['EPE'] == pytest.approx(10.5)


def test_metrics_equal_the_original_on_pixel_quantised_errors():
    """Integer / half-pixel errors hit the thresholds exactly; with COCO bbox lists (float64
    normalisers) and the integer AUC normaliser the original divides in float64."""
    rng = np.random.default_rng(1)
    differ = 0
    for _ in range(40):
        gt = rng.integers(0, 200, (6, 21, 2)).astype(np.float32)
        err = rng.integers(-40, 41, (6, 21, 2)) * 0.5
        err[..., 1] *= rng.integers(0, 2, (6, 21))
        pred = (gt + err).astype(np.float32)
        vis = rng.integers(0, 2, (6, 21)).astype(np.float32)
        boxes = (np.concatenate([rng.integers(0, 50, (6, 2)), rng.integers(20, 120, (6, 2))], 1)
                 * (0.1 * rng.integers(1, 20))).tolist()
        pck, auc = _reference_evaluator(pred, gt, vis, boxes)
        m = keypoint_metrics(pred, gt, vis, boxes)
        differ += abs(m['PCK'] - pck) > 1e-12 or abs(m['AUC'] - auc) > 1e-12
        m32 = keypoint_metrics(pred, gt, vis, np.asarray(boxes, np.float32))  # float32 boxes: float32 division
        pck32, _ = _reference_evaluator(pred, gt, vis, np.asarray(boxes, np.float32))
        differ += abs(m32['PCK'] - pck32) > 1e-12
    assert differ == 0  # was 38 of 80 comparisons before the float32 thresholds


# ---------------------------------------------------------------- encoding


@pytest.mark.parametrize('sigma', [1.5, 2.5, 1.7, 2.0, 3.0])
def test_msra_target_equals_the_original_for_any_sigma(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    kp = rng.uniform(-40, 300, (21, 2)).astype(np.float32)
    vis = rng.choice([0.0, 0.3, 0.6, 1.0], 21).astype(np.float32)
    want, want_w = _reference_integer_target(kp, vis, (256, 256), (64, 64), sigma)
    got, got_w = HeatmapCodec(sigma=sigma, zero_outside=False).encode(kp, vis)
    np.testing.assert_array_equal(got_w, want_w)
    np.testing.assert_array_equal(got, want)


def test_msra_target_half_integer_three_sigma_closed_form():
    """sigma 1.5: tmp_size 4.5, the original's patch is 10 px wide (x0 = 10 // 2 = 5) at
    ul = int(mu - 4.5): pixels mu-5 .. mu+4; near the left border int() truncates toward zero, so
    for mu = 2 it starts at -2 and peaks at x = 3.  The symmetric |dx| <= 4.5 mask was 0.47 off."""
    codec = HeatmapCodec(sigma=1.5, zero_outside=False)
    t, w = codec.encode(np.array([[80.0, 120.0], [8.0, 120.0]], np.float32), np.ones(2))
    assert w[:, 0].tolist() == [1.0, 1.0]
    row = t[0, 30]
    g = np.exp(-np.arange(-5, 5, dtype=np.float32)**2 / np.float32(4.5))
    np.testing.assert_array_equal(row[15:25], g)
    assert row[:15].max() == 0 and row[25:].max() == 0
    row = t[1, 30]
    np.testing.assert_allclose(row[:7], np.exp(-(np.arange(7) - 3.0)**2 / 4.5), rtol=1e-6)
    assert row[7:].max() == 0 and row.argmax() == 3


@pytest.mark.parametrize('unbiased', [False, True])
@pytest.mark.parametrize('zero_outside', [False, True])
def test_nan_keypoints_give_zero_weight_and_finite_targets(unbiased, zero_outside):
    """Unlabelled keypoints stored as NaN made NaN target maps even at weight 0 (NaN * 0 = NaN), and a
    weighted MSE loss of NaN.  Now: weight 0 and an empty map; the other keypoints are unchanged."""
    kp = np.array([[np.nan, np.nan], [100.0, 60.0], [np.nan, 30.0], [np.inf, 5.0]], np.float32)
    codec = HeatmapCodec(sigma=2.0, unbiased_encoding=unbiased, zero_outside=zero_outside)
    t, w = codec.encode(kp, np.array([0.0, 1.0, 1.0, 1.0]))
    assert np.isfinite(t).all()
    assert w[:, 0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert t[[0, 2, 3]].max() == 0.0
    t1, _ = codec.encode(kp[1:2], np.ones(1))
    np.testing.assert_array_equal(t[1], t1[0])


# ---------------------------------------------------------------- BatchNorm folding


class _SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)
        self.seq = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
        self.alias = self.seq  # the same Sequential under a second name

    def forward(self, x):
        y = self.bn(self.conv(x)) + self.bn2(self.conv(2 * x)) + self.conv(x)  # one conv, three call sites
        return self.seq(y) + self.alias(y)


def test_fold_batchnorm_leaves_shared_modules_alone():
    """A conv called at several places was folded with the BN of one call, changing the others
    (or crashed folding a second BN into it)."""
    from modelscope_handkp.models.fuse import _pairs_from_sequentials, fold_batchnorm
    torch.manual_seed(0)
    m = _SharedConv()
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
    m.eval()
    x = torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    folded = fold_batchnorm(m)
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x), rtol=1e-5, atol=1e-5)
    # the shared Sequential is not folded either (its conv -> BN pair is also the alias's)
    assert _pairs_from_sequentials(m) == []
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # the original is untouched


def test_fold_batchnorm_skips_bn_without_running_stats():
    from modelscope_handkp.models.fuse import fold_batchnorm
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                      nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        m[4].running_mean.uniform_(-1, 1)
        m[4].running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(m)  # raised ValueError for the first BN
    assert folded.num_folded_bn == 1
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('sigma', [0.0, -1.0, float('nan')])
def test_non_positive_sigma_is_refused(sigma):
    """sigma 0 made 0/0 = NaN targets at every keypoint centre."""
    with pytest.raises(ValueError, match='sigma must be a positive'):
        HeatmapCodec(sigma=sigma)
