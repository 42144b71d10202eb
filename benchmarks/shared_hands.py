"""Keypoint quality of model directories on the 29 real hands of ``../shared/data/hands``.

    python benchmarks/shared_hands.py                         # the bundled starter model
    python benchmarks/shared_hands.py DIR [DIR ...] --json out.json

The hands (FreiHAND 8, OneHand10K 4, Panoptic 4, RHD 3, COCO-WholeBody 10, some tiny) come from
mmpose's test data and lie outside the starter model's training domain; they are the data this project
may use to compare training recipes (``eval_hgc`` is for the final report only). Every hand gets the
same kind of box, whatever its file's own box convention: tight around its visible GT keypoints,
expanded by 10 % of its width / height on each side (the open_hands and eval_hgc convention), then
padding 1.25 and the flip test as configured. Printed per model: the mean over hands of (mean keypoint
error / max side of that box) — the figure recipes are compared on — per source, and EasyCV's PCK@0.2,
AUC and EPE over all hands. With two or more models, each later one is also compared with the first,
hand by hand: the mean paired difference of that figure with a 95 % bootstrap interval (10,000
resamples of the 29 hands, fixed seed) — an interval that contains 0 means the two are not told apart
by these hands.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / 'shared' / 'data' / 'hands'
SOURCES = (('freihand', 'test_freihand.json'), ('onehand10k', 'test_onehand10k.json'),
           ('panoptic', 'test_panoptic.json'), ('rhd', 'test_rhd.json'), ('coco', 'test_coco_wholebody.json'))


def load_hands(data: Path):
    """[(source, image path, keypoints [21, 2], visible [21] bool, box xyxy [4])] of every hand with
    at least 3 visible keypoints."""
    out = []
    for source, ann in SOURCES:
        d = json.loads((data / source / ann).read_text())
        files = {im['id']: im['file_name'] for im in d['images']}
        for a in d['annotations']:
            if source == 'coco':
                kps = [a[f'{side}hand_kpts'] for side in ('left', 'right') if a.get(f'{side}hand_valid')]
            else:
                kps = [a['keypoints']]
            for k in kps:
                k = np.asarray(k, np.float32).reshape(21, 3)
                vis = k[:, 2] > 0
                if vis.sum() < 3:
                    continue
                lo, hi = k[vis, :2].min(0), k[vis, :2].max(0)
                margin = (hi - lo) * np.float32(0.1)
                out.append((source, data / source / files[a['image_id']], k[:, :2], vis,
                            np.r_[lo - margin, hi + margin].astype(np.float32)))
    return out


def evaluate(model_dir: str | None, hands) -> dict:
    import modelscope_handkp
    from modelscope.outputs import OutputKeys
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    from modelscope_handkp.metrics import keypoint_metrics

    p = pipeline(Tasks.hand_2d_keypoints, model=model_dir or modelscope_handkp.starter_model_dir())
    pred, rel = [], []
    for _, path, k, vis, box in hands:
        kp = p(str(path), boxes=box[None])[OutputKeys.KEYPOINTS][0, :, :2]
        pred.append(kp)
        rel.append(float(np.linalg.norm(kp - k, axis=1)[vis].mean() / (box[2:] - box[:2]).max()))
    rel = np.asarray(rel)
    sources = np.array([h[0] for h in hands])
    boxes = np.stack([np.r_[h[4][:2], h[4][2:] - h[4][:2]] for h in hands])
    m = keypoint_metrics(np.stack(pred), np.stack([h[2] for h in hands]), np.stack([h[3] for h in hands]), boxes)
    return {'model': model_dir or 'starter', 'hands': len(hands), 'rel_error': round(float(rel.mean()), 4),
            'rel_error_per_hand': [round(float(v), 5) for v in rel],
            'rel_error_by_source': {s: round(float(rel[sources == s].mean()), 4) for s, _ in SOURCES},
            **{k: round(float(v), 4) for k, v in m.items()}}


def paired_difference(a, b, resamples: int = 10000, seed: int = 0) -> dict:
    """Mean of ``b - a`` over hands (per-hand figures of two models on the same hands) and its 95 %
    percentile bootstrap interval."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    idx = np.random.default_rng(seed).integers(0, d.size, (resamples, d.size))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return {'mean': round(float(d.mean()), 4), 'ci95': [round(float(lo), 4), round(float(hi), 4)]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('models', nargs='*', help='model directories (default: the bundled starter model)')
    ap.add_argument('--data', default=str(DEFAULT_DATA), help='the shared hands folder')
    ap.add_argument('--json', default=None, help='also write the figures to this JSON file')
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / 'freihand' / 'test_freihand.json').is_file():
        sys.exit(f'error: {data} does not hold the shared hand images (freihand/test_freihand.json missing); '
                 'pass --data')
    hands = load_hands(data)
    results = [evaluate(m, hands) for m in (args.models or [None])]
    for r in results[1:]:
        r['vs_first'] = paired_difference(results[0]['rel_error_per_hand'], r['rel_error_per_hand'])
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != 'rel_error_per_hand'}))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    main()
