#!/usr/bin/env python3
"""Train a small hand keypoint model on CPU with ``build_trainer('easycv', ...)`` (~4.5 min per epoch on 2 cores).

A narrow HRNet (width 16, one block per branch, 1.3 M parameters) at 128 x 128 px is trained on the
``train`` split of a COCO-WholeBody hand folder and evaluated (PCK/AUC/EPE/NME) on its ``val`` split
after every epoch.  On 2 CPU cores with the open_hands data set (4,910 training hands, 531 validation
hands) one epoch takes about 4-4.5 minutes (18-25 img/s on an idle machine); the default 8 epochs about
35 minutes, the 12 epochs of the starter model's first stage about 53 minutes (its card has the exact
commands)::

    nice -n 10 python3 tools/train_small.py --data ../shared/data/open_hands --work-dir work_dirs/small_128

    # continue after an interruption / start again
    python3 tools/train_small.py --data ../shared/data/open_hands --work-dir work_dirs/small_128 --resume
    python3 tools/train_small.py --data ../shared/data/open_hands --work-dir work_dirs/small_128 --overwrite

    # two processes (gloo on CPU, NCCL on GPUs)
    torchrun --nproc_per_node=2 tools/train_small.py --data ../shared/data/open_hands --work-dir work_dirs/ddp

Results in ``--work-dir``: ``output/`` and ``output_best/`` (model directories for
``pipeline(Tasks.hand_2d_keypoints, model=...)``; they have no detector, pass ``boxes=``),
``latest.pth`` (for ``--resume``), ``train_log.jsonl`` (loss, lr, img/s, ETA, metrics per epoch).
At the end the script prints the validation PCK of every epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


AUGMENTS = ('standard', 'strong', 'robust', 'viewpoint', 'clutter')


def train_pipeline(size: int, augment: str) -> list:
    """The EasyCV-style training pipeline: ``standard`` is the published model's augmentation,
    ``strong`` adds box-centre shifts, colour distortion and wider scale/rotation ranges; ``robust``
    (the starter model's second stage) is ``strong`` with mmpose's hand-dataset rotation range
    (rot_factor 90: hands at any angle), green-screen backgrounds replaced by other training images'
    pixels and random occluders over the hand; ``viewpoint`` is ``robust`` with perspective viewpoint
    changes (the crop plane turned by up to 50 degrees of yaw and pitch, p 0.5); ``clutter`` is
    ``robust`` with plain backgrounds (white walls) replaced too (p 0.5)."""
    if augment == 'standard':
        geometric = [{'type': 'TopDownRandomFlip', 'flip_prob': 0.5},
                     {'type': 'TopDownGetRandomScaleRotation', 'rot_factor': 30, 'scale_factor': 0.25}]
    elif augment == 'strong':
        geometric = [{'type': 'TopDownRandomFlip', 'flip_prob': 0.5},
                     {'type': 'TopDownRandomShiftBboxCenter', 'shift_factor': 0.16, 'prob': 0.3},
                     {'type': 'TopDownGetRandomScaleRotation', 'rot_factor': 45, 'scale_factor': 0.3,
                      'rot_prob': 0.6},
                     {'type': 'PhotometricDistortion', 'hue_delta': 10}]
    elif augment in ('robust', 'viewpoint', 'clutter'):
        geometric = [{'type': 'TopDownRandomFlip', 'flip_prob': 0.5},
                     {'type': 'TopDownRandomShiftBboxCenter', 'shift_factor': 0.16, 'prob': 0.3},
                     {'type': 'TopDownGetRandomScaleRotation', 'rot_factor': 90, 'scale_factor': 0.3,
                      'rot_prob': 0.6},
                     {'type': 'PhotometricDistortion', 'hue_delta': 10},
                     {'type': 'TopDownRandomGreenBackground', 'prob': 0.5},
                     {'type': 'TopDownRandomOcclusion', 'prob': 0.4, 'max_patches': 2, 'size_range': [0.15, 0.4]}]
        if augment == 'viewpoint':
            geometric.append({'type': 'TopDownRandomPerspective', 'prob': 0.5, 'max_angle': 50})
        if augment == 'clutter':
            geometric.append({'type': 'TopDownRandomPlainBackground', 'prob': 0.5})
    else:
        names = ', '.join(repr(a) for a in AUGMENTS[:-1])
        raise ValueError(f'augment must be {names} or {AUGMENTS[-1]!r}, got {augment!r}')
    return geometric + [
        {'type': 'TopDownAffine'}, {'type': 'MMToTensor'},
            {'type': 'NormalizeTensor', 'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225]},
        {'type': 'TopDownGenerateTarget', 'sigma': 2 if size <= 160 else 3}]


def small_model_dir(dst: str, size: int, width: int, blocks: int, overwrite: bool, augment: str = 'standard',
                    init_from: str | None = None, resume: bool = False, modules=(1, 1, 2, 1),
                    stem_blocks: int = 2) -> str:
    """A model directory (this plugin's format) for the small network: configuration only (random
    initial weights), or with a copy of ``init_from``'s weights to fine-tune them.

    Weights that an earlier ``--init-from`` run left in ``dst`` are never used silently by a run without
    ``--init-from`` (the trainer would start from them): they are removed with ``overwrite``, kept with
    ``resume`` (the run being continued started from them), else a ``FileExistsError`` says so."""
    text = model_configuration_text(size, width, blocks, augment, modules, stem_blocks)
    if init_from is not None:
        for name in ('configuration.json', 'pytorch_model.pt'):
            if not os.path.isfile(os.path.join(init_from, name)):
                raise FileNotFoundError(f'--init-from {init_from}: {name} not found; pass a model directory with '
                                        'configuration.json and pytorch_model.pt (e.g. a previous run\'s '
                                        'output_best/).')
        src = json.load(open(os.path.join(init_from, 'configuration.json'))).get('model', {})
        want = json.loads(text)['model']
        if any(src.get(k) != want[k] for k in ('backbone', 'image_size')):
            raise ValueError(f'--init-from {init_from}: its network is not the one asked for here (--size {size} '
                             f'--width {width} --blocks {blocks} --modules {" ".join(map(str, modules))} '
                             f'--stem-blocks {stem_blocks}); pass the same network options.')
    path = os.path.join(dst, 'configuration.json')
    if os.path.exists(path) and open(path).read() != text and not overwrite:
        raise FileExistsError(f'{path} exists with other settings; pass --overwrite or another --work-dir.')
    stale = os.path.join(dst, 'pytorch_model.pt')
    if init_from is None and os.path.exists(stale) and not resume:
        if not overwrite:
            raise FileExistsError(f'{stale} holds the weights of an earlier --init-from run, which this run would '
                                  'start from; pass --init-from again, --overwrite to train from random weights, '
                                  'or another --work-dir.')
        os.remove(stale)
    os.makedirs(dst, exist_ok=True)
    if init_from is not None:
        import shutil
        shutil.copyfile(os.path.join(init_from, 'pytorch_model.pt'), os.path.join(dst, 'pytorch_model.pt'))
    # written last and renamed into place: the other processes of a torchrun start when they read this text
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return dst


def model_configuration_text(size: int, width: int, blocks: int, augment: str = 'standard', modules=(1, 1, 2, 1),
                             stem_blocks: int = 2) -> str:
    """The configuration.json text of :func:`small_model_dir`'s model directory."""
    from modelscope_handkp.model_dir import handkp_configuration
    from modelscope_handkp.models import hrnet_extra, hrnet_model_cfg
    mc = hrnet_model_cfg(hrnet_extra(width, blocks=blocks, modules=tuple(modules), stem_blocks=stem_blocks),
                         image_size=(size, size))
    cfg = handkp_configuration(mc, {'type': 'none'})
    cfg['dataset'] = {
        'train': {'type': 'HandCocoWholeBodyDataset', 'pipeline': train_pipeline(size, augment)},
        'val': {'type': 'HandCocoWholeBodyDataset'}}
    cfg['train'] = {'max_epochs': 8, 'dataloader': {'batch_size_per_gpu': 32, 'workers_per_gpu': 1},
                    'optimizer': {'type': 'Adam', 'lr': 1e-3},
                    'lr_scheduler': {'policy': 'step', 'step': [6], 'warmup': 'linear', 'warmup_iters': 150,
                                     'warmup_ratio': 0.001},
                    'hooks': [{'type': 'CheckpointHook', 'interval': 1}, {'type': 'EvaluationHook', 'interval': 1},
                              {'type': 'AddLrLogHook'}, {'type': 'IterTimerHook'},
                              {'type': 'TextLoggerHook', 'interval': 20}]}
    cfg['evaluation'] = {'dataloader': {'batch_size_per_gpu': 64, 'workers_per_gpu': 1},
                         'metrics': {'type': 'EasyCVMetric', 'evaluators': [
                             {'type': 'KeyPointEvaluator', 'metric_names': ['PCK', 'AUC', 'EPE', 'NME'],
                              'pck_thr': 0.2, 'auc_nor': 30}]}}
    return json.dumps(cfg, indent=2) + '\n'


def wait_for_configuration(path: str, want: str, rank: int, timeout: float = 600.0) -> None:
    """Wait (process ``rank`` > 0 of a torchrun) until process 0 has written ``want`` to ``path``."""
    import time
    deadline = time.time() + timeout
    while True:
        try:
            with open(path) as f:
                if f.read() == want:
                    return
        except FileNotFoundError:
            pass
        if time.time() > deadline:
            raise SystemExit(f'process {rank}: {path} was not written with this run\'s settings within '
                             f'{timeout:.0f} s; see the output of process 0.')
        time.sleep(0.2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default=os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data',
                                                   'open_hands'),
                    help='COCO-WholeBody hand folder with train and val annotations '
                    '(default: ../shared/data/open_hands)')
    ap.add_argument('--work-dir', default='work_dirs/small_128')
    ap.add_argument('--epochs', type=int, default=8)
    ap.add_argument('--size', type=int, default=128, help='input size in pixels (heatmaps are size / 4)')
    ap.add_argument('--width', type=int, default=16, help='HRNet width (18 = the published w18)')
    ap.add_argument('--blocks', type=int, default=1, help='residual blocks per branch (published: 4)')
    ap.add_argument('--modules', type=int, nargs=4, default=(1, 1, 2, 1), metavar='N',
                    help='modules of stages 1-4 (published: 1 1 4 3)')
    ap.add_argument('--stem-blocks', type=int, default=2, help='bottleneck blocks of stage 1 (published: 4)')
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--augment', choices=AUGMENTS, default='standard',
                    help='standard: flip, scale 0.25, rotation 30 (the published recipe); strong: adds box shifts, '
                    'colour distortion, scale 0.3, rotation 45; robust: strong with rotation 90, green-screen '
                    'background replacement and occluders (the starter model\'s second stage); viewpoint: robust '
                    'with perspective viewpoint changes (yaw/pitch up to 50 degrees, p 0.5); clutter: robust with '
                    'plain (white wall) backgrounds replaced by other images\' pixels too')
    ap.add_argument('--init-from', default=None, metavar='MODEL_DIR',
                    help='start from the weights of this model directory (same network), e.g. to fine-tune '
                    'the first stage of the starter model with --augment strong; the directory is only read')
    ap.add_argument('--device', default=None, help="'cpu' or 'gpu' (default: a GPU when available)")
    ap.add_argument('--threads', type=int, default=None,
                    help='torch CPU threads (default: torch\'s choice; use 1 on a machine shared with other jobs, '
                    'where extra threads mostly wait for each other)')
    ap.add_argument('--resume', action='store_true', help='continue the run in --work-dir')
    ap.add_argument('--overwrite', action='store_true', help='replace a previous run in --work-dir')
    args = ap.parse_args(argv)

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    import torch
    if torch.cuda.is_available() and args.device != 'cpu':
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    import modelscope_handkp  # noqa: F401  (registers the trainer)
    from modelscope.metainfo import Trainers
    from modelscope.trainers import build_trainer
    from modelscope_handkp.hooks import read_train_log

    work_dir = os.path.abspath(args.work_dir)
    rank = int(os.environ.get('RANK', 0))
    model_dir = os.path.join(work_dir, 'init_model')
    if rank == 0:
        try:
            small_model_dir(model_dir, args.size, args.width, args.blocks, args.overwrite or args.resume,
                            augment=args.augment, init_from=args.init_from, resume=args.resume,
                            modules=args.modules, stem_blocks=args.stem_blocks)
        except (FileExistsError, FileNotFoundError, ValueError) as e:
            ap.error(str(e))
    if int(os.environ.get('WORLD_SIZE', 1)) > 1 and rank != 0:
        # wait for THIS run's configuration: one left by an earlier run (other --size, --width ...) built another
        # network here than in process 0, and a file being written was read half
        wait_for_configuration(os.path.join(model_dir, 'configuration.json'),
                               model_configuration_text(args.size, args.width, args.blocks, args.augment,
                                                        args.modules, args.stem_blocks), rank)
    steps = [max(1, round(args.epochs * 0.75))]
    trainer = build_trainer(Trainers.easycv, default_args=dict(
        model=model_dir, train_dataset=args.data, eval_dataset=args.data, work_dir=work_dir,
        resume=args.resume, overwrite=args.overwrite, device=args.device,
        cfg_options={'train.max_epochs': args.epochs, 'train.optimizer.lr': args.lr,
                     'train.lr_scheduler.step': steps,
                     'train.dataloader.batch_size_per_gpu': args.batch_size,
                     'train.dataloader.workers_per_gpu': args.workers,
                     'evaluation.dataloader.workers_per_gpu': args.workers}))
    trainer.train()
    if rank == 0:
        log = os.path.join(work_dir, 'train_log.jsonl')
        print(f'\nvalidation per epoch ({len(trainer.eval_dataset)} hands of {args.data}):')
        for r in read_train_log(log):
            if r.get('mode') == 'eval':
                print(f"  epoch {r['epoch']:3d}: PCK {r['evaluation/PCK']:.4f}  AUC {r['evaluation/AUC']:.4f}  "
                      f"EPE {r['evaluation/EPE']:.2f} px")
        print(f'model directories: {os.path.join(work_dir, "output")} (last), {os.path.join(work_dir, "output_best")} '
              '(best PCK)')


if __name__ == '__main__':
    main()
