"""build_trainer('easycv', ...): training, evaluation, checkpoints, resume, datasets (issue 5).

Tiny configurations (a narrow HRNet at 64 x 64 px) and 16 open_hands images keep the CPU time low.
"""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

import modelscope_handkp  # noqa: F401  (registers the trainer, hooks, metric)
from modelscope_handkp.checkpoint import load_checkpoint
from modelscope_handkp.codec import decode_heatmaps
from modelscope_handkp.datasets import DatasetError
from modelscope_handkp.evaluation import EasyCVMetric
from modelscope_handkp.hooks import EasyCVLrScheduler
from modelscope_handkp.metrics import keypoint_metrics
from modelscope_handkp import model_dir as md
from modelscope_handkp.model_dir import decode_jsonplus, handkp_configuration
from modelscope_handkp.models import build_hand_model, hrnet_extra, hrnet_model_cfg
from modelscope_handkp.transforms import box_to_center_scale, crop_to_tensor

K = 21
BASE = {'train.dataloader.batch_size_per_gpu': 4, 'train.dataloader.workers_per_gpu': 0,
        'evaluation.dataloader.batch_size_per_gpu': 8, 'evaluation.dataloader.workers_per_gpu': 0,
        'train.logging.interval': 1}


# ----------------------------------------------------------------------------- helpers (also used by test_ddp)
def make_tiny_model_dir(dst, reference_dir, size=64, width=8):
    """A configuration-only model directory (this plugin's format) of a narrow HRNet: the published
    configuration's train/evaluation/dataset sections with a tiny network."""
    base = decode_jsonplus(json.loads((reference_dir / 'official_like_model' / 'configuration.json').read_text()))
    mc = hrnet_model_cfg(hrnet_extra(width, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1), image_size=(size, size))
    cfg = handkp_configuration(mc, {'type': 'none'}, base=base)
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, 'configuration.json'), 'w') as f:
        json.dump(cfg, f, indent=1)
    return str(dst)


def subset_annotations(src, dst, n, start=0):
    """The first ``n`` annotations (and their images) of a COCO-WholeBody file."""
    d = json.loads(open(src).read())
    d['annotations'] = d['annotations'][start:start + n]
    ids = {a['image_id'] for a in d['annotations']}
    d['images'] = [im for im in d['images'] if im['id'] in ids]
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, 'w') as f:
        json.dump(d, f)
    return str(dst)


def open_hands_subset(data_dir, tmp, split='train', n=16, start=0):
    """{'ann_file', 'img_prefix'} of ``n`` open_hands images."""
    root = data_dir / 'open_hands'
    ann = subset_annotations(root / 'annotations' / f'{split}.json', tmp / f'{split}_{n}.json', n, start)
    return {'ann_file': ann, 'img_prefix': str(root / 'images')}


def build(model, work_dir, train=None, evald=None, cfg_options=None, **kw):
    from modelscope.metainfo import Trainers
    from modelscope.trainers import build_trainer
    opts = dict(BASE)
    opts.update(cfg_options or {})
    return build_trainer(Trainers.easycv, default_args=dict(model=model, train_dataset=train, eval_dataset=evald,
                                                            work_dir=str(work_dir), cfg_options=opts,
                                                            device='cpu', **kw))


def state(trainer):
    return {k: v.detach().clone() for k, v in trainer.hand_net.state_dict().items()}


@pytest.fixture(scope='module')
def tiny_dir(reference_dir, tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp('tiny') / 'model', reference_dir)


@pytest.fixture(scope='module')
def train16(data_dir, tmp_path_factory):
    return open_hands_subset(data_dir, tmp_path_factory.mktemp('data'), 'train', 16)


@pytest.fixture(scope='module')
def val8(data_dir, tmp_path_factory):
    return open_hands_subset(data_dir, tmp_path_factory.mktemp('data'), 'val', 8)


# ----------------------------------------------------------------------------- LR schedule (no data)
def test_easycv_step_schedule_with_linear_warmup():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sch = EasyCVLrScheduler(opt, iters_per_epoch=10, policy='step', step=[170, 200], warmup='linear',
                            warmup_iters=500, warmup_ratio=0.001)
    lrs = [opt.param_groups[0]['lr']]
    for _ in range(2100):
        opt.step()
        sch.step()
        lrs.append(opt.param_groups[0]['lr'])
    assert lrs[0] == pytest.approx(5e-4 * 0.001)
    assert lrs[250] == pytest.approx(5e-4 * (1 - 0.5 * 0.999))
    assert lrs[499] == pytest.approx(5e-4 * (1 - (1 / 500) * 0.999))
    assert lrs[500] == pytest.approx(5e-4) and lrs[1699] == pytest.approx(5e-4)  # epoch 169
    assert lrs[1700] == pytest.approx(5e-5) and lrs[1999] == pytest.approx(5e-5)  # epochs 170-199
    assert lrs[2000] == pytest.approx(5e-6)  # epoch 200
    assert all(b >= a for a, b in zip(lrs[:500], lrs[1:501]))  # warmup rises monotonically
    # the schedule resumes from its state dict
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sch2 = EasyCVLrScheduler(opt2, iters_per_epoch=10, policy='step', step=[170, 200], warmup='linear',
                             warmup_iters=500, warmup_ratio=0.001)
    sch2.load_state_dict(sch.state_dict())
    assert sch2.lr_at(5e-4, 1750) == pytest.approx(5e-5) and sch2.last_epoch == 2100
    with pytest.raises(ValueError, match="policy 'step' needs"):
        EasyCVLrScheduler(opt, iters_per_epoch=10, policy='step')


