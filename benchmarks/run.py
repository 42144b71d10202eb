"""CPU performance figures of issue 7, printed from one run.

    python benchmarks/run.py                 # everything (about 3-5 minutes on 2 cores)
    python benchmarks/run.py --quick         # fewer repeats
    python benchmarks/run.py --levers        # also the variants we tried (channels_last off, ORT levels, ...)
    python benchmarks/run.py --json out.json # the figures as JSON too

Figures:

1. machine: CPU model, cores, library versions, threads, load average before and after;
2. fp32 GEMM throughput (a large ``torch.matmul``), the yardstick of this machine;
3. HRNet-w18 256x256 forward, per backend: ms per crop and GFLOP/s (FLOPs counted once with
   ``torch.utils.flop_counter``: convolutions and matrix products, 2 per multiply-add), as a
   fraction of the GEMM throughput, for the batches one hand and four hands make with flip test;
4. end to end, image -> keypoints (box -> center/scale, crop, normalise, network, decode) for 1 and
   4 hands, flip test on and off, per backend and for ``benchmarks/original_like.py`` (the
   original's structure: per-crop preprocessing, a second forward for the mirrored crops,
   per-keypoint Python loops); the speed-up over it and the largest keypoint difference;
5. decoding 64 hands x 21 keypoints: the per-keypoint loop vs the vectorised decoders;
6. peak memory (``VmHWM``, the high-water resident set) of a fresh process that runs detector + keypoints on one
   1920x1080 image, per backend.

Timings are medians of several runs after warm-up.  Keypoint differences are reported for
keypoints whose heatmap peak is sharp enough for a sub-pixel comparison (curvature >= 0.002 /px^2,
see tests/test_backends.py); with random weights a few flat peaks amplify float32 rounding.
The model uses the reference's synthetic weights when ``../shared`` is present, else random ones
(the same speed).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
SHARED = Path(os.environ.get('HANDKP_SHARED', ROOT.parent / 'shared')).resolve()
REFERENCE = SHARED / 'reference'
MIN_CURVATURE = 0.002


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def timed(fn, repeats: int, warmup: int = 2) -> dict:
    """Median / min / max seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return dict(median=statistics.median(times), min=min(times), max=max(times), runs=repeats)


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    import cv2

    out = dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__, opencv=cv2.__version__)
    for name in ('onnxruntime', 'openvino', 'onnx'):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            out[name] = 'not installed'
    return out


def load_model():
    """(model, where its weights come from)."""
    from modelscope_handkp.checkpoint import load_checkpoint
    from modelscope_handkp.models import build_hand_model

    model = build_hand_model()
    manifest = REFERENCE / 'hrnet_w18_hand_manifest.json'
    if manifest.exists():
        sys.path.insert(0, str(REFERENCE))
        import synth_weights as sw

        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in sw.synth_state_dict(sw.load_manifest(manifest)).items()}
        load_checkpoint(model, sd)
        return model.eval(), 'reference synthetic weights'
    torch.manual_seed(0)
    return model.eval(), 'random weights (../shared not found)'


def test_image(width=1280, height=720):
    """An RGB photo from ../shared/data/hands if present, else a smooth synthetic image."""
    import cv2

    folder = SHARED / 'data' / 'hands'
    if folder.is_dir():
        for path in sorted(folder.rglob('*')):
            if path.suffix.lower() in ('.jpg', '.jpeg', '.png'):
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is not None:
                    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), str(path.relative_to(SHARED))
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), f'synthetic {width}x{height}'


def hand_boxes(image, count: int) -> np.ndarray:
    """``count`` plausible hand boxes (x1, y1, x2, y2) spread over the image."""
    h, w = image.shape[:2]
    size = 0.22 * min(h, w)
    centres = [(0.3, 0.35), (0.7, 0.35), (0.3, 0.7), (0.7, 0.7)]
    boxes = [[cx * w - size / 2, cy * h - size / 2, cx * w + size / 2, cy * h + size * 0.6]
             for cx, cy in centres[:count]]
    return np.asarray(boxes, np.float32)


