"""Training / evaluation defects found by a review (each test failed before its fix)."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Dataset

import modelscope_handkp  # noqa: F401  (registers the trainer, hooks, metric)
from modelscope_handkp.datasets import CocoWholeBodyHandDataset
from modelscope_handkp.evaluation import EasyCVMetric
from modelscope_handkp.hooks import HandCheckpointHook
from test_trainer import build, make_tiny_model_dir, open_hands_subset

K = 21


@pytest.fixture(scope='module')
def tiny_dir(reference_dir, tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp('tiny') / 'model', reference_dir)


@pytest.fixture(scope='module')
def val_parts(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('data')
    return (open_hands_subset(data_dir, tmp / 'a', 'val', 4, 0), open_hands_subset(data_dir, tmp / 'b', 'val', 4, 4))


def test_a_torch_concat_dataset_is_evaluated_whole(tiny_dir, val_parts, tmp_path):
    """Each part of a torch ConcatDataset numbers its samples from 0; the metric counts each index once (for the
    repeats of a distributed sampler), so only the first part's 4 hands were scored, silently."""
    kw = dict(data_cfg={'image_size': (64, 64)}, test_mode=True)
    parts = [CocoWholeBodyHandDataset(p['ann_file'], p['img_prefix'], **kw) for p in val_parts]
    seen = []
    t = build(tiny_dir, tmp_path / 'c', None, ConcatDataset(parts))
    values = t.evaluate(saving_fn=lambda inputs, outputs: seen.extend(int(i) for i in inputs['index']))
    assert sorted(seen) == list(range(8))
    as_list = build(tiny_dir, tmp_path / 'l', None, list(val_parts)).evaluate()  # same seed: same weights
    assert values == as_list
    first_only = build(tiny_dir, tmp_path / 'f', None, val_parts[0]).evaluate()
    assert values['EPE'] != first_only['EPE']


def test_a_concat_dataset_subclass_is_kept(tiny_dir, val_parts, tmp_path):
    """The ConcatDataset fix replaced any ConcatDataset, a user's subclass (its own __getitem__) included, by a plain
    one of its parts."""
    class Tagged(ConcatDataset):
        def __getitem__(self, idx):
            item = dict(super().__getitem__(idx))
            item['index'] = idx  # numbers its samples itself
            return item

    kw = dict(data_cfg={'image_size': (64, 64)}, test_mode=True)
    ds = Tagged([CocoWholeBodyHandDataset(p['ann_file'], p['img_prefix'], **kw) for p in val_parts])
    t = build(tiny_dir, tmp_path / 't', None, ds)
    assert t.eval_dataset is ds


def test_metric_refuses_different_samples_with_one_index():
    gt = np.arange(2 * K * 2, dtype=np.float32).reshape(2, K, 2)
    batch = {'joints': torch.from_numpy(gt), 'visible': torch.ones(2, K), 'bbox': torch.tensor([[0., 0, 50, 50]] * 2),
             'index': torch.tensor([0, 1])}
    m = EasyCVMetric()
    m.add({'preds': torch.from_numpy(gt + 1)}, batch)
    m.add({'preds': torch.from_numpy(gt + 1)}, batch)  # a sampler's repeats: counted once
    assert len(m.arrays()[0]) == 2 and m.evaluate()['EPE'] == pytest.approx(np.sqrt(2), rel=1e-6)
    other = dict(batch, joints=torch.from_numpy(gt + 5))
    m.add({'preds': torch.from_numpy(gt + 1)}, other)
    with pytest.raises(ValueError, match="different ground truth share the index 0: each sample of the evaluation"):
        m.evaluate()


def test_metric_takes_easycv_preds_with_scores():
    """EasyCV's top-down models return preds [B, K, 3] (x, y, score); they were reshaped into garbage pairs."""
    gt = np.random.default_rng(0).uniform(0, 50, (3, K, 2)).astype(np.float32)
    batch = {'joints': torch.from_numpy(gt), 'visible': torch.ones(3, K), 'bbox': torch.tensor([[0., 0, 40, 40]] * 3),
             'index': torch.arange(3)}
    pred = gt + np.float32(3.0)
    m2, m3 = EasyCVMetric(), EasyCVMetric()
    m2.add({'preds': pred}, batch)
    m3.add({'preds': np.concatenate([pred, np.full((3, K, 1), 0.9, np.float32)], axis=-1)}, batch)
    assert m3.evaluate() == m2.evaluate()
    assert m3.evaluate()['EPE'] == pytest.approx(3 * np.sqrt(2), rel=1e-5)