def test_easycv_metric_matches_reference_and_dedupes(metrics_ref):
    ref = metrics_ref
    m = EasyCVMetric(evaluators=[dict(type='KeyPointEvaluator', metric_names=['PCK', 'AUC', 'EPE', 'NME'],
                                      pck_thr=0.2, auc_nor=30)])
    n = len(ref['gt'])
    idx = np.arange(n)
    half = n // 2
    other = EasyCVMetric()
    for lo, hi, target in ((0, half, m), (half, n, other), (0, 5, other)):  # rows 0-4 twice (sampler padding)
        target.add({'preds': torch.from_numpy(ref['pred'][lo:hi])},
                   {'joints': torch.from_numpy(ref['gt'][lo:hi]), 'visible': torch.from_numpy(ref['visible'][lo:hi]),
                    'bbox': torch.from_numpy(ref['bbox_xywh'][lo:hi]), 'index': torch.from_numpy(idx[lo:hi])})
    m.merge(other)
    out = m.evaluate()
    assert set(out) == {'PCK', 'AUC', 'EPE', 'NME'}
    for k in out:
        assert out[k] == pytest.approx(float(ref[k]), rel=1e-6, abs=1e-7), k
    with pytest.raises(ValueError, match='PCKh'):
        EasyCVMetric(evaluators=[dict(type='KeyPointEvaluator', metric_names=['PCKh'])])


# ----------------------------------------------------------------------------- training
def test_one_epoch_lowers_loss_and_writes_a_loadable_model_dir(tiny_dir, train16, val8, tmp_path):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    t = build(tiny_dir, tmp_path / 'wd', train16, val8,
              {'train.max_epochs': 1, 'train.optimizer.lr': 2e-3, 'train.lr_scheduler.warmup': None,
               'evaluation.period.interval': 1})
    assert len(t.train_dataset) == 16 and len(t.eval_dataset) == 8
    batch = torch.utils.data.default_collate([t.train_dataset[i] for i in range(16)])

    def fixed_loss():
        import copy
        net = copy.deepcopy(t.hand_net).train()  # batch statistics, no side effects on the trainer's model
        with torch.no_grad():
            return float(net.loss(net(batch['img']), batch['target'], batch['target_weight']))

    before = fixed_loss()
    t.train()
    after = fixed_loss()
    assert after < 0.5 * before, (before, after)

    out = tmp_path / 'wd' / 'output'
    assert sorted(os.listdir(out)) == ['configuration.json', 'pytorch_model.pt']
    train_cfg = json.loads((out / 'configuration.json').read_text())['train']
    assert train_cfg['max_epochs'] == 1 and str(tmp_path) not in json.dumps(train_cfg)  # no folder of this run
    assert not [f for f in os.listdir(tmp_path / 'wd') if f.startswith('.') or '.tmp' in f]  # no half-written files
    saved = torch.load(out / 'pytorch_model.pt', weights_only=True)
    assert saved['meta']['epoch'] == 1 and set(saved['meta']['metrics']) == {'PCK', 'AUC', 'EPE', 'NME'}
    for k, v in state(t).items():
        assert torch.equal(saved['state_dict'][k], v), k
    assert (tmp_path / 'wd' / 'output_best' / 'pytorch_model.pt').is_file()
    best = json.loads((tmp_path / 'wd' / 'best.json').read_text())
    assert best['metric'] == 'PCK' and best['epoch'] == 1 and best['value'] == pytest.approx(t.metric_values['PCK'])

    # logs: JSON lines with loss, lr, img/s, ETA, and the evaluation record
    records = [json.loads(line) for line in (tmp_path / 'wd' / 'train_log.jsonl').read_text().splitlines()]
    train_recs = [r for r in records if r['mode'] == 'train']
    assert len(train_recs) == 4 and all({'loss', 'lr', 'img_per_s', 'eta_s'} <= set(r) for r in train_recs)
    assert train_recs[0]['lr'] == pytest.approx(2e-3)
    assert [r for r in records if r['mode'] == 'eval'][0]['evaluation/PCK'] == pytest.approx(
        t.metric_values['PCK'], abs=1e-5)

    # the model directory is what pipeline() loads; same weights, same keypoints as the trainer's network
    p = pipeline(Tasks.hand_2d_keypoints, model=str(out))
    img = t.eval_dataset.records.image_files[0]
    box = t.eval_dataset.records.boxes[0]
    res = p(img, boxes=[[box[0], box[1], box[0] + box[2], box[1] + box[3]]])
    assert res['keypoints'].shape == (1, K, 3) and np.isfinite(res['keypoints']).all()
    loaded = p.model.hand_model.state_dict()
    assert loaded.keys() == state(t).keys() and all(torch.equal(loaded[k], v) for k, v in state(t).items())
    assert tuple(p.model.hand_model.input_size) == (64, 64)

    # a finished run is not overwritten by accident
    t2 = build(tiny_dir, tmp_path / 'wd', train16, None, {'train.max_epochs': 1})
    with pytest.raises(FileExistsError, match='resume=True.*overwrite=True'):
        t2.train()