def realistic_heatmaps(n: int, k: int = 21, seed: int = 0):
    """Heatmaps like a trained sigma-3 model's: sub-pixel Gaussians plus a little noise."""
    from modelscope_handkp.codec import HeatmapCodec

    rng = np.random.default_rng(seed)
    kp = rng.uniform(16, 240, (n, k, 2)).astype(np.float32)
    target, _ = HeatmapCodec(unbiased_encoding=True, sigma=3.0).encode(kp, np.ones((n, k)))
    target = target * rng.uniform(0.4, 1.0, (n, k, 1, 1)).astype(np.float32)
    target += rng.normal(0, 0.01, target.shape).astype(np.float32)
    centers = rng.uniform(200, 1000, (n, 2)).astype(np.float32)
    scales = np.repeat(rng.uniform(0.5, 2.0, (n, 1)), 2, axis=1).astype(np.float32)
    return target.astype(np.float32), centers, scales


def well_conditioned_diff(a, b, heatmaps) -> tuple[float, int, float]:
    """(max |a - b| px over sharp peaks, how many keypoints that is, max over all)."""
    from modelscope_handkp.decode_torch import peak_curvature

    hm = heatmaps if isinstance(heatmaps, torch.Tensor) else torch.from_numpy(np.asarray(heatmaps))
    well = peak_curvature(hm).numpy() >= MIN_CURVATURE
    d = np.abs(np.asarray(a) - np.asarray(b)).max(-1)
    return (float(d[well].max()) if well.any() else 0.0), int(well.sum()), float(d.max())


def fmt_ms(t: dict) -> str:
    return f"{t['median'] * 1e3:8.1f}"


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def gemm_gflops(repeats: int, n: int = 2048) -> dict:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    t = timed(lambda: torch.matmul(a, b), repeats)
    return dict(n=n, seconds=t, gflops=2 * n**3 / t['median'] / 1e9)


def count_flops(model) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *reversed(model.input_size)))
    return int(counter.get_total_flops())


def build_backends(model, kinds, threads):
    from modelscope_handkp.backends import make_backend

    built = {}
    for kind in kinds:
        try:
            t0 = time.perf_counter()
            built[kind] = make_backend(model, kind, num_threads=threads)
            built[kind].build_seconds = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            print(f'  [{kind}] unavailable: {type(e).__name__}: {e}')
    return built


def forward_section(model, built, flops, gemm, repeats) -> dict:
    out = {}
    h, w = model.input_size[1], model.input_size[0]
    print(f'\n== HRNet-w18 {w}x{h} forward (FLOPs per crop: {flops / 1e9:.3f} G; GEMM {gemm:.1f} GFLOP/s) ==')
    print(f"{'backend':<14}{'batch':>6}{'ms/crop':>10}{'GFLOP/s':>10}{'% GEMM':>9}")
    for kind, backend in built.items():
        for batch in (2, 8):
            x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                t = timed(lambda: backend._net(x), repeats)
            gf = flops * batch / t['median'] / 1e9
            out[f'{kind}/b{batch}'] = dict(seconds=t, ms_per_crop=t['median'] * 1e3 / batch, gflops=gf,
                                           fraction_of_gemm=gf / gemm)
            print(f'{kind:<14}{batch:>6}{t["median"] * 1e3 / batch:>10.1f}{gf:>10.1f}{100 * gf / gemm:>8.1f}%')
    best = max(out.items(), key=lambda kv: kv[1]['gflops'])
    print(f'fastest: {best[0]} at {best[1]["gflops"]:.1f} GFLOP/s = {100 * best[1]["fraction_of_gemm"]:.1f} % of GEMM '
          f'(goal >= 60 %)')
    return out


