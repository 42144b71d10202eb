"""``EasyCVMetric`` for ModelScope's METRICS registry, with ``KeyPointEvaluator`` settings.

The published configuration's ``evaluation.metrics`` is::

    {"type": "EasyCVMetric",
     "evaluators": [{"type": "KeyPointEvaluator", "metric_names": ["PCK", "AUC", "EPE", "NME"],
                     "pck_thr": 0.2, "auc_nor": 30}]}

:class:`EasyCVMetric` collects predictions (image pixels) and the ground truth of each batch
and computes the requested numbers with :func:`modelscope_handkp.metrics.keypoint_metrics`
(EasyCV's exact definitions).  Registered in ModelScope's ``METRICS`` by
:mod:`modelscope_handkp.trainer`.  Samples are identified by their dataset ``index``, so the
duplicates a distributed sampler adds to even out the shards are counted once.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from modelscope.metrics.base import Metric

from .metrics import keypoint_metrics
from .transforms import to_numpy

SUPPORTED_EVALUATORS = ('KeyPointEvaluator', )
SUPPORTED_METRIC_NAMES = ('PCK', 'AUC', 'EPE', 'NME')




class KeyPointEvaluatorSettings:
    """The settings of one EasyCV ``KeyPointEvaluator`` entry."""

    def __init__(self, metric_names=('PCK', ), pck_thr: float = 0.2, auc_nor: float = 30.0, dataset_name=None,
                 **kwargs):
        kwargs.pop('type', None)
        auc_nor = kwargs.pop('auc_norm', auc_nor)
        kwargs.pop('pckh_thr', None)  # only used for PCKh (body), which hands do not report
        if kwargs:
            raise ValueError(f'KeyPointEvaluator got unknown settings {sorted(kwargs)}; supported: metric_names, '
                             'pck_thr, auc_nor.')
        names = [metric_names] if isinstance(metric_names, str) else list(metric_names)
        bad = [n for n in names if n not in SUPPORTED_METRIC_NAMES]
        if bad:
            raise ValueError(f'KeyPointEvaluator metric_names {bad} are not supported for hands; choose from '
                             f'{list(SUPPORTED_METRIC_NAMES)}.')
        self.metric_names = names
        self.pck_thr = float(pck_thr)
        self.auc_nor = float(auc_nor)
        self.dataset_name = dataset_name

    def __call__(self, pred, gt, visible, boxes) -> dict:
        values = keypoint_metrics(pred, gt, visible, boxes, pck_thr=self.pck_thr, auc_norm=self.auc_nor)
        return {k: values[k] for k in self.metric_names}


class EasyCVMetric(Metric):
    """Keypoint metrics over an evaluation run.

    ``add(outputs, inputs)``: ``outputs['preds']`` [B, K, 2] (or ``outputs['keypoints']``
    [B, K, >=2]) in image pixels; ``inputs`` the evaluation batch with ``joints`` [B, K, 2],
    ``visible`` [B, K], ``bbox`` [B, 4] (x, y, w, h) and ``index`` [B].
    """

    def __init__(self, evaluators=None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if evaluators is None:
            evaluators = [dict(type='KeyPointEvaluator', metric_names=list(SUPPORTED_METRIC_NAMES))]
        if isinstance(evaluators, Mapping):
            evaluators = [evaluators]
        self.evaluators = []
        for ev in evaluators:
            t = ev.get('type', 'KeyPointEvaluator') if isinstance(ev, Mapping) else None
            if t not in SUPPORTED_EVALUATORS:
                raise ValueError(f'EasyCVMetric evaluator {ev!r} is not supported; supported types: '
                                 f'{list(SUPPORTED_EVALUATORS)}.')
            self.evaluators.append(KeyPointEvaluatorSettings(**dict(ev)))
        seen: dict = {}
        for i, ev in enumerate(self.evaluators):  # one result per name: a second PCK would replace the first
            for name in ev.metric_names:
                if name in seen:
                    raise ValueError(f'EasyCVMetric evaluators {seen[name]} and {i} both compute {name!r}, and one '
                                     'would replace the other in the results; give each metric name to one '
                                     'evaluator (e.g. a second PCK threshold needs its own evaluation run).')
                seen[name] = i
        self.reset()

    def reset(self):
        self.preds, self.gts, self.visible, self.boxes, self.indices = [], [], [], [], []

    def __getstate__(self):  # gathered across processes in distributed evaluation: leave the trainer behind
        state = dict(self.__dict__)
        state.pop('trainer', None)
        return state

    def add(self, outputs, inputs):
        if 'preds' in outputs:  # [B, K, 2], or EasyCV's [B, K, 3] (x, y, score)
            pred = to_numpy(outputs['preds'])
            pred = pred[..., :2] if pred.ndim == 3 else pred
        elif 'keypoints' in outputs:
            pred = to_numpy(outputs['keypoints'])[..., :2]
        else:
            raise KeyError(f"EasyCVMetric needs 'preds' (or 'keypoints') in the model outputs, got {sorted(outputs)}")
        missing = [k for k in ('joints', 'visible', 'bbox') if k not in inputs]
        if missing:
            raise KeyError(f'EasyCVMetric needs {missing} in the evaluation batch; use an evaluation dataset in '
                           'test mode (modelscope_handkp.datasets.CocoWholeBodyHandDataset(test_mode=True)).')
        n = len(pred)
        self.preds.append(pred.astype(np.float32).reshape(n, -1, 2))
        self.gts.append(to_numpy(inputs['joints']).astype(np.float32).reshape(n, -1, 2))
        self.visible.append(to_numpy(inputs['visible']).astype(np.float32).reshape(n, -1))
        self.boxes.append(to_numpy(inputs['bbox']).astype(np.float32).reshape(n, 4))
        idx = to_numpy(inputs['index']).astype(np.int64).reshape(n) if 'index' in inputs else np.full(n, -1, np.int64)
        self.indices.append(idx)

    def arrays(self):
        """(pred, gt, visible, boxes, indices) of all unique samples, in dataset order."""
        if not self.preds:
            z = np.zeros((0, 21, 2), np.float32)
            return z, z, np.zeros((0, 21), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        pred, gt, vis, box, idx = (np.concatenate(x) for x in (self.preds, self.gts, self.visible, self.boxes,
                                                              self.indices))
        if np.all(idx >= 0):
            uniq, first, inverse = np.unique(idx, return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            # a repeated index must be the same sample (what a distributed sampler adds); other hands with the
            # same index (datasets numbered from 0 each, e.g. a torch ConcatDataset) would be dropped silently
            same = (np.all((gt == gt[first][inverse]) | (np.isnan(gt) & np.isnan(gt[first][inverse])), axis=(1, 2))
                    & np.all(vis == vis[first][inverse], axis=1) & np.all(box == box[first][inverse], axis=1))
            if not same.all():
                bad = int(idx[~same][0])
                raise ValueError(f'evaluation samples with different ground truth share the index {bad}: each sample '
                                 "of the evaluation set needs its own 'index' (a torch ConcatDataset numbers each "
                                 'part from 0: pass the datasets to build_trainer as a list, '
                                 'eval_dataset=[a, b], which numbers them through).')
            idx = uniq
            pred, gt, vis, box = pred[first], gt[first], vis[first], box[first]
        return pred, gt, vis, box, idx

    def evaluate(self):
        pred, gt, vis, box, _ = self.arrays()
        if not np.any(vis > 0):  # every metric is then 0.0: an EPE of 0 px would read as a perfect model
            from modelscope.utils.logger import get_logger
            get_logger().warning(f'the {len(vis)} evaluation hands have no visible keypoint (all visibility flags 0): '
                                 'PCK, AUC, EPE and NME are 0.0 and say nothing about the model; check the '
                                 "annotations' visibility flags (every third number of the *hand_kpts).")
        out = {}
        for ev in self.evaluators:
            out.update(ev(pred, gt, vis, box))
        return out

    def merge(self, other: 'EasyCVMetric'):
        self.preds += other.preds
        self.gts += other.gts
        self.visible += other.visible
        self.boxes += other.boxes
        self.indices += other.indices