def test_evaluate_official_like_model_dir_equals_keypoint_metrics(reference_dir, hrnet_synth_state_dict,
                                                                   ssdlite_synth_state_dict, data_dir, tmp_path):
    model_dir = tmp_path / 'official'
    shutil.copytree(reference_dir / 'official_like_model', model_dir)
    for d in (model_dir, model_dir / 'detection'):
        os.chmod(d, 0o755)
    torch.save({'state_dict': hrnet_synth_state_dict, 'meta': {}}, model_dir / 'pytorch_model.pt')
    torch.save({'state_dict': ssdlite_synth_state_dict, 'meta': {}}, model_dir / 'detection' / 'detection_model.pth')
    val = open_hands_subset(data_dir, tmp_path, 'val', 6, start=40)
    t = build(str(model_dir), tmp_path / 'wd', None, val)
    metrics = t.evaluate()
    assert set(metrics) == {'PCK', 'AUC', 'EPE', 'NME'}

    # the same predictions computed independently: GT box -> centre/scale, RGB crop, flip test, DARK
    anns = json.loads(open(val['ann_file']).read())
    names = {im['id']: im['file_name'] for im in anns['images']}
    net = load_checkpoint(build_hand_model(), hrnet_synth_state_dict).eval()
    crops, centers, scales, gts, vis, boxes = [], [], [], [], [], []
    for a in anns['annotations']:
        for side in ('left', 'right'):
            kp = np.asarray(a[f'{side}hand_kpts'], np.float32).reshape(K, 3)
            if not a[f'{side}hand_valid'] or kp.max() <= 0:
                continue
            c, s = box_to_center_scale(a[f'{side}hand_box'], 'xywh', (256, 256), 1.25)
            rgb = cv2.cvtColor(cv2.imread(os.path.join(val['img_prefix'], names[a['image_id']])), cv2.COLOR_BGR2RGB)
            crops.append(crop_to_tensor(rgb, c[None], s[None], (256, 256)))
            centers.append(c)
            scales.append(s)
            gts.append(kp[:, :2])
            vis.append(np.minimum(1, kp[:, 2]))
            boxes.append(a[f'{side}hand_box'])
    with torch.no_grad():
        heat = net.forward_heatmaps(torch.cat(crops), flip_test=True)
    pred, _ = decode_heatmaps(heat, np.stack(centers), np.stack(scales), 'unbiased', 11)
    ref = keypoint_metrics(pred, np.stack(gts), np.stack(vis), np.asarray(boxes, np.float32), pck_thr=0.2,
                           auc_norm=30)
    assert len(crops) == len(t.eval_dataset) == 6
    for k in ref:
        assert metrics[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), (k, metrics, ref)
    assert t.cfg.train.lr_scheduler.policy == 'step' and list(t.cfg.train.lr_scheduler.step) == [170, 200]
    assert t.cfg.train.max_epochs == 210

    # a model directory written by this trainer keeps the published detector and loads in pipeline()
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    out = t.export_model_dir(str(tmp_path / 'exported'), {'epoch': 0})
    cfg = json.loads(open(os.path.join(out, 'configuration.json')).read())
    assert 'plugins' not in cfg and cfg['model']['type'] == 'handkp-topdown-hrnet'
    assert cfg['detector']['type'] == 'ssdlite' and cfg['detector']['score_threshold'] == 0.5
    assert open(os.path.join(out, cfg['detector']['checkpoint']), 'rb').read() == open(
        model_dir / 'detection' / 'detection_model.pth', 'rb').read()
    p = pipeline(Tasks.hand_2d_keypoints, model=out)
    for k, v in p.model.hand_model.state_dict().items():
        assert torch.equal(v, hrnet_synth_state_dict[k]), k


def md_log(work_dir):
    return [json.loads(line) for line in (work_dir / 'train_log.jsonl').read_text().splitlines()]


class _Crash(Exception):
    pass


def _crash_hook(epoch, inner_iter):
    from modelscope.trainers.hooks.hook import Hook

    class CrashHook(Hook):
        def before_train_iter(self, trainer):
            if trainer.epoch == epoch and trainer.inner_iter == inner_iter:
                raise _Crash(f'injected crash at epoch {epoch} iteration {inner_iter}')

    return CrashHook()


