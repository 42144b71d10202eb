"""The int8 lever of issue 7, measured (not a shipped option): ONNX Runtime static QDQ quantisation.

    python benchmarks/int8_lever.py            # about 3 minutes on 2 cores

1. HRNet-w18 256x256 (reference synthetic weights): the exported fp32 network quantised with
   ``onnxruntime.quantization.quantize_static`` (QDQ, uint8 activations, int8 per-channel weights),
   calibrated on the GT-box crops of ``../shared/data/hands`` (and their mirrors); forward time at
   batch 2 and 8 against the fp32 ONNX Runtime session, and the keypoint change on the reference
   fixtures (``topdown_parity.npz``: eager keypoints vs int8, sharp peaks and all).
2. The bundled starter model quantised the same way, calibrated on 64 crops of the open_hands
   **train** split; PCK / AUC / EPE on eval_hgc with its GT boxes (flip test), fp32 and int8, both
   through ONNX Runtime.  eval_hgc is only reported here, nothing is tuned on it.

The figures go to README ("Performance") and the issue note; they are why int8 is the remaining lever
for the 4-hand goal, and why it is not the default: it changes the numbers.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402
from eval_hgc import load_hands  # noqa: E402
from palm_detector_quality import load_gt  # noqa: E402

from modelscope_handkp.backends import OnnxRuntimeBackend, physical_cores  # noqa: E402
from modelscope_handkp.metrics import keypoint_metrics  # noqa: E402
from modelscope_handkp.transforms import box_to_center_scale, crop_to_tensor  # noqa: E402

DATA = bench.SHARED / 'data'


def gt_box_crops(paths, boxes_xywh, size):
    """Normalised crops [N, 3, s, s], centres and scales of the GT hand boxes."""
    crops, centers, scales = [], [], []
    for path, box in zip(paths, boxes_xywh):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        c, s = box_to_center_scale(np.asarray([box], np.float32), 'xywh', image_size=(size, size))
        crops.append(crop_to_tensor(rgb, c, s, image_size=(size, size)))
        centers.append(c)
        scales.append(s)
    return torch.cat(crops), np.concatenate(centers), np.concatenate(scales)


def quantize(fp32_path: Path, out: Path, calibration: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{'crops': calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    pre = out.with_suffix('.pre.onnx')
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return out


def ms(fn, repeats=5) -> float:
    """Median milliseconds of ``fn()`` (benchmarks/run.py's timer, one warm-up run)."""
    return 1e3 * bench.timed(fn, repeats, warmup=1)['median']


def with_mirrors(x: torch.Tensor) -> np.ndarray:
    return torch.cat([x, x.flip(-1)]).numpy()


def hand_fixture_boxes():
    """(image paths, GT boxes xywh [N, 4]) of every hand in ../shared/data/hands."""
    paths, boxes = [], []
    for ann in sorted((DATA / 'hands').glob('*/*.json')):
        for path, hands in load_gt(ann, ann.parent).items():
            for xyxy, _ in hands:
                paths.append(path)
                boxes.append(np.r_[xyxy[:2], xyxy[2:] - xyxy[:2]])
    return paths, np.asarray(boxes, np.float32)


def missing_prerequisites() -> list[str]:
    """What this benchmark needs and does not find: the [onnx] extra and the files of ``../shared``."""
    missing = [f'the {m} package (pip install "modelscope-handkp[onnx]")' for m in ('onnx', 'onnxruntime')
               if importlib.util.find_spec(m) is None]
    for path in (bench.REFERENCE / 'hrnet_w18_hand_manifest.json', bench.REFERENCE / 'topdown_parity.npz',
                 DATA / 'hands', DATA / 'open_hands' / 'annotations' / 'train.json'):
        if not path.exists():
            missing.append(str(path))
    return missing


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    missing = missing_prerequisites()
    if missing:
        sys.exit('error: int8_lever.py needs ' + '; '.join(missing) + ' (set HANDKP_SHARED to the shared folder '
                 'if it is not ../shared)')
    torch.set_num_threads(physical_cores())
    with tempfile.TemporaryDirectory(prefix='handkp-int8-') as tmp:  # the quantised graphs (~55 MB)
        measure(Path(tmp))


def measure(tmp: Path):
    out = {}

    # 1. HRNet-w18 with the reference weights
    model, weights = bench.load_model()
    fp32 = OnnxRuntimeBackend(model)
    paths, boxes = hand_fixture_boxes()
    calib, _, _ = gt_box_crops(paths, boxes, 256)
    int8 = OnnxRuntimeBackend(model, onnx_path=quantize(fp32.onnx_path, tmp / 'w18_int8.onnx', with_mirrors(calib)))
    print(f'HRNet-w18 256x256 ({weights}); int8 calibrated on {len(calib)} GT-box crops of data/hands + mirrors')
    for b in (2, 8):
        x = torch.randn(b, 3, 256, 256, generator=torch.Generator().manual_seed(b))
        t32, t8 = ms(lambda: fp32._net(x)), ms(lambda: int8._net(x))
        out[f'w18/b{b}'] = {'fp32_ms': t32, 'int8_ms': t8, 'speedup': t32 / t8}
        print(f'  forward batch {b}: fp32 {t32:7.1f} ms, int8 {t8:7.1f} ms ({t32 / t8:.2f}x)')
    ref = np.load(bench.REFERENCE / 'topdown_parity.npz')
    x = torch.from_numpy(ref['input_tensor'])
    hm = int8.heatmaps(x, flip_test=True)
    coords, _ = int8._decode(hm, ref['centers'], ref['scales'], None)
    sharp, n_sharp, all_max = bench.well_conditioned_diff(coords, ref['keypoints'][..., :2],
                                                          torch.from_numpy(ref['heatmaps_flip_avg']))
    ref_hm = torch.from_numpy(ref['heatmaps_flip_avg'])
    rel = float((hm - ref_hm).abs().max() / ref_hm.abs().max())
    out['w18/fixtures'] = {'max_diff_px_sharp': sharp, 'sharp_keypoints': n_sharp, 'max_diff_px_all': all_max,
                           'heatmap_rel_diff': rel}
    print(f'  fixtures (random weights): heatmaps differ by {rel:.1%} of their maximum; keypoints {sharp:.2f} px '
          f'(max over {n_sharp} sharp peaks), {all_max:.1f} px over all')

    # 2. the starter model on eval_hgc
    import modelscope_handkp
    from modelscope_handkp.datasets.coco_wholebody_hand import load_coco_wholebody_hands
    from modelscope_handkp.modelscope_model import HandKeypointsModel
    net = HandKeypointsModel(modelscope_handkp.starter_model_dir()).hand_model.eval()
    size = int(net.input_size[0])
    rec = load_coco_wholebody_hands(DATA / 'open_hands' / 'annotations' / 'train.json', None)
    idx = np.linspace(0, len(rec) - 1, 64).round().astype(int)
    calib, _, _ = gt_box_crops([rec.image_files[i] for i in idx], rec.boxes[idx], size)
    s32 = OnnxRuntimeBackend(net)
    s8 = OnnxRuntimeBackend(net, onnx_path=quantize(s32.onnx_path, tmp / 'starter_int8.onnx', with_mirrors(calib)))
    hgc = DATA / 'eval_hgc'
    if hgc.is_dir():
        paths, gt, vis, boxes = load_hands(hgc)
        crops, centers, scales = gt_box_crops(paths, boxes, size)
        for name, b in (('fp32', s32), ('int8', s8)):
            coords, _ = b.predict(crops, centers, scales, flip_test=True)
            m = keypoint_metrics(coords, gt, vis, boxes)
            out[f'starter/eval_hgc/{name}'] = m
            print(f'starter model {name}, eval_hgc GT boxes (flip): PCK {m["PCK"]:.4f} AUC {m["AUC"]:.4f} '
                  f'EPE {m["EPE"]:.2f} px')
        x = crops[:1]
        t32, t8 = ms(lambda: s32.heatmaps(x, True), 9), ms(lambda: s8.heatmaps(x, True), 9)
        out['starter/b2'] = {'fp32_ms': t32, 'int8_ms': t8}
        print(f'  starter forward, one hand with flip: fp32 {t32:.1f} ms, int8 {t8:.1f} ms')
    print(json.dumps(out, default=float))


if __name__ == '__main__':
    main()
