"""How well the bundled palm detector finds hands, and how fast it is on this CPU.

    python benchmarks/palm_detector_quality.py [--variant full|lite] [--data ../shared/data]
                                               [--threads N] [--batch 8] [--skip-eval-hgc]

A ground-truth hand counts as *found* when a detection covers it: IoU >= 0.3 between the
detection's hand rectangle (MediaPipe's rotated square, the region the top-down crop takes) and
the GT hand box, or all visible GT keypoints inside that rectangle.  Detections and GT hands are
matched one to one (detections best first, each takes the best-covered free GT hand).  For
reference the IoU >= 0.3 count is also given for the axis-aligned box enclosing the rectangle
(``PalmDetector.detect``), and the median ratio of the rectangle side to the GT box's long side
(for choosing the crop padding: the HRNet model was trained on GT boxes x 1.25).

Data sets (see their READMEs): ``hands/`` (all GT hands of the mmpose test images: OneHand10K,
FreiHAND, RHD, Panoptic, COCO-WholeBody) and ``eval_hgc/`` (583 real-world 256x256 crops, one
hand each; evaluation only: nothing here is tuned on it).  Speed: whole ``detect_hands`` calls
(letterbox, network, decoding, NMS) on real images, after a warm-up, single images and batches.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelscope_handkp.detection.palm import build_palm_detector  # noqa: E402


def load_gt(ann_file: Path, img_dir: Path):
    """{image path: [(box xyxy float [4], keypoints float [K, 2] (visible only)), ...]}."""
    data = json.loads(ann_file.read_text())
    files = {im['id']: img_dir / im['file_name'] for im in data['images']}
    out = {p: [] for p in files.values()}

    def add(path, box_xywh, kpts):
        k = np.asarray(kpts, np.float64).reshape(-1, 3)
        vis = k[:, 2] > 0
        b = np.asarray(box_xywh, np.float64)
        if b[2] <= 0 or b[3] <= 0:  # no box: tight box of the visible points
            b = np.r_[k[vis, :2].min(0), np.ptp(k[vis, :2], 0)]
        out[path].append((np.r_[b[:2], b[:2] + b[2:]], k[vis, :2]))

    for a in data['annotations']:
        path = files[a['image_id']]
        if 'lefthand_kpts' in a:  # COCO-WholeBody
            for side in ('left', 'right'):
                if a.get(f'{side}hand_valid') and max(a[f'{side}hand_kpts']) > 0:
                    add(path, a[f'{side}hand_box'], a[f'{side}hand_kpts'])
        else:
            add(path, a['bbox'], a['keypoints'])
    return out


def hand_datasets(data: Path, skip_eval: bool):
    sets = {}
    hands = data / 'hands'
    for ann in sorted(hands.glob('*/*.json')):
        sets[f'hands/{ann.parent.name}'] = load_gt(ann, ann.parent)
    if not skip_eval and (data / 'eval_hgc').is_dir():
        sets['eval_hgc'] = load_gt(data / 'eval_hgc/annotations/test.json', data / 'eval_hgc/images')
    return sets


def iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def polygon_iou(corners, box):
    """IoU of a convex polygon [4, 2] and an axis-aligned box (x1, y1, x2, y2)."""
    quad = np.asarray(corners, np.float32).reshape(-1, 1, 2)
    rect = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]],
                    np.float32).reshape(-1, 1, 2)
    inter, _ = cv2.intersectConvexConvex(quad, rect)
    union = cv2.contourArea(quad) + cv2.contourArea(rect) - inter
    return float(inter / union) if union > 0 else 0.0


def inside_rotated(points, center, side, rotation_deg):
    """All points inside the square of ``side`` centred on ``center`` turned by ``rotation_deg``."""
    if len(points) == 0:
        return False
    r = np.radians(rotation_deg)
    d = points - center
    # coordinates along the rect's x axis (cos r, sin r) and up axis (sin r, -cos r)
    u = d[:, 0] * np.cos(r) + d[:, 1] * np.sin(r)
    v = d[:, 0] * np.sin(r) - d[:, 1] * np.cos(r)
    return bool(np.all(np.abs(u) <= side / 2) and np.all(np.abs(v) <= side / 2))


def evaluate(detector, gt, batch: int):
    paths = sorted(gt)
    stats = dict(images=len(paths), hands=0, found=0, found_iou=0, found_inside=0, found_aligned=0,
                 detections=0, unmatched=0, missed=[], ratios=[])
    for i in range(0, len(paths), batch):
        chunk = paths[i:i + batch]
        ims = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in chunk]
        palms = detector.palms(ims)
        aligned = detector.detect(ims)
        for p, pd, boxes in zip(chunk, palms, aligned):
            hands = gt[p]
            stats['hands'] += len(hands)
            stats['detections'] += len(pd)
            free = list(range(len(hands)))
            corners = pd.corners()
            for j in range(len(pd)):  # detections best first
                best, best_key = None, None
                for g in free:
                    box, kps = hands[g]
                    ov = polygon_iou(corners[j], box)
                    ins = inside_rotated(kps, pd.centers[j], pd.sizes[j], pd.rotations[j])
                    if ov >= 0.3 or ins:
                        key = (ov, ins)
                        if best_key is None or key > best_key:
                            best, best_key = g, key
                if best is None:
                    stats['unmatched'] += 1
                    continue
                free.remove(best)
                stats['found'] += 1
                stats['found_iou'] += int(best_key[0] >= 0.3)
                stats['found_inside'] += int(best_key[1])
                gbox = hands[best][0]
                stats['found_aligned'] += int(iou(boxes[j, :4], gbox) >= 0.3 or best_key[1])
                stats['ratios'].append(pd.sizes[j] / max(gbox[2] - gbox[0], gbox[3] - gbox[1]))
            stats['missed'] += [f'{Path(p).name}#{g}' for g in free]
    return stats


def speed(detector, images, batch: int, seconds: float = 5.0):
    detector.detect_hands(images[:1])
    out = {}
    for label, size in (('single', 1), (f'batch{batch}', batch)):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for k in range(0, len(images), size):
                chunk = images[k:k + size]
                detector.detect_hands(chunk if size > 1 else chunk[0])
                n += len(chunk)
        out[label] = n / (time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--variant', default='full', choices=['full', 'lite'])
    ap.add_argument('--data', default=str(ROOT.parent / 'shared' / 'data'))
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--skip-eval-hgc', action='store_true')
    ap.add_argument('--show-missed', action='store_true')
    args = ap.parse_args(argv)
    if args.batch < 1:
        ap.error(f'--batch must be at least 1, got {args.batch}')
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / 'hands').is_dir():
        sys.exit(f'{data}/hands not found: pass --data with the shared data folder')
    detector = build_palm_detector(args.variant)
    print(f'palm detector {args.variant}, torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{os.cpu_count()} CPUs')
    total = dict(hands=0, found=0)
    for name, gt in hand_datasets(data, args.skip_eval_hgc).items():
        s = evaluate(detector, gt, args.batch)
        if name.startswith('hands/'):
            total['hands'] += s['hands']
            total['found'] += s['found']
        print(f'{name:18s} images {s["images"]:4d}  GT hands {s["hands"]:4d}  found {s["found"]:4d} '
              f'({100 * s["found"] / max(s["hands"], 1):5.1f} %)  [IoU>=0.3: {s["found_iou"]}, '
              f'keypoints inside: {s["found_inside"]}; with the enclosing box: {s["found_aligned"]}]  '
              f'detections {s["detections"]}, unmatched {s["unmatched"]}, '
              f'side/GT {np.median(s["ratios"]) if s["ratios"] else float("nan"):.2f}')
        if args.show_missed and s['missed']:
            print('   missed:', ' '.join(s['missed'][:40]))
    print(f'{"hands (all)":18s} GT hands {total["hands"]}  found {total["found"]} '
          f'({100 * total["found"] / max(total["hands"], 1):.1f} %)')
    ims = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)
           for p in sorted(glob.glob(str(data / 'hands' / '*' / '*.jpg')))]
    sp = speed(detector, ims, args.batch)
    print('speed (images/s, detect_hands on the hands/ jpgs): ' +
          ', '.join(f'{k} {v:.1f}' for k, v in sp.items()))


if __name__ == '__main__':
    main()
