"""PCK/AUC/EPE/NME equal EasyCV's KeyPointEvaluator."""
import numpy as np
import pytest

from modelscope_handkp.metrics import keypoint_metrics


def test_metrics_parity(metrics_ref):
    m = keypoint_metrics(metrics_ref['pred'], metrics_ref['gt'], metrics_ref['visible'], metrics_ref['bbox_xywh'])
    for k in ('PCK', 'AUC', 'EPE', 'NME'):
        assert abs(m[k] - float(metrics_ref[k])) <= 1e-9, k


def test_no_visible_keypoints_gives_zeros_not_nan():
    pred = np.zeros((2, 21, 2))
    m = keypoint_metrics(pred, pred + 1, np.zeros((2, 21)), np.ones((2, 4)))
    assert m == {'PCK': 0.0, 'AUC': 0.0, 'EPE': 0.0, 'NME': 0.0}
    assert keypoint_metrics(np.zeros((0, 21, 2)), np.zeros((0, 21, 2)), np.zeros((0, 21)), np.zeros((0, 4)))['PCK'] == 0


def test_small_hand_by_hand():
    gt = np.zeros((1, 3, 2))
    pred = np.array([[[3.0, 4.0], [30.0, 0.0], [0.0, 0.0]]])  # errors 5, 30, 0 px
    vis = np.array([[1, 1, 0]])
    m = keypoint_metrics(pred, gt, vis, np.array([[0, 0, 50, 100]]))  # PCK threshold 0.2*100 = 20 px
    assert m['PCK'] == pytest.approx(0.5)
    assert m['EPE'] == pytest.approx(17.5)
    # AUC: thresholds 0..28.5 px step 1.5; 5 px is inside for 16 of 20 thresholds, 30 px never
    assert m['AUC'] == pytest.approx((16 / 20) * 0.5)


def test_easycv_metric_accepts_bfloat16_predictions():
    """Predictions from a bfloat16 model (autocast) raised 'Got unsupported ScalarType BFloat16'."""
    import torch

    from modelscope_handkp.evaluation import EasyCVMetric
    gt = np.zeros((2, 3, 2), np.float32)
    pred = torch.tensor([[[3.0, 4.0], [30.0, 0.0], [0.0, 0.0]]] * 2, dtype=torch.bfloat16)
    metric = EasyCVMetric()
    metric.add({'preds': pred}, {'joints': torch.from_numpy(gt), 'visible': torch.tensor([[1, 1, 0]] * 2),
                                 'bbox': torch.tensor([[0.0, 0.0, 50.0, 100.0]] * 2), 'index': torch.tensor([0, 1])})
    m = metric.evaluate()
    assert m['PCK'] == pytest.approx(0.5) and m['EPE'] == pytest.approx(17.5)
    assert m['AUC'] == pytest.approx((16 / 20) * 0.5)


def test_keypoint_metrics_takes_one_hand_and_checks_shapes():
    """One hand [K, 2] scores as [1, K, 2]; mismatched or (x, y, score) shapes are refused by name."""
    from modelscope_handkp.metrics import keypoint_metrics
    gt = np.stack([np.arange(21, dtype=np.float32) * 5, np.full(21, 50, np.float32)], axis=1)
    pred = gt + np.float32(3.0)  # error 3*sqrt(2) px everywhere
    one = keypoint_metrics(pred, gt, np.ones(21), [0, 0, 100, 60])
    batch = keypoint_metrics(pred[None], gt[None], np.ones((1, 21)), [[0, 0, 100, 60]])
    assert one == batch
    assert abs(one['EPE'] - 3 * np.sqrt(2)) < 1e-5 and one['PCK'] == 1.0 and abs(one['AUC'] - 0.85) < 1e-9
    with pytest.raises(ValueError, match=r'pred and gt must both be \[N, K, 2\].*\(1, 21, 3\)'):
        keypoint_metrics(np.concatenate([pred, np.ones((21, 1), np.float32)], 1)[None], gt[None], np.ones((1, 21)),
                         [[0, 0, 100, 60]])