def test_a_batch_larger_than_the_training_set_with_drop_last_says_so(tiny_dir, data_dir, tmp_path):
    train = open_hands_subset(data_dir, tmp_path, 'train', 6)
    t = build(tiny_dir, tmp_path / 'w', train, None, {'train.max_epochs': 1, 'train.dataloader.batch_size_per_gpu': 8,
                                                       'train.dataloader.drop_last': True})
    with pytest.raises(ValueError, match=r'no training iteration per epoch: the training set has 6 hands, fewer than '
                                         r'the batch size 8 with train.dataloader.drop_last=true'):
        t.train()


class _Empty(Dataset):
    def __len__(self):
        return 0

    def __getitem__(self, i):
        raise IndexError(i)


def test_an_empty_evaluation_set_is_refused_not_scored_zero(tiny_dir, tmp_path):
    t = build(tiny_dir, tmp_path / 'w', None, _Empty())
    with pytest.raises(ValueError, match=r'the evaluation dataset is empty \(0 hands\)'):
        t.evaluate()


def test_resume_with_another_best_metric_starts_a_new_best():
    """The best PCK (0.8) of the run was kept as the best EPE after a resume with metric_key EPE: no EPE (in px)
    is below 0.8, so output_best/ was never updated again."""
    before = HandCheckpointHook(metric_key='PCK', rule='max')
    before.best_metric, before.best_epoch = 0.8, 3
    after = HandCheckpointHook(metric_key='EPE', rule='min')
    after.load_state_dict(json.loads(json.dumps(before.state_dict())))
    assert after.best_metric is None and after._better(12.5)
    same = HandCheckpointHook(metric_key='PCK', rule='max')
    same.load_state_dict(before.state_dict())
    assert same.best_metric == 0.8 and same.best_epoch == 3 and not same._better(0.7)
    legacy = HandCheckpointHook()  # a training state written before the metric was saved with it
    legacy.load_state_dict({'best_metric': 0.6, 'best_epoch': 2})
    assert legacy.best_metric == 0.6


def test_a_best_metric_the_evaluation_does_not_compute_is_refused_before_training(tiny_dir, val_parts, data_dir,
                                                                                   tmp_path):
    """It failed at the first evaluation, after a whole epoch (or evaluation interval) of training."""
    train = open_hands_subset(data_dir, tmp_path, 'train', 4)
    metrics = {'type': 'EasyCVMetric', 'evaluators': [{'type': 'KeyPointEvaluator', 'metric_names': ['AUC', 'EPE']}]}
    t = build(tiny_dir, tmp_path / 'w', train, val_parts[0], {'train.max_epochs': 1, 'evaluation.metrics': metrics})
    before = {k: v.clone() for k, v in t.hand_net.state_dict().items()}
    with pytest.raises(ValueError, match=r"best checkpoint is chosen by 'PCK' .*which the evaluation does not compute "
                                         r"\(it computes \['AUC', 'EPE'\]\)"):
        t.train()
    assert t.iter == 0 and all(torch.equal(v, t.hand_net.state_dict()[k]) for k, v in before.items())
    ok = build(tiny_dir, tmp_path / 'ok', train, val_parts[0],
               {'train.max_epochs': 1, 'evaluation.metrics': metrics,
                'train.checkpoint.best': {'metric_key': 'EPE', 'rule': 'min'}})
    ok.train()
    assert json.loads((tmp_path / 'ok' / 'best.json').read_text())['metric'] == 'EPE'


