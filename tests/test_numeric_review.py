"""Numeric review: edge cases where the codec, metrics and BN folding differed from the original
(EasyCV 0.11.7 / mmpose 0.x), checked against closed-form values and against line-by-line
transcriptions of the original functions (kept here, small, so the checks need no EasyCV)."""
import numpy as np
import pytest
import torch
from torch import nn

from modelscope_handkp.codec import HeatmapCodec
from modelscope_handkp.metrics import keypoint_metrics

# ---------------------------------------------------------------- transcriptions of the original


def _orig_msra_target(joints, visible, image_size, heatmap_size, sigma):
    """mmpose 0.x TopDownGenerateTarget._msra_generate_target, unbiased_encoding=False."""
    W, H = heatmap_size
    k = len(joints)
    target_weight = np.zeros((k, 1), dtype=np.float32)
    target = np.zeros((k, H, W), dtype=np.float32)
    tmp_size = sigma * 3
    feat_stride = np.array(image_size) / [W, H]
    for j in range(k):
        target_weight[j] = visible[j]
        mu_x = int(joints[j][0] / feat_stride[0] + 0.5)
        mu_y = int(joints[j][1] / feat_stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= W or ul[1] >= H or br[0] < 0 or br[1] < 0:
            target_weight[j] = 0
        if target_weight[j] > 0.5:
            size = 2 * tmp_size + 1
            x = np.arange(0, size, 1, np.float32)
            y = x[:, None]
            x0 = y0 = size // 2
            g = np.exp(-((x - x0)**2 + (y - y0)**2) / (2 * sigma**2))
            g_x = max(0, -ul[0]), min(br[0], W) - ul[0]
            g_y = max(0, -ul[1]), min(br[1], H) - ul[1]
            img_x = max(0, ul[0]), min(br[0], W)
            img_y = max(0, ul[1]), min(br[1], H)
            target[j][img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
    return target, target_weight


def _orig_distances(preds, targets, mask, normalize):
    n, k, _ = preds.shape
    _mask = mask.copy()
    _mask[np.where((normalize == 0).sum(1))[0], :] = False
    distances = np.full((n, k), -1, dtype=np.float32)
    normalize[np.where(normalize <= 0)] = 1e6
    distances[_mask] = np.linalg.norm(((preds - targets) / normalize[:, None, :])[_mask], axis=-1)
    return distances.T


def _orig_pck(pred, gt, mask, thr, normalize):
    acc = []
    for d in _orig_distances(pred, gt, mask, normalize):
        valid = d != -1
        acc.append((d[valid] < thr).sum() / valid.sum() if valid.sum() > 0 else -1)
    acc = np.array(acc)
    valid_acc = acc[acc >= 0]
    return valid_acc.mean() if len(valid_acc) > 0 else 0


def _orig_evaluator(pred, gt, visible, bboxes, pck_thr=0.2, auc_nor=30):
    """EasyCV KeyPointEvaluator (PCK, AUC) on COCO-style bbox lists."""
    mask = visible > 0
    thr_bbox = np.array([np.array([np.max(np.array(b)[2:])] * 2) for b in bboxes])
    pck = _orig_pck(pred, gt, mask, pck_thr, thr_bbox)
    nor = np.tile(np.array([[auc_nor, auc_nor]]), (pred.shape[0], 1))
    auc = 0
    for i in range(20):
        auc += 1.0 / 20 * _orig_pck(pred, gt, mask, 1.0 * i / 20, nor)
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
        pck, auc = _orig_evaluator(pred, gt, vis, boxes)
        m = keypoint_metrics(pred, gt, vis, boxes)
        differ += abs(m['PCK'] - pck) > 1e-12 or abs(m['AUC'] - auc) > 1e-12
        m32 = keypoint_metrics(pred, gt, vis, np.asarray(boxes, np.float32))  # float32 boxes: float32 division
        pck32, _ = _orig_evaluator(pred, gt, vis, np.asarray(boxes, np.float32))
        differ += abs(m32['PCK'] - pck32) > 1e-12
    assert differ == 0  # was 38 of 80 comparisons before the float32 thresholds


# ---------------------------------------------------------------- encoding


@pytest.mark.parametrize('sigma', [1.5, 2.5, 1.7, 2.0, 3.0])
def test_msra_target_equals_the_original_for_any_sigma(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    kp = rng.uniform(-40, 300, (21, 2)).astype(np.float32)
    vis = rng.choice([0.0, 0.3, 0.6, 1.0], 21).astype(np.float32)
    want, want_w = _orig_msra_target(kp, vis, (256, 256), (64, 64), sigma)
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