def test_resume_after_crash_gives_the_uninterrupted_result(tiny_dir, train16, val8, tmp_path):
    opts = {'train.max_epochs': 2, 'evaluation.period.interval': 1, 'train.checkpoint.period.interval': 1}
    a = build(tiny_dir, tmp_path / 'a', train16, val8, opts)
    a.train()
    final_a = state(a)
    b = build(tiny_dir, tmp_path / 'b', train16, val8, opts, callbacks=[_crash_hook(1, 2)])
    with pytest.raises(_Crash):
        b.train()
    assert b.epoch == 1 and b.inner_iter == 2
    c = build(tiny_dir, tmp_path / 'b', train16, val8, opts, resume=True)
    c.train()
    assert c.epoch == 2 and c.iter == a.iter == 8
    final_c = state(c)
    for k in final_a:
        assert torch.equal(final_a[k], final_c[k]), k
    assert c.optimizer.param_groups[0]['lr'] == a.optimizer.param_groups[0]['lr']
    ka = a.optimizer.state_dict()['state']
    kc = c.optimizer.state_dict()['state']
    assert all(torch.equal(ka[i]['exp_avg'], kc[i]['exp_avg']) for i in ka)
    assert c.metric_values == a.metric_values
    # the resumed run's log is the uninterrupted run's: the crashed epoch's records are not repeated, and
    # each record's lr is the rate its iteration was trained with (warmup: it changes every iteration)
    keys = ('mode', 'epoch', 'iter', 'lr', 'loss', 'evaluation/PCK')
    log_a, log_c = (md_log(tmp_path / w) for w in ('a', 'b'))
    assert [tuple(r.get(k) for k in keys) for r in log_c] == [tuple(r.get(k) for k in keys) for r in log_a]
    sched = EasyCVLrScheduler(torch.optim.SGD([torch.zeros(1)], lr=5e-4), iters_per_epoch=4, step=[170, 200],
                              max_epochs=210, warmup='linear', warmup_iters=500, warmup_ratio=0.001)
    train_a = [r for r in log_a if r['mode'] == 'train']
    assert len(train_a) == 8
    for n, r in enumerate(train_a):
        assert r['lr'] == pytest.approx(sched.lr_at(5e-4, n), rel=1e-9), n
        assert r['total_iter'] == n + 1
    assert [(r['epoch'], r['total_iter']) for r in log_a if r['mode'] == 'eval'] == [(1, 4), (2, 8)]
    assert not [r for r in log_a if r['mode'] == 'eval' and 'lr' in r]
    # 500-iteration linear warmup of the published schedule: lr after 8 iterations
    assert a.optimizer.param_groups[0]['lr'] == pytest.approx(5e-4 * (1 - (1 - 8 / 500) * 0.999))
    # overwrite=True replaces a finished run
    d = build(tiny_dir, tmp_path / 'a', train16, None, {'train.max_epochs': 1}, overwrite=True)
    d.train()
    assert torch.load(tmp_path / 'a' / 'latest.pth', weights_only=True)['epoch'] == 1


def test_resume_with_more_epochs_takes_the_new_schedule(tiny_dir, train16, tmp_path):
    """Continuing a finished run with a longer schedule: counters from the checkpoint, the learning-rate
    schedule (decay steps, max_epochs) from the new configuration."""
    from modelscope.trainers.hooks.hook import Hook
    seen = []

    class Recorder(Hook):  # the rate each iteration trains with
        def before_train_iter(self, trainer):
            seen.append((trainer.iter, trainer.optimizer.param_groups[0]['lr']))

    opts = {'train.max_epochs': 1, 'train.lr_scheduler.warmup': None, 'train.lr_scheduler.step': [5]}
    a = build(tiny_dir, tmp_path / 'w', train16, None, opts)
    a.train()
    assert a.optimizer.param_groups[0]['lr'] == pytest.approx(5e-4)
    more = dict(opts, **{'train.max_epochs': 2, 'train.lr_scheduler.step': [1]})
    b = build(tiny_dir, tmp_path / 'w', train16, None, more, resume=True, callbacks=[Recorder()])
    b.train()
    assert b.epoch == 2 and b.iter == 8
    assert b.lr_scheduler.step_at == [1] and b.lr_scheduler.max_epochs == 2
    assert b.optimizer.param_groups[0]['lr'] == pytest.approx(5e-5)  # decayed at epoch 1 by the new step
    # every iteration of epoch 1 (also the first one after the resume) trains with the new schedule's rate
    assert [(i, round(lr, 12)) for i, lr in seen] == [(4, 5e-5), (5, 5e-5), (6, 5e-5), (7, 5e-5)]
    assert b.lr_scheduler.get_last_lr() == [pytest.approx(5e-5)]


def test_resume_with_another_network_says_so(tiny_dir, train16, reference_dir, tmp_path):
    """Resuming with another --model dumped torch's list of every size mismatch (307 lines for the
    published network); the message now says what happened and what to do, and the run is untouched."""
    wd = tmp_path / 'w'
    build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}).train()
    before = (wd / 'latest.pth').read_bytes()
    wider = make_tiny_model_dir(tmp_path / 'wider', reference_dir, width=16)
    with pytest.raises(RuntimeError, match=r'training state of another network than this model.*weights differ '
                                           r'in name or shape.*resume with the model the run was started with'):
        build(wider, wd, train16, None, {'train.max_epochs': 2}, resume=True).train()
    assert (wd / 'latest.pth').read_bytes() == before


def test_resume_with_another_batch_size_and_hook_list(tiny_dir, train16, val8, tmp_path):
    """Resuming with other iterations per epoch (batch size / number of processes) keeps the epoch-based
    schedule on the trainer's epochs, and a hook list that differs (DDP adds a hook) keeps the best state."""
    from modelscope.trainers.hooks.hook import Hook
    from modelscope.trainers.hooks.priority import Priority
    from modelscope_handkp.hooks import HandCheckpointHook
    seen = []

    class Recorder(Hook):
        PRIORITY = Priority.HIGHEST  # first in the list: every other hook's position shifts

        def before_train_iter(self, trainer):
            ckpt = next(h for h in trainer.hooks if isinstance(h, HandCheckpointHook))
            seen.append((trainer.epoch, trainer.optimizer.param_groups[0]['lr'], ckpt.best_metric))

    opts = {'train.max_epochs': 2, 'train.lr_scheduler.warmup': None, 'train.lr_scheduler.step': [3],
            'evaluation.period.interval': 1}
    a = build(tiny_dir, tmp_path / 'w', train16, val8, opts)
    a.train()
    assert a.iter == 8  # 4 iterations per epoch
    best = json.loads((tmp_path / 'w' / 'best.json').read_text())['value']
    b = build(tiny_dir, tmp_path / 'w', train16, val8,
              dict(opts, **{'train.max_epochs': 4, 'train.dataloader.batch_size_per_gpu': 8}), resume=True,
              callbacks=[Recorder()])
    pos = [type(h).__name__ for h in b.hooks].index('HandCheckpointHook')
    b.train()
    assert pos != [type(h).__name__ for h in a.hooks].index('HandCheckpointHook')
    assert b.iter == 12  # 2 iterations per epoch now
    assert [(e, round(lr, 9)) for e, lr, _ in seen] == [(2, 5e-4), (2, 5e-4), (3, 5e-5), (3, 5e-5)]
    assert seen[0][2] == pytest.approx(best)  # the best metric of the first run was restored


