"""Report the quality and speed of a model on a COCO-WholeBody hand test set (default: eval_hgc).

    python benchmarks/eval_hgc.py                              # the bundled starter model
    python benchmarks/eval_hgc.py --model DIR --json out.json

Three figures, all through ``pipeline(Tasks.hand_2d_keypoints, ...)``:

1. keypoints with the GT hand boxes given (``boxes=``, padding 1.25, flip test on):
   PCK@0.2 (max side of the GT box), AUC (0-28.5 px thresholds, norm 30 px), EPE, NME —
   :func:`modelscope_handkp.metrics.keypoint_metrics`, EasyCV's definitions;
2. end to end with the model directory's detector (the palm detector for the starter model), no
   boxes given: detection rate (a GT hand is found when a predicted hand's box has IoU >= 0.3 with
   the GT box or contains all its GT keypoints; the best-scoring such hand is used), then PCK and
   AUC over ALL GT hands with missed hands counted as wrong (every keypoint beyond every
   threshold), and EPE over the found hands;
3. milliseconds per image end to end (image already decoded; detector + crops + network + decode),
   median over the set, flip test on and off, with the backend the pipeline picks.

``../shared/data/eval_hgc`` is for reporting only: never train, tune or select on it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / 'shared' / 'data' / 'eval_hgc'


def load_hands(data: Path, split: str | None = None):
    """(image paths, keypoints [N,21,2], visible [N,21], boxes xywh [N,4]) of every valid hand."""
    ann_files = sorted((data / 'annotations').glob(f'{split}.json' if split else '*.json'))
    if len(ann_files) != 1:
        raise SystemExit(f'{data}/annotations has {len(ann_files)} files matching split {split!r}; pass --data a '
                         'COCO-WholeBody hand folder and --split the name of one annotation file.')
    d = json.loads(ann_files[0].read_text())
    names = {im['id']: im['file_name'] for im in d['images']}
    paths, kps, vis, boxes = [], [], [], []
    for a in d['annotations']:
        for side in ('left', 'right'):
            k = np.asarray(a.get(f'{side}hand_kpts', []), np.float32).reshape(-1, 3)
            if not a.get(f'{side}hand_valid') or k.size == 0 or not (k > 0).any():
                continue
            paths.append(str(data / 'images' / names[a['image_id']]))
            kps.append(k[:, :2])
            vis.append(np.minimum(1.0, k[:, 2]))
            boxes.append(np.asarray(a[f'{side}hand_box'], np.float32))
    return paths, np.stack(kps), np.stack(vis).astype(np.float32), np.stack(boxes)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of x1,y1,x2,y2 boxes [M,4] x [K,4]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def hand_inside(boxes_xyxy: np.ndarray, keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """bool [M]: box m contains all visible GT keypoints (invisible ones are unlabelled, often (0, 0))."""
    k = keypoints[np.asarray(visible) > 0]
    if len(k) == 0:
        return np.zeros(len(boxes_xyxy), bool)
    return ((k[None] >= boxes_xyxy[:, None, :2]) & (k[None] <= boxes_xyxy[:, None, 2:])).all(-1).all(-1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', default=None, help='model directory (default: the bundled starter model)')
    ap.add_argument('--data', default=str(DEFAULT_DATA), help='COCO-WholeBody hand folder (default: eval_hgc)')
    ap.add_argument('--split', default=None, help='annotation file annotations/SPLIT.json (default: the only one)')
    ap.add_argument('--detector', default=None, help="override the model directory's detector ('palm', ...)")
    ap.add_argument('--limit', type=int, default=None, help='first N hands only (quick look)')
    ap.add_argument('--speed-images', type=int, default=100, help='images timed for the speed figures')
    ap.add_argument('--json', default=None, help='also write the figures to this JSON file')
    args = ap.parse_args(argv)

    import modelscope_handkp
    from modelscope.outputs import OutputKeys
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    from modelscope_handkp.metrics import keypoint_metrics

    model = args.model or modelscope_handkp.starter_model_dir()
    paths, gt, vis, boxes_xywh = load_hands(Path(args.data), args.split)
    if args.limit:
        paths, gt, vis, boxes_xywh = paths[:args.limit], gt[:args.limit], vis[:args.limit], boxes_xywh[:args.limit]
    n = len(paths)
    gt_xyxy = np.concatenate([boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]], 1)
    kwargs = {'detector': args.detector} if args.detector else {}
    hands = pipeline(Tasks.hand_2d_keypoints, model=model, **kwargs)
    images = []
    for p in paths:
        bgr = cv2.imread(p)
        if bgr is None:
            raise SystemExit(f'{p} (named in the annotations of {args.data}) cannot be read; pass --data a complete '
                             'COCO-WholeBody hand folder (annotations/ + images/).')
        images.append(bgr[:, :, ::-1].copy())
    out = {'model': str(model), 'data': str(args.data), 'hands': n, 'backend': None,
           'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores'}

    # 1. GT boxes given
    pred = np.stack([hands(im, boxes=gt_xyxy[i:i + 1], input_color='rgb', flip_test=True)
                     [OutputKeys.KEYPOINTS][0, :, :2] for i, im in enumerate(images)])
    out['backend'] = hands.backend.name if hasattr(hands, 'backend') else 'eager'
    out['gt_boxes'] = keypoint_metrics(pred, gt, vis, boxes_xywh)

    # 2. end to end with the detector
    found = np.zeros(n, bool)
    pred_e2e = np.full_like(gt, 1e6)
    for i, im in enumerate(images):
        r = hands(im, input_color='rgb', flip_test=True)
        kp, bx = r[OutputKeys.KEYPOINTS], r[OutputKeys.BOXES]
        if len(kp) == 0:
            continue
        iou = box_iou(bx, gt_xyxy[i:i + 1])[:, 0]
        inside = hand_inside(bx, gt[i], vis[i])
        ok = np.flatnonzero((iou >= 0.3) | inside)
        if len(ok):
            found[i] = True
            pred_e2e[i] = kp[ok[0], :, :2]  # results are in detector-score order
    all_hands = keypoint_metrics(pred_e2e, gt, vis, boxes_xywh)
    on_found = keypoint_metrics(pred_e2e[found], gt[found], vis[found], boxes_xywh[found]) if found.any() else {}
    out['end_to_end'] = {'found': int(found.sum()), 'detection_rate': float(found.mean()),
                         'PCK_misses_wrong': all_hands['PCK'], 'AUC_misses_wrong': all_hands['AUC'],
                         'EPE_found': on_found.get('EPE'), 'PCK_found': on_found.get('PCK'),
                         'AUC_found': on_found.get('AUC')}

    # 3. speed, image already in memory
    speed = {}
    sample = images[:args.speed_images]
    for flip in (True, False):
        for im in sample[:3]:
            hands(im, input_color='rgb', flip_test=flip)
        ts = []
        for im in sample:
            t0 = time.perf_counter()
            hands(im, input_color='rgb', flip_test=flip)
            ts.append(time.perf_counter() - t0)
        speed[f'ms_per_image_flip_{"on" if flip else "off"}'] = 1000 * float(np.median(ts))
    out['speed'] = speed
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + '\n')


if __name__ == '__main__':
    main()