def end_to_end_section(model, built, repeats) -> dict:
    from original_like import predict_original_like

    from modelscope_handkp.transforms import box_to_center_scale, crop_to_tensor

    image, source = test_image()
    size = tuple(model.input_size)
    print(f'\n== end to end: image ({source}, {image.shape[1]}x{image.shape[0]}) + boxes -> keypoints ==')
    out = {}
    rows = {}
    for hands in (1, 4):
        centers, scales = box_to_center_scale(hand_boxes(image, hands), 'xyxy', image_size=size)
        for flip in (True, False):
            key = f'{hands}h/{"flip" if flip else "noflip"}'

            def baseline():
                return predict_original_like(model, image, centers, scales, flip_test=flip)

            tb = timed(baseline, repeats, warmup=1)
            ref = baseline()
            rows.setdefault('original-like', {})[key] = tb['median']
            out[f'original-like/{key}'] = dict(seconds=tb)
            with torch.no_grad():
                ref_hm = built['eager'].heatmaps(crop_to_tensor(image, centers, scales, size), flip) \
                    if 'eager' in built else None
            for kind, backend in built.items():
                def ours():
                    crops = crop_to_tensor(image, centers, scales, size)
                    return backend.predict(crops, centers, scales, flip_test=flip)

                t = timed(ours, repeats)
                coords, _ = ours()
                entry = dict(seconds=t, speedup=tb['median'] / t['median'])
                if ref_hm is not None:
                    well_max, n_well, all_max = well_conditioned_diff(coords, ref[0], ref_hm)
                    entry.update(max_diff_px_sharp=well_max, sharp_keypoints=n_well, max_diff_px_all=all_max)
                out[f'{kind}/{key}'] = entry
                rows.setdefault(kind, {})[key] = t['median']
    keys = ['1h/flip', '4h/flip', '1h/noflip', '4h/noflip']
    print(f"{'ms (speed-up)':<16}" + ''.join(f'{k:>20}' for k in keys))
    for kind, vals in rows.items():
        cells = []
        for k in keys:
            base = rows['original-like'][k]
            cells.append(f'{vals[k] * 1e3:9.1f} ({base / vals[k]:4.2f}x)')
        print(f'{kind:<16}' + ''.join(f'{c:>20}' for c in cells))
    diffs = [(k, v) for k, v in out.items() if 'max_diff_px_sharp' in v]
    if diffs:
        worst = max(v['max_diff_px_sharp'] for _, v in diffs)
        print(f'keypoints vs original-like: max |diff| {worst:.2e} px over sharp peaks '
              f'({diffs[0][1]["sharp_keypoints"]}+ keypoints per case; all keypoints: '
              f'{max(v["max_diff_px_all"] for _, v in diffs):.2e} px, random-weight flat peaks)')
    return out