# ----------------------------------------------------------------------------- dataset inputs
def test_dataset_inputs_msdataset_folder_and_data_root(tiny_dir, train16, data_dir, tmp_path):
    from modelscope.msdatasets import MsDataset
    from modelscope.msdatasets.dataset_cls.dataset import ExternalDataset
    from modelscope.utils.config import Config
    folder = tmp_path / 'hub_split'
    os.makedirs(folder / 'annotations')
    shutil.copyfile(train16['ann_file'], folder / 'annotations' / 'train.json')
    os.symlink(data_dir / 'open_hands' / 'images', folder / 'images')
    # a zip dataset split as MsDataset gives it: ExternalDataset with split_config {split: local folder}
    ms = MsDataset(ExternalDataset({'train': str(folder)}, {}))
    with pytest.raises(DatasetError, match='named for the training split'):  # no silent eval on training data
        build(tiny_dir, tmp_path / 'wd', ms, str(folder), {'train.max_epochs': 1})
    t = build(tiny_dir, tmp_path / 'wd', ms, str(folder / 'annotations' / 'train.json'), {'train.max_epochs': 1})
    assert len(t.train_dataset) == 16 and t.train_dataset.img_prefix == str(folder / 'images')
    assert t.eval_dataset.test_mode and len(t.eval_dataset) == 16
    # ${data_root} in the configured data_source is the split folder
    ms = MsDataset(ExternalDataset({'train': str(folder) + '/'}, {}))
    t = build(tiny_dir, tmp_path / 'wd', ms, None, {
        'dataset.train.data_source.ann_file': '${data_root}/annotations/train.json',
        'dataset.train.data_source.img_prefix': '${data_root}/images/'})
    assert len(t.train_dataset) == 16 and t.train_dataset.ann_file == str(folder / 'annotations' / 'train.json')
    # ModelScope's own conversion (MsDataset.to_custom_dataset) builds the registered HandCocoWholeBodyDataset
    cfg = Config(decode_jsonplus(json.loads(open(os.path.join(tiny_dir, 'configuration.json')).read())))
    ms = MsDataset(ExternalDataset({'train': str(folder)}, {}))
    ms.to_custom_dataset(custom_cfg=cfg, mode='train')
    assert type(ms.ds_instance).__name__ == 'HandCocoWholeBodyDataset' and len(ms.ds_instance) == 16
    assert set(ms.ds_instance[0]) == {'img', 'target', 'target_weight'}
    # a local folder loaded with MsDataset.load(folder, split=...)
    local = MsDataset.load(str(folder), split='train')
    t = build(tiny_dir, tmp_path / 'wd', local, None, {})
    assert len(t.train_dataset) == 16
    # without split= MsDataset.load gives a dict of splits: the error says which call to make
    assert len(build(tiny_dir, tmp_path / 'wd', MsDataset.load(str(folder)), None, {}).train_dataset) == 16
    both = tmp_path / 'both_splits'
    shutil.copytree(folder, both, symlinks=True)
    shutil.copyfile(train16['ann_file'], both / 'annotations' / 'val.json')
    splits = MsDataset.load(str(both))
    assert isinstance(splits, dict)
    with pytest.raises(DatasetError, match=r"dict of MsDatasets.*split='train'"):
        build(tiny_dir, tmp_path / 'wd', splits, None, {})
    # errors name the problem
    with pytest.raises(DatasetError, match='does not exist'):
        build(tiny_dir, tmp_path / 'wd', str(tmp_path / 'nowhere'), None)
    t = build(tiny_dir, tmp_path / 'wd', train16, None)
    with pytest.raises(ValueError, match='no evaluation data'):
        t.evaluate()


def test_fine_tuning_the_starter_model_uses_its_training_targets(train16, tmp_path):
    """The bundled model was trained at 128 px with sigma-2 targets on 32 x 32 heatmaps: a trainer built
    on it uses the same (not the 256-px default of sigma 3)."""
    import modelscope_handkp
    t = build(modelscope_handkp.starter_model_dir(), tmp_path / 'ft', train16, None, {'train.max_epochs': 1})
    ds = t.train_dataset
    assert ds.augment.codec.heatmap_size == (32, 32) and ds.augment.codec.sigma == 2.0
    assert ds.augment.rot_factor == 90  # the final stage's augmentation ('clutter' preset of train_small)


