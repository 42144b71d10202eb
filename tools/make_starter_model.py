#!/usr/bin/env python3
"""Package a trained model directory as the bundled starter model (``modelscope_handkp/starter_model``).

    python tools/make_starter_model.py work_dirs/starter_clutter/output_best [--overwrite]

Copies ``configuration.json`` + ``pytorch_model.pt`` of a training output (``output_best`` = the epoch
with the best PCK on the validation split), sets the detector to the bundled MediaPipe palm detector,
drops the training-only ``dataset`` paths of the machine that trained it, records where the model came
from (``handkp.provenance``: source directory, best epoch and its validation metrics from
``best.json``), copies the model card ``docs/model_card.md`` as its ``README.md`` and checks
that the result loads with ``pipeline(Tasks.hand_2d_keypoints, ...)``.
An existing starter model is replaced only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEST = ROOT / 'modelscope_handkp' / 'starter_model'
MAX_MB = 20.0  # the limit, in MB (10**6 bytes)


def training_pipelines(dataset) -> dict:
    """The ``dataset`` section with only its augmentation pipelines (and types) kept: fine-tuning the
    starter model then uses the targets (sigma) and augmentation it was trained with; the data paths
    of the training machine are dropped."""
    out = {}
    for split, section in (dataset or {}).items():
        if isinstance(section, dict) and section.get('pipeline'):
            out[split] = {k: section[k] for k in ('type', 'pipeline') if k in section}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('src', help='trained model directory (e.g. work_dirs/starter_clutter/output_best)')
    ap.add_argument('--dest', default=str(DEST))
    ap.add_argument('--command', default='python tools/train_small.py --data ../shared/data/open_hands '
                    '--work-dir work_dirs/starter --epochs 12 --threads 2 && python tools/train_small.py '
                    '--data ../shared/data/open_hands --work-dir work_dirs/starter_robust --epochs 10 --lr 5e-4 '
                    '--augment robust --init-from work_dirs/starter/output_best --threads 2 && python '
                    'tools/train_small.py --data ../shared/data/open_hands --work-dir work_dirs/starter_clutter '
                    '--epochs 8 --lr 2e-4 --augment clutter --init-from work_dirs/starter_robust/output_best '
                    '--threads 2',
                    help='the training command to record')
    ap.add_argument('--card', default=str(ROOT / 'docs' / 'model_card.md'),
                    help="the model card, copied as the model directory's README.md (default: docs/model_card.md)")
    ap.add_argument('--overwrite', action='store_true')
    args = ap.parse_args(argv)

    src, dest = Path(args.src), Path(args.dest)
    cfg_path, weights = src / 'configuration.json', src / 'pytorch_model.pt'
    for p in (cfg_path, weights):
        if not p.is_file():
            raise SystemExit(f'{p} not found: pass a model directory written by the trainer (output/ or output_best/).')
    size_mb = weights.stat().st_size / 1e6
    if size_mb > MAX_MB:
        raise SystemExit(f'{weights} is {size_mb:.1f} MB; the package ships at most {MAX_MB:.0f} MB.')
    if not Path(args.card).is_file():
        raise SystemExit(f'{args.card} not found: pass --card the model card to copy as README.md.')
    if dest.exists() and not dest.is_dir():
        raise SystemExit(f'{dest} is a file, not a model directory; pass another --dest.')
    if dest.exists() and any(dest.iterdir()) and not args.overwrite:
        raise SystemExit(f'{dest} exists; pass --overwrite to replace the bundled starter model.')

    dest.parent.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(cfg_path.read_text())
    cfg['detector'] = {'type': 'palm', 'variant': 'full', 'score_threshold': 0.5}
    cfg['dataset'] = training_pipelines(cfg.get('dataset'))  # no paths of the training machine
    if not cfg['dataset']:
        cfg.pop('dataset')
    from modelscope_handkp.trainer import strip_run_folders
    strip_run_folders(cfg.get('train'))  # checkpoint/log folders of the training run
    best = src.parent / 'best.json'
    prov = {'source': str(src), 'training_command': args.command,
            'training_data': 'open_hands train split (MediaPipe pseudo-labels); selection on its val split'}
    if best.is_file():
        prov['best'] = json.loads(best.read_text())
    cfg.setdefault('handkp', {})['provenance'] = prov

    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        stage = Path(tmp) / 'starter_model'
        stage.mkdir()
        (stage / 'configuration.json').write_text(json.dumps(cfg, indent=2) + '\n')
        shutil.copyfile(weights, stage / 'pytorch_model.pt')
        import modelscope_handkp  # noqa: F401
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks
        pipeline(Tasks.hand_2d_keypoints, model=str(stage))  # loads: config, weights, palm detector
        shutil.copyfile(args.card, stage / 'README.md')
        keep = [p for p in dest.iterdir() if p.name not in ('configuration.json', 'pytorch_model.pt', 'README.md')] \
            if dest.exists() else []
        for p in keep:  # anything else put there by hand stays (folders too)
            if p.is_dir():
                shutil.copytree(p, stage / p.name, symlinks=True)
            else:
                shutil.copy2(p, stage / p.name)
        # swapped, not removed then moved: a failure in between left no starter model at all
        if dest.exists():
            os.replace(dest, Path(tmp) / 'replaced')  # removed with tmp once the new folder is in place
        try:
            os.replace(stage, dest)
        except OSError:
            if (Path(tmp) / 'replaced').exists():
                os.replace(Path(tmp) / 'replaced', dest)
            raise
    print(f'wrote {dest} ({size_mb:.1f} MB weights)')


if __name__ == '__main__':
    main()
