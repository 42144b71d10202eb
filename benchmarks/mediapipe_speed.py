"""Milliseconds per image of MediaPipe Hands (the starter model's teacher) on this machine, measured the
way ``benchmarks/eval_hgc.py`` measures this package: images already decoded (RGB), the first 100
images of the set in file-name order (eval_hgc.py's ``--speed-images`` default), 3 warm-up calls, median.

    python -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe==0.10.21
    /tmp/mp/bin/python benchmarks/mediapipe_speed.py [--images DIR]

Runs in its own environment (mediapipe 0.10.21 pins numpy < 2 and protobuf 4); it does not import this
package. Static-image mode (palm detection on every image, as our pipeline does), up to 2 hands,
the ``full`` landmark model (model_complexity=1), MediaPipe's defaults otherwise.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

DEFAULT_IMAGES = Path(__file__).resolve().parent.parent.parent / 'shared' / 'data' / 'eval_hgc' / 'images'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--images', default=str(DEFAULT_IMAGES), help='folder of .jpg/.png images')
    ap.add_argument('--limit', type=int, default=100, help='images timed (0: all)')
    args = ap.parse_args(argv)
    if not Path(args.images).is_dir():
        raise SystemExit(f'{args.images} is not a folder; pass --images a folder of .jpg/.png images')
    try:
        import mediapipe as mp
    except ImportError:
        raise SystemExit('mediapipe_speed.py needs mediapipe 0.10.21, in its own environment (it pins numpy < 2): '
                         'python -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe==0.10.21, then run this '
                         'script with /tmp/mp/bin/python') from None
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
    if args.limit:
        files = files[:args.limit]
    if not files:
        raise SystemExit(f'no images in {args.images}; pass --images')
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files]
    times, found = [], 0
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1) as hands:
        for im in images[:3]:  # warm-up
            hands.process(im)
        for im in images:
            t = time.perf_counter()
            r = hands.process(im)
            times.append(time.perf_counter() - t)
            found += bool(r.multi_hand_landmarks)
    print(json.dumps({'mediapipe': mp.__version__, 'images': len(images), 'with_a_hand': found,
                      'ms_per_image_median': round(1000 * float(np.median(times)), 2),
                      'ms_per_image_mean': round(1000 * float(np.mean(times)), 2)}))


if __name__ == '__main__':
    main()