def test_best_checkpoint_settings_are_checked(tiny_dir, train16, tmp_path):
    from modelscope_handkp.hooks import HandCheckpointHook
    with pytest.raises(ValueError, match="metric_key 'AP' is not a hand keypoint metric"):
        HandCheckpointHook(metric_key='AP')
    with pytest.raises(ValueError, match="would keep the worst model; use rule 'min'"):
        HandCheckpointHook(metric_key='EPE', rule='max')
    assert HandCheckpointHook(metric_key='EPE', rule='min').rule == 'min'
    with pytest.raises(ValueError, match="'AP' is not a hand keypoint metric"):  # when the trainer is built
        build(tiny_dir, tmp_path / 'ap', train16, None, {'train.max_epochs': 1,
                                                         'train.checkpoint.best': {'metric_key': 'AP'}})


def test_evaluation_never_drops_samples(tiny_dir, val8, tmp_path):
    t = build(tiny_dir, tmp_path / 'e', None, val8)
    loader = t._loader(t.eval_dataset, {'batch_size_per_gpu': 5, 'drop_last': True, 'workers_per_gpu': 0}, False,
                       t.eval_data_collator)
    assert sum(len(b['img']) for b in loader) == len(t.eval_dataset) == 8


def test_overwrite_keeps_files_it_did_not_write(tiny_dir, train16, tmp_path):
    wd = tmp_path / 'w'
    (wd / 'output').mkdir(parents=True)
    (wd / 'output' / 'notes.txt').write_text('mine')
    t = build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}, overwrite=True)
    with pytest.raises(FileExistsError, match=r"holds \['notes.txt'\] that this trainer did not write"):
        t.train()
    assert (wd / 'output' / 'notes.txt').read_text() == 'mine'
    (wd / 'output' / 'notes.txt').unlink()
    torch.save({'state_dict': {}, 'meta': {}}, wd / 'output' / 'pytorch_model.pt')  # someone else's model
    with pytest.raises(FileExistsError, match='not written by this trainer'):
        build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}, overwrite=True).train()
    (wd / 'output' / 'pytorch_model.pt').unlink()
    build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}, overwrite=True).train()  # an empty folder goes
    assert (wd / 'output' / 'pytorch_model.pt').is_file()
    build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}, overwrite=True).train()  # and a previous run


def test_overwrite_keeps_work_dir_files_that_only_have_its_names(tiny_dir, train16, tmp_path):
    """overwrite=True deleted any latest.pth / best.json / train_log.jsonl, and a plain file named output_best,
    by name alone; the files must hold what this trainer writes there."""
    cfg = {'train.max_epochs': 1}
    for name, content in (('latest.pth', None), ('best.json', '{"my": "json"}'), ('train_log.jsonl', 'my log\n'),
                          ('output_best', 'notes')):
        wd = tmp_path / name.replace('.', '_')
        wd.mkdir()
        if content is None:
            torch.save({'state_dict': {'w': torch.zeros(3)}}, wd / name)
        else:
            (wd / name).write_text(content)
        before = (wd / name).read_bytes()
        with pytest.raises(FileExistsError, match=f'would delete .*{name}.*that this trainer did not write'):
            build(tiny_dir, wd, train16, None, cfg, overwrite=True).train()
        assert (wd / name).read_bytes() == before, name
    # without overwrite the message says at once that these are not a run of this trainer
    with pytest.raises(FileExistsError, match=r'holds files with the names this trainer writes, but not written by '
                                              r'it \(output_best: output_best \(a file'):
        build(tiny_dir, tmp_path / 'output_best', train16, None, cfg).train()
    # this trainer's own files (also a log whose last line a killed run cut off) are replaced
    wd = tmp_path / 'own'
    build(tiny_dir, wd, train16, None, cfg).train()
    with open(wd / 'train_log.jsonl', 'a') as f:
        f.write('{"mode": "tra')
    build(tiny_dir, wd, train16, None, cfg, overwrite=True).train()
    assert torch.load(wd / 'latest.pth', weights_only=True)['epoch'] == 1


def test_resume_without_a_checkpoint_keeps_files_it_did_not_write(tiny_dir, train16, tmp_path):
    """resume=True with no latest.pth starts from the beginning: it must not replace another model (or
    the model directory it trains from) in work_dir/output any more than a fresh run may."""
    wd = tmp_path / 'w'
    (wd / 'output').mkdir(parents=True)
    theirs = {'state_dict': {'w': torch.ones(3)}, 'meta': {'trained_by': 'someone else'}}
    torch.save(theirs, wd / 'output' / 'pytorch_model.pt')
    with pytest.raises(FileExistsError, match='not written by this trainer'):
        build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}, resume=True).train()
    assert torch.equal(torch.load(wd / 'output' / 'pytorch_model.pt', weights_only=True)['state_dict']['w'],
                       torch.ones(3))
    assert not (wd / 'latest.pth').exists()
    # a run that crashed before its first checkpoint (only its log is there) starts again
    shutil.rmtree(wd / 'output')
    (wd / 'train_log.jsonl').write_text('')
    t = build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}, resume=True)
    t.train()
    assert t.iter == 4 and torch.load(wd / 'latest.pth', weights_only=True)['epoch'] == 1
    # the model directory it trains from is work_dir/output and there is nothing to resume
    os.remove(wd / 'latest.pth')
    with pytest.raises(FileExistsError, match='which this run would replace'):
        build(str(wd / 'output'), wd, train16, None, {'train.max_epochs': 1}, resume=True).train()
    assert (wd / 'output' / 'pytorch_model.pt').is_file()


