"""Convert MediaPipe's palm detector (mediapipe==0.10.21) to the PyTorch weights this package ships.

    python tools/convert_palm_detector.py                       # both variants -> modelscope_handkp/weights
    python tools/convert_palm_detector.py --variant full --tflite path/to/palm_detection_full.tflite \
        --out-dir /tmp/palm

Without ``--tflite`` the wheel is fetched with ``pip download mediapipe==0.10.21 --no-deps``
(cached under ~/.cache/modelscope_handkp).  Needs the ``tflite`` package (``pip install tflite``).
Existing files are replaced only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelscope_handkp.detection.tflite_convert import VARIANTS, convert_palm_detector  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--variant', choices=[*VARIANTS, 'both'], default='both')
    ap.add_argument('--tflite', default=None, help='path of palm_detection_<variant>.tflite (one variant only)')
    ap.add_argument('--out-dir', default=str(ROOT / 'modelscope_handkp' / 'weights'))
    ap.add_argument('--overwrite', action='store_true', help='replace existing weight files')
    args = ap.parse_args(argv)
    variants = VARIANTS if args.variant == 'both' else (args.variant, )
    if args.tflite and len(variants) > 1:
        ap.error('--tflite converts one file: give --variant full or --variant lite with it')
    if args.tflite and not Path(args.tflite).is_file():
        ap.error(f'--tflite {args.tflite} does not exist: pass the path of palm_detection_{variants[0]}.tflite, '
                 f'or leave --tflite out to fetch it from the mediapipe wheel')
    try:  # before fetching the mediapipe wheel (tens of MB) that it could not read
        import tflite  # noqa: F401
    except ImportError:
        sys.exit('error: converting the palm detector needs the "tflite" package (flatbuffer schema bindings, no '
                 'TensorFlow): pip install "modelscope-handkp[convert]"  (or: pip install "tflite>=2.10")')
    for v in variants:
        try:
            path = convert_palm_detector(args.tflite, args.out_dir, v, overwrite=args.overwrite)
        except (FileExistsError, RuntimeError) as e:  # RuntimeError: the mediapipe wheel could not be fetched
            sys.exit(f'error: {e}')
        print(f'{v}: wrote {path} and {path.with_suffix(".json")}')


if __name__ == '__main__':
    main()