def decode_section(repeats) -> dict:
    from original_like import keypoints_from_heatmaps_loop

    from modelscope_handkp import codec, decode_torch

    hm, centers, scales = realistic_heatmaps(64)
    th, tc, ts = torch.from_numpy(hm), torch.from_numpy(centers), torch.from_numpy(scales)
    print('\n== decoding 64 hands x 21 keypoints (DARK, kernel 11) ==')
    loop = timed(lambda: keypoints_from_heatmaps_loop(hm, centers, scales), max(3, repeats // 2), warmup=1)
    ref, _ = keypoints_from_heatmaps_loop(hm, centers, scales)
    out = {'loop': dict(seconds=loop)}
    print(f"{'decoder':<34}{'ms':>9}{'vs loop':>9}{'max |diff| px':>15}")
    print(f"{'per-keypoint loop (original-like)':<34}{loop['median'] * 1e3:>9.2f}{'1.00x':>9}{0.0:>15.1e}")
    cases = {
        'decode_torch local (fast backends)': lambda: decode_torch.decode_heatmaps(th, tc, ts, blur='local'),
        'codec.decode_heatmaps (eager)': lambda: codec.decode_heatmaps(hm, centers, scales),
        'decode_torch full (ONNX graph)': lambda: decode_torch.decode_heatmaps(th, tc, ts, blur='full'),
    }
    for name, fn in cases.items():
        t = timed(fn, repeats)
        coords = fn()[0]
        coords = coords.numpy() if isinstance(coords, torch.Tensor) else coords
        diff = float(np.abs(coords - ref).max())
        out[name] = dict(seconds=t, speedup=loop['median'] / t['median'], max_diff_px=diff)
        print(f"{name:<34}{t['median'] * 1e3:>9.2f}{loop['median'] / t['median']:>8.1f}x{diff:>15.1e}")
    return out


MEMORY_CHILD = r'''
import resource, sys, time
import numpy as np, torch
sys.path.insert(0, {here!r})
import run as bench
kind, threads = {kind!r}, {threads!r}
torch.set_num_threads(threads)
from modelscope_handkp.backends import make_backend
from modelscope_handkp.transforms import box_to_center_scale, crop_to_tensor
model, _ = bench.load_model()
detector = None
try:
    from modelscope_handkp.detection import build_hand_detector
    cfg = bench.REFERENCE / 'official_like_model' / 'detection' / 'config.py'
    if cfg.exists():
        detector = build_hand_detector(cfg)
    else:
        from modelscope_handkp.detection.ssdlite import default_model_cfg
        detector = build_hand_detector(default_model_cfg())
except Exception as e:
    print('detector unavailable:', e, file=sys.stderr)
backend = make_backend(model, kind, num_threads=threads)
rng = np.random.default_rng(0)
image = np.ascontiguousarray(np.broadcast_to(rng.integers(0, 256, (1, 1920, 3), dtype=np.uint8), (1080, 1920, 3)))
if detector is not None:
    detector.detect_hands(image)
boxes = bench.hand_boxes(image, 4)
c, s = box_to_center_scale(boxes, 'xyxy', image_size=tuple(model.input_size))
for _ in range(2):
    coords, scores = backend.predict(crop_to_tensor(image, c, s, tuple(model.input_size)), c, s, flip_test=True)
print(bench.peak_rss_kib())
'''


def peak_rss_kib() -> int:
    """Peak resident memory of this process in KiB: ``VmHWM`` of /proc/self/status on Linux.

    Not ``ru_maxrss``: Linux keeps it across ``execve``, so a child started by a large process reports
    its parent's peak (the first version of this benchmark printed the parent's 1.2 GiB for every child)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_section(kinds, threads) -> dict:
    print('\n== peak memory (VmHWM of a fresh process: detector + 4 hands with flip test, 1920x1080 image) ==')
    out = {}
    base = subprocess.run([sys.executable, '-c', f'import sys; sys.path.insert(0, {str(HERE)!r}); import torch, numpy, cv2; '
                           'import modelscope_handkp.backends, run; print(run.peak_rss_kib())'],
                          capture_output=True, text=True, cwd=str(ROOT))
    if base.returncode == 0:
        out['imports only'] = int(base.stdout.split()[-1]) / 1024
        print(f"{'imports only':<14}{out['imports only']:>8.0f} MiB")
    for kind in kinds:
        code = MEMORY_CHILD.format(here=str(HERE), kind=kind, threads=threads)
        proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=str(ROOT))
        if proc.returncode != 0:
            print(f'{kind:<14} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}')
            continue
        mib = int(proc.stdout.split()[-1]) / 1024
        out[kind] = mib
        print(f'{kind:<14}{mib:>8.0f} MiB   (goal < 1024 MiB)')
    return out


def levers_section(model, threads, flops, gemm, repeats) -> dict:
    """The variants we evaluated, forward only, one hand with flip test (batch 2)."""
    from modelscope_handkp.backends import make_backend

    print('\n== levers (forward, batch 2 = one hand with flip test) ==')
    h, w = model.input_size[1], model.input_size[0]
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(2))
    variants = [
        ('eager (BN, NCHW)', dict(kind='eager')),
        ('fused, NCHW', dict(kind='fused', channels_last=False)),
        ('fused, channels_last', dict(kind='fused')),
        ('onnxruntime, basic opt', dict(kind='onnxruntime', optimization='basic')),
        ('onnxruntime, all opt', dict(kind='onnxruntime')),
        ('onnxruntime, no spinning', dict(kind='onnxruntime', spinning=False)),
        ('onnxruntime, 1 thread', dict(kind='onnxruntime', num_threads=1)),
        ('openvino (1 stream per core)', dict(kind='openvino')),
        ('openvino, 1 stream (latency)', dict(kind='openvino', streams=1)),
        ('openvino, 1 thread', dict(kind='openvino', num_threads=1)),
    ]
    out = {}
    for name, opts in variants:
        opts = dict(opts)
        kind = opts.pop('kind')
        n = opts.pop('num_threads', threads)
        try:
            backend = make_backend(model, kind, num_threads=n, **opts)
        except Exception as e:  # noqa: BLE001
            print(f'{name:<28} unavailable ({type(e).__name__})')
            continue
        with torch.no_grad():
            t = timed(lambda: backend._net(x), repeats)
        gf = flops * 2 / t['median'] / 1e9
        out[name] = dict(seconds=t, gflops=gf, fraction_of_gemm=gf / gemm)
        print(f'{name:<28}{t["median"] * 1e3 / 2:>8.1f} ms/crop {gf:>7.1f} GFLOP/s {100 * gf / gemm:>6.1f} % GEMM')
        del backend
        gc.collect()
    torch.set_num_threads(threads)
    return out


# ---------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='3 repeats instead of 7')
    parser.add_argument('--repeats', type=int, default=None)
    parser.add_argument('--threads', type=int, default=None, help='threads (default: the cores of this process)')
    parser.add_argument('--backends', default='eager,fused,onnxruntime,openvino')
    parser.add_argument('--levers', action='store_true', help='also time the variants we evaluated')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
    parser.add_argument('--json', default=None, help='write all figures to this JSON file')
    args = parser.parse_args(argv)

    from modelscope_handkp.backends import AUTO_ORDER, KINDS, available_backends, physical_cores

    kinds = [k.strip() for k in args.backends.split(',') if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f'--backends {args.backends!r}: ' + (f'unknown kind(s) {", ".join(unknown)}' if unknown else
                                                          'no kind given') +
                     f'; give a comma-separated list of {", ".join(KINDS)}')
    if args.repeats is not None and args.repeats < 1:
        parser.error(f'--repeats must be at least 1, got {args.repeats}')
    if args.threads is not None and args.threads < 0:
        parser.error(f'--threads must be at least 1 (0: the default), got {args.threads}')
    repeats = args.repeats or (3 if args.quick else 7)
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    results = {}

    load_before = os.getloadavg()
    machine = dict(cpu=cpu_model(), cores=physical_cores(), logical_cpus=os.cpu_count(), threads=threads,
                   torch_cpu_capability=torch.backends.cpu.get_cpu_capability(), versions=versions(),
                   load_average_before=load_before, available_backends=available_backends(),
                   auto_order=list(AUTO_ORDER))
    print('== machine ==')
    print(f"CPU: {machine['cpu']} ({machine['cores']} cores available, {machine['logical_cpus']} logical), "
          f"torch ISA {machine['torch_cpu_capability']}")
    print('versions: ' + ', '.join(f'{k} {v}' for k, v in machine['versions'].items()))
    print(f'threads: torch {torch.get_num_threads()}, ONNX Runtime / OpenVINO intra-op {threads}; '
          f'load average before: {" ".join(f"{v:.2f}" for v in load_before)}; repeats {repeats} (median)')

    model, weights = load_model()
    print(f'model: HRNet-w18 256x256, {weights}')
    gemm = gemm_gflops(repeats)
    results['gemm'] = gemm
    print(f"\n== fp32 GEMM ({gemm['n']}x{gemm['n']} @ {gemm['n']}x{gemm['n']}, torch.matmul): "
          f"{gemm['gflops']:.1f} GFLOP/s ==")
    flops = count_flops(model)
    results['flops_per_crop'] = flops

    built = build_backends(model, kinds, threads)
    if not built:
        sys.exit(f'error: none of the backends {kinds} could be built (see above); install the extra named there '
                 'or pass --backends eager,fused')
    for kind, backend in built.items():
        print(f'  built {kind:<12} in {backend.build_seconds:6.2f} s')
    results['forward'] = forward_section(model, built, flops, gemm['gflops'], repeats)
    results['end_to_end'] = end_to_end_section(model, built, repeats)
    results['decode'] = decode_section(repeats)
    if args.levers:
        results['levers'] = levers_section(model, threads, flops, gemm['gflops'], repeats)
    del built
    gc.collect()
    if not args.no_memory:
        results['peak_memory_mib'] = memory_section(kinds, threads)

    machine['load_average_after'] = os.getloadavg()
    results['machine'] = machine
    print(f'\nload average after: {" ".join(f"{v:.2f}" for v in machine["load_average_after"])} '
          f'(timings are only comparable on an otherwise idle machine)')
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
        print(f'figures written to {args.json}')
    return results


if __name__ == '__main__':
    main()