def test_start_checkpoint_is_never_deleted_and_is_used_by_a_fresh_resume(tiny_dir, train16, tmp_path):
    wd = tmp_path / 'w'
    build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}).train()
    latest, model_file = wd / 'latest.pth', wd / 'output' / 'pytorch_model.pt'
    saved = {p: p.read_bytes() for p in (latest, model_file)}
    # overwrite=True would delete the run the checkpoint belongs to: refused before anything is removed
    for ck in (latest, model_file):
        t = build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}, overwrite=True)
        with pytest.raises(FileExistsError, match='part of the previous run.*copy it elsewhere'):
            t.train(str(ck))
    # a mistyped checkpoint path does not cost the previous run either
    with pytest.raises(FileNotFoundError, match='does not exist'):
        build(tiny_dir, wd, train16, None, {'train.max_epochs': 1}, overwrite=True).train(str(wd / 'nope.pt'))
    assert {p: p.read_bytes() for p in saved} == saved
    # resume=True in a work_dir with nothing to resume starts from checkpoint_path (not from random weights)
    ck = tmp_path / 'start.pt'
    shutil.copyfile(model_file, ck)
    want = torch.load(ck, weights_only=True)['state_dict']
    t = build(tiny_dir, tmp_path / 'fresh', train16, None, {'train.max_epochs': 1, 'train.optimizer.lr': 0.0},
              resume=True)
    t.train(checkpoint_path=str(ck))
    got = state(t)
    convs = [k for k in want if k.endswith('conv1.weight')]
    assert convs and all(torch.equal(got[k], want[k]) for k in convs)  # lr 0: the loaded weights, unchanged


def test_null_work_dir_of_the_published_configuration_gives_the_default(reference_dir, val8, tmp_path,
                                                                        monkeypatch):
    model_dir = tmp_path / 'official'
    shutil.copytree(reference_dir / 'official_like_model', model_dir)
    assert json.loads((model_dir / 'configuration.json').read_text())['train']['work_dir'] is None
    monkeypatch.chdir(tmp_path)
    from modelscope.trainers import build_trainer
    t = build_trainer('easycv', default_args=dict(model=str(model_dir), eval_dataset=val8, device='cpu'))
    assert t.work_dir == str(tmp_path / 'work_dir') and (tmp_path / 'work_dir').is_dir()


def test_evaluation_every_n_iterations_keeps_the_best_checkpoint(tiny_dir, train16, val8, tmp_path):
    wd = tmp_path / 'w'
    t = build(tiny_dir, wd, train16, val8, {'train.max_epochs': 2,
                                            'evaluation.period': {'by_epoch': False, 'interval': 3}})
    t.train()
    assert t.iter == 8  # 16 images / batch 4 x 2 epochs; evaluated after iterations 3 and 6
    best = json.loads((wd / 'best.json').read_text())
    assert best['metric'] == 'PCK' and best['iter'] in (3, 6) and best['epoch'] == (0 if best['iter'] == 3 else 1)
    saved = torch.load(wd / 'output_best' / 'pytorch_model.pt', weights_only=True)
    assert saved['meta']['iter'] == best['iter'] and saved['meta']['metrics']['PCK'] == pytest.approx(best['value'])
    assert md.load_model_spec(wd / 'output_best').checkpoint is not None


def test_the_last_epoch_is_evaluated_when_the_interval_skips_it(tiny_dir, train16, val8, tmp_path):
    """The published configuration evaluates every 10 epochs: a shorter run ended with no metrics and no
    output_best/, so the command the README gives next (eval --model WORK_DIR/output_best) failed."""
    wd = tmp_path / 'w'
    t = build(tiny_dir, wd, train16, val8, {'train.max_epochs': 2,
                                            'evaluation.period': {'by_epoch': True, 'interval': 10}})
    t.train()
    evals = [json.loads(line) for line in (wd / 'train_log.jsonl').read_text().splitlines() if '"eval"' in line]
    assert [r['epoch'] for r in evals] == [2]  # epoch 1 is not on the interval; the last one is evaluated
    assert json.loads((wd / 'best.json').read_text())['epoch'] == 2
    assert (wd / 'output_best' / 'pytorch_model.pt').is_file()


@pytest.mark.parametrize('key, value, message', [
    ('trian.max_epochs', 3, r"cfg_options key 'trian.max_epochs': the configuration has no section 'trian'"),
    ('train.max_epochs', 'abc', r"train.max_epochs must be a positive integer, got 'abc'"),
    ('train.optimizer', 0.1, r'train.optimizer must be a section like'),
    ('train.lr_scheduler.step', [5, 2], r'train.lr_scheduler.step must be an epoch or an increasing list'),
    ('train.dataloader.batch_size_per_gpu', 0, r'batch_size_per_gpu must be a positive integer, got 0'),
])
def test_bad_cfg_options_are_refused_with_the_key_named(tiny_dir, train16, tmp_path, key, value, message):
    """A misspelt section was merged as a new one and ignored; wrong types failed later with messages that
    named no key (TypeError: '>=' not supported ..., AttributeError: 'float' object has no attribute 'pop')."""
    wd = tmp_path / 'w'
    with pytest.raises(ValueError, match=message):
        build(tiny_dir, wd, train16, None, {key: value})
    assert not wd.exists()


