#!/usr/bin/env python3
"""A smaller copy of a COCO-WholeBody hand folder (e.g. open_hands, 79 MB of files) for a machine it must be sent to.

    python tools/pack_open_hands.py ../shared/data/open_hands .gpu/open_hands --max-hand 160 --quality 80

Every image is scaled down (``cv2.INTER_AREA``) so that its largest hand box is at most ``--max-hand``
pixels (never scaled up), keypoints and boxes are scaled with it, and it is re-encoded as WebP of
``--quality``; images that need no scaling and are JPEG already (open_hands' 100 x 100 sign-digit
crops) are copied byte for byte.  The annotation files keep the fields the dataset reads (hand
keypoints, boxes and flags, ``bbox``, ``area``) and the ``images``/``categories`` lists.  With the
defaults open_hands becomes 35 MB (29 MB of images); hands of at most 160 px lose nothing a 192 px network sees
(its crop is the box x 1.25).  This is the data preparation of the starter model's planned GPU
variant (``docs/training.md``, "Larger variants on a GPU"; not trained yet).  The source folder is only read; an existing destination is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import cv2
import numpy as np

KEEP = ('id', 'image_id', 'category_id', 'iscrowd', 'lefthand_box', 'lefthand_kpts', 'lefthand_valid',
        'righthand_box', 'righthand_kpts', 'righthand_valid', 'bbox', 'area')
SIDES = ('righthand', 'lefthand')


def _scaled(ann: dict, fx: float, fy: float) -> dict:
    out = {k: ann[k] for k in KEEP if k in ann}
    for side in SIDES:
        if f'{side}_kpts' in ann:
            k = np.asarray(ann[f'{side}_kpts'], np.float64).reshape(-1, 3)
            k[:, 0] *= fx
            k[:, 1] *= fy
            out[f'{side}_kpts'] = np.round(k, 2).ravel().tolist()
        if f'{side}_box' in ann:
            out[f'{side}_box'] = np.round(np.asarray(ann[f'{side}_box'], np.float64) * (fx, fy, fx, fy), 2).tolist()
    if 'bbox' in ann:
        out['bbox'] = np.round(np.asarray(ann['bbox'], np.float64) * (fx, fy, fx, fy), 2).tolist()
    if 'area' in ann:
        out['area'] = round(float(ann['area']) * fx * fy, 2)
    return out


def pack_split(src: str, dst: str, split: str, max_hand: float, quality: int) -> int:
    data = json.load(open(os.path.join(src, 'annotations', f'{split}.json')))
    by_image: dict = {}
    for ann in data['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    written, anns = 0, []
    for im in data['images']:
        hands = [max(a[f'{s}_box'][2:]) for a in by_image.get(im['id'], []) for s in SIDES if a.get(f'{s}_valid')]
        f = min(1.0, max_hand / max(hands)) if hands else 1.0
        path = os.path.join(src, 'images', im['file_name'])
        if f == 1.0 and im['file_name'].lower().endswith(('.jpg', '.jpeg')):
            out = os.path.join(dst, 'images', im['file_name'])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copyfile(path, out)
            fx = fy = 1.0
        else:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f'{path}: not a readable image')
            h, w = img.shape[:2]
            nw, nh = max(1, round(w * f)), max(1, round(h * f))
            if (nw, nh) != (w, h):
                img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / w, nh / h
            im['width'], im['height'] = nw, nh
            im['file_name'] = os.path.splitext(im['file_name'])[0] + '.webp'
            out = os.path.join(dst, 'images', im['file_name'])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            if not cv2.imwrite(out, img, [cv2.IMWRITE_WEBP_QUALITY, int(quality)]):
                raise SystemExit(f'{out}: OpenCV could not write WebP')
        written += os.path.getsize(out)
        anns += [_scaled(a, fx, fy) for a in by_image.get(im['id'], [])]
    data['annotations'] = anns
    os.makedirs(os.path.join(dst, 'annotations'), exist_ok=True)
    with open(os.path.join(dst, 'annotations', f'{split}.json'), 'w') as fh:
        json.dump(data, fh, separators=(',', ':'))
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('src', help='COCO-WholeBody hand folder with images/ and annotations/{split}.json')
    ap.add_argument('dst', help='new folder (must not exist)')
    ap.add_argument('--splits', nargs='+', default=['train', 'val'])
    ap.add_argument('--max-hand', type=float, default=160.0, help='largest hand box side after scaling, px')
    ap.add_argument('--quality', type=int, default=80, help='WebP quality (1-100)')
    args = ap.parse_args(argv)
    if os.path.exists(args.dst):
        ap.error(f'{args.dst} exists; pass a new folder (nothing is overwritten).')
    if os.path.realpath(args.dst).startswith(os.path.realpath(args.src) + os.sep):
        ap.error('dst must not lie inside src.')
    total = sum(pack_split(args.src, args.dst, s, args.max_hand, args.quality) for s in args.splits)
    for extra in ('README.md', 'licenses'):
        p = os.path.join(args.src, extra)
        if os.path.isdir(p):
            shutil.copytree(p, os.path.join(args.dst, extra))
        elif os.path.isfile(p):
            shutil.copyfile(p, os.path.join(args.dst, extra))
    print(f'{args.dst}: {total / 1e6:.1f} MB of images', file=sys.stderr)


if __name__ == '__main__':
    main()