def test_an_evaluation_without_visible_keypoints_warns_that_its_zeros_mean_nothing(caplog):
    import logging
    caplog.set_level(logging.WARNING, logger='modelscope')
    gt = np.full((2, K, 2), 20.0, np.float32)
    batch = {'joints': torch.from_numpy(gt), 'visible': torch.zeros(2, K), 'bbox': torch.tensor([[0., 0, 40, 40]] * 2),
             'index': torch.arange(2)}
    m = EasyCVMetric()
    m.add({'preds': torch.from_numpy(gt + 30)}, batch)
    assert m.evaluate() == {'PCK': 0.0, 'AUC': 0.0, 'EPE': 0.0, 'NME': 0.0}
    assert 'the 2 evaluation hands have no visible keypoint' in caplog.text
    caplog.clear()
    m.add({'preds': torch.from_numpy(gt + 30)}, dict(batch, visible=torch.ones(2, K), index=torch.arange(2, 4)))
    assert m.evaluate()['EPE'] == pytest.approx(30 * np.sqrt(2), rel=1e-6) and 'no visible' not in caplog.text


def test_two_evaluators_computing_one_metric_are_refused():
    """Two KeyPointEvaluators with PCK (e.g. thresholds 0.1 and 0.2) silently kept only the last PCK."""
    with pytest.raises(ValueError, match=r"evaluators 0 and 1 both compute 'PCK'"):
        EasyCVMetric(evaluators=[{'type': 'KeyPointEvaluator', 'metric_names': ['PCK'], 'pck_thr': 0.1},
                                 {'type': 'KeyPointEvaluator', 'metric_names': ['PCK', 'EPE'], 'pck_thr': 0.2}])
    m = EasyCVMetric(evaluators=[{'type': 'KeyPointEvaluator', 'metric_names': ['PCK'], 'pck_thr': 0.1},
                                 {'type': 'KeyPointEvaluator', 'metric_names': ['EPE']}])
    assert [ev.metric_names for ev in m.evaluators] == [['PCK'], ['EPE']]


def test_the_iterations_after_the_last_full_logging_interval_get_their_own_record(tiny_dir, data_dir, tmp_path):
    """With 4 iterations per epoch and interval 3, iteration 4 of each epoch was never logged (ModelScope's
    ignore_last); its record now holds the loss of that iteration alone, not a mean that repeats 2 and 3."""
    train = open_hands_subset(data_dir, tmp_path / 'data', 'train', 16)
    logs = {}
    for interval in (1, 3):
        wd = tmp_path / f'i{interval}'
        build(tiny_dir, wd, train, None, {'train.max_epochs': 2, 'train.logging.interval': interval}).train()
        logs[interval] = [r for r in map(json.loads, (wd / 'train_log.jsonl').read_text().splitlines())
                          if r['mode'] == 'train']
    one = {r['total_iter']: r['loss'] for r in logs[1]}
    assert sorted(one) == list(range(1, 9))
    assert [r['total_iter'] for r in logs[3]] == [3, 4, 7, 8]
    got = {r['total_iter']: r['loss'] for r in logs[3]}
    for end, first in ((3, 1), (4, 4), (7, 5), (8, 8)):
        assert got[end] == pytest.approx(np.mean([one[i] for i in range(first, end + 1)]), rel=1e-4), end


def test_the_records_after_the_last_full_interval_do_not_inflate_the_printed_eta(tiny_dir, data_dir, tmp_path):
    """ModelScope's text ETA adds `time * interval` per record: the record of the iterations after an epoch's last
    full interval (1 of 4 here, interval 3) counted 3 iterations, and the printed ETA was about 1.5x too long."""
    from modelscope_handkp.hooks import HandTextLoggerHook
    train = open_hands_subset(data_dir, tmp_path / 'data', 'train', 16)
    t = build(tiny_dir, tmp_path / 'w', train, None, {'train.max_epochs': 2, 'train.logging.interval': 3})
    t.train()
    hook = next(h for h in t.hooks if isinstance(h, HandTextLoggerHook))
    recs = [r for r in map(json.loads, (tmp_path / 'w' / 'train_log.jsonl').read_text().splitlines())
            if r['mode'] == 'train']
    iters = {3: 3, 4: 1, 7: 3, 8: 1}
    assert [r['total_iter'] for r in recs] == list(iters)
    assert hook.time_sec_tot == pytest.approx(sum(r['iter_time'] * iters[r['total_iter']] for r in recs), rel=1e-3)