def test_a_trainer_that_cannot_be_built_leaves_no_work_dir(tiny_dir, train16, tmp_path):
    wd = tmp_path / 'new_run'
    with pytest.raises(ValueError, match="'AP' is not a hand keypoint metric"):
        build(tiny_dir, wd, train16, None, {'train.checkpoint.best': {'metric_key': 'AP'}})
    assert not wd.exists()  # ModelScope had created it, with a log, before the hook refused
    wd.mkdir()
    (wd / 'mine.txt').write_text('x')  # a folder that was there is left alone
    with pytest.raises(ValueError):
        build(tiny_dir, wd, train16, None, {'train.checkpoint.best': {'metric_key': 'AP'}})
    assert (wd / 'mine.txt').read_text() == 'x'


def test_python_cfg_file_is_refused_without_trust_remote_code(tmp_path):
    """ModelScope reads a .py configuration by running it: without trust_remote_code=True the trainer
    refuses it before anything runs (the file's code would have created the marker)."""
    from modelscope.metainfo import Trainers
    from modelscope.trainers import build_trainer
    model_dir = tmp_path / 'model'
    model_dir.mkdir()
    (model_dir / 'configuration.json').write_text('{"framework": "pytorch", "task": "hand-2d-keypoints"}\n')
    marker = tmp_path / 'ran'
    cfg = tmp_path / 'config.py'
    cfg.write_text(f'open({str(marker)!r}, "w").write("code ran")\nmodel = dict(type="TopDown")\n')
    with pytest.raises(ValueError, match=r'config\.py is a Python configuration: reading it runs it as code.*'
                                         r'trust_remote_code=True'):
        build_trainer(Trainers.easycv, default_args=dict(model=str(model_dir), cfg_file=str(cfg),
                                                         work_dir=str(tmp_path / 'work'), device='cpu'))
    assert not marker.exists()
    # opting in reads (runs) it; the rest of this toy configuration is not a training setup
    with pytest.raises(Exception):  # noqa: B017
        build_trainer(Trainers.easycv, default_args=dict(model=str(model_dir), cfg_file=str(cfg),
                                                         work_dir=str(tmp_path / 'work'), device='cpu',
                                                         trust_remote_code=True))
    assert marker.read_text() == 'code ran'


def test_configuration_and_hook_list_go_to_the_text_log_not_the_console(tiny_dir, train16, tmp_path, caplog):
    """The console gets one line naming the run's text log; the configuration and the hook list are in that
    log. Each trainer of a process logs into its own work dir (ModelScope gives only the first one a file)."""
    import logging
    caplog.set_level(logging.INFO, logger='modelscope')
    texts = []
    for name in ('first', 'second'):
        caplog.clear()
        t = build(tiny_dir, tmp_path / name, train16, None, {'train.max_epochs': 1})
        t.train()
        console = caplog.text
        assert 'Training Config Start' not in console and '"framework"' not in console
        assert 'Stage: before_run' not in console
        (log_file,) = [f for f in os.listdir(tmp_path / name) if f.endswith('.log')]
        assert f'configuration and hook list of this run: {tmp_path / name / log_file}' in console
        texts.append((tmp_path / name / log_file).read_text())
    for name, text in zip(('first', 'second'), texts):
        assert 'configuration of this run' in text and '"max_epochs": 1' in text
        assert f'"work_dir": "{tmp_path / name}"' in text
        assert text.count('Stage: before_run') == 1 and 'HandTextLoggerHook' in text
        assert text.count('epoch [1][4/4]') == 1


def test_resumed_log_keeps_the_records_up_to_the_checkpoint(tmp_path):
    """What a resume from iteration 4 keeps of train_log.jsonl: the records written up to it (the eval
    record of that epoch too), none after; a cut-off last line goes, a missing final newline is added,
    and a log without total_iter (an older run) is left alone."""
    import logging
    import types
    from modelscope_handkp.hooks import HandTextLoggerHook
    hook = HandTextLoggerHook()
    hook.json_log_path = str(tmp_path / 'train_log.jsonl')
    trainer = types.SimpleNamespace(logger=logging.getLogger('test'))
    recs = [{'mode': 'train', 'epoch': 1, 'iter': i, 'total_iter': i} for i in (1, 2, 3, 4)]
    recs.append({'mode': 'eval', 'epoch': 1, 'total_iter': 4})
    later = [{'mode': 'train', 'epoch': 2, 'iter': i - 4, 'total_iter': i} for i in (5, 6)]
    lines = [json.dumps(r) + '\n' for r in recs]
    path = tmp_path / 'train_log.jsonl'
    for tail, want in (([json.dumps(r) + '\n' for r in later] + ['{"mode": "tr'], lines),  # cut off
                       ([json.dumps(later[0])], lines),  # no newline after the last record
                       ([], lines),
                       ):
        path.write_text(''.join(lines + tail))
        hook._drop_records_after(4, trainer)
        assert path.read_text() == ''.join(want)
    path.write_text(''.join(lines)[:-1])  # the checkpoint's own eval record without its newline
    hook._drop_records_after(4, trainer)
    assert path.read_text() == ''.join(lines)
    old = ''.join(json.dumps({k: v for k, v in r.items() if k != 'total_iter'}) + '\n' for r in recs + later)
    path.write_text(old)
    hook._drop_records_after(4, trainer)
    assert path.read_text() == old
