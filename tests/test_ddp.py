"""torchrun --nproc_per_node=2 data-parallel training on CPU (gloo) with the easycv trainer (issue 5)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from test_trainer import build, make_tiny_model_dir, open_hands_subset

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    from torch import distributed as dist
    import modelscope_handkp  # noqa: F401
    from modelscope.metainfo import Trainers
    from modelscope.trainers import build_trainer

    model_dir, train_ann, val_ann, prefix, work_dir, out = sys.argv[1:7]
    opts = {'train.max_epochs': 2, 'train.dataloader.batch_size_per_gpu': 4, 'train.dataloader.workers_per_gpu': 0,
            'evaluation.dataloader.batch_size_per_gpu': 4, 'evaluation.dataloader.workers_per_gpu': 0,
            'evaluation.period.interval': 1, 'train.checkpoint.period.interval': 1, 'train.logging.interval': 1}
    t = build_trainer(Trainers.easycv, default_args=dict(
        model=model_dir, train_dataset={'ann_file': train_ann, 'img_prefix': prefix},
        eval_dataset={'ann_file': val_ann, 'img_prefix': prefix}, work_dir=work_dir, cfg_options=opts, device='cpu'))
    t.train()
    metrics = t.evaluate()
    rank = dist.get_rank()
    torch.save({k: v.detach().clone() for k, v in t.hand_net.state_dict().items()}, os.path.join(out, f'rank{rank}.pt'))
    with open(os.path.join(out, f'rank{rank}.json'), 'w') as f:
        json.dump({'rank': rank, 'world': dist.get_world_size(), 'backend': dist.get_backend(), 'metrics': metrics,
                   'iter': t.iter, 'epoch': t.epoch, 'iters_per_epoch': len(t.train_dataloader),
                   'ddp': type(t.model).__name__}, f)
''')


def test_torchrun_two_processes_gloo(reference_dir, data_dir, tmp_path):
    model_dir = make_tiny_model_dir(tmp_path / 'model', reference_dir)
    train = open_hands_subset(data_dir, tmp_path, 'train', 16)
    val = open_hands_subset(data_dir, tmp_path, 'val', 7)  # odd: the sampler pads one duplicate
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    out = tmp_path / 'out'
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = os.pathsep.join([str(os.path.dirname(os.path.dirname(__file__))), env.get('PYTHONPATH', '')])
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(script), model_dir,
           train['ann_file'], val['ann_file'], train['img_prefix'], str(tmp_path / 'wd'), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    r0, r1 = (json.loads((out / f'rank{r}.json').read_text()) for r in (0, 1))
    assert r0['world'] == r1['world'] == 2 and r0['backend'] == 'gloo' and r0['ddp'] == 'DistributedDataParallel'
    assert r0['iters_per_epoch'] == 2 and r0['iter'] == r1['iter'] == 4 and r0['epoch'] == 2  # 16 / (2 x 4)
    assert r0['metrics'] == r1['metrics'] and set(r0['metrics']) == {'PCK', 'AUC', 'EPE', 'NME'}
    w0, w1 = (torch.load(out / f'rank{r}.pt', weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # parameters in sync, BN statistics broadcast for eval

    # rank 0 wrote the model directory; one process evaluating it on the 7 hands gives the same numbers
    saved = torch.load(tmp_path / 'wd' / 'output' / 'pytorch_model.pt', weights_only=True)['state_dict']
    assert all(torch.equal(saved[k], w0[k]) for k in w0 if 'running' not in k and 'num_batches' not in k)
    single = build(str(tmp_path / 'wd' / 'output'), tmp_path / 'single', None, val,
                   {'evaluation.dataloader.batch_size_per_gpu': 4})
    single.hand_net.load_state_dict(w0)
    m = single.evaluate()
    assert len(single.eval_dataset) == 7
    for k in m:
        assert r0['metrics'][k] == pytest.approx(m[k], rel=1e-5, abs=1e-6), (k, r0['metrics'], m)
    records = [json.loads(x) for x in (tmp_path / 'wd' / 'train_log.jsonl').read_text().splitlines()]
    assert len([r for r in records if r['mode'] == 'train']) == 4  # logged once (rank 0), not per process
