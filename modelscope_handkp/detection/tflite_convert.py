"""Convert MediaPipe's palm detector (``palm_detection_{full,lite}.tflite``) to PyTorch weights.

The ``.tflite`` files ship inside the ``mediapipe==0.10.21`` wheel on PyPI.  This module

1. fetches them when no path is given (``pip download mediapipe==0.10.21 --no-deps`` into a
   temporary folder, then the file is read out of the wheel; the result is cached under
   ``~/.cache/modelscope_handkp/mediapipe-0.10.21/``);
2. parses the flatbuffer with the small ``tflite`` package (schema bindings only: no
   TensorFlow, no MediaPipe), dequantizes the float16 constants to float32;
3. checks the graph op by op against :class:`~modelscope_handkp.detection.palm.BlazePalm`
   (same layer kinds, shapes, strides, paddings, no fused activations) and writes
   ``palm_detection_{variant}.pt`` (a plain dict of float32 tensors, loadable with
   ``torch.load(..., weights_only=True)``) and ``palm_detection_{variant}.json`` (where every
   tensor came from).

Layout conversions: TFLite ``CONV_2D`` weights are ``[out, kh, kw, in]`` -> PyTorch
``[out, in, kh, kw]``; ``DEPTHWISE_CONV_2D`` weights ``[1, kh, kw, C]`` -> ``[C, 1, kh, kw]``;
``PRELU`` alphas ``[1, 1, C]`` -> ``[C]``.

Run ``python tools/convert_palm_detector.py`` to regenerate the weights shipped in
``modelscope_handkp/weights``.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import partial_path

__all__ = ['MEDIAPIPE_VERSION', 'TFLITE_SHA256', 'VARIANTS', 'fetch_palm_tflite', 'read_tflite',
           'tflite_to_state_dict', 'convert_palm_detector', 'default_cache_dir', 'TFLiteGraph']

MEDIAPIPE_VERSION = '0.10.21'
VARIANTS = ('full', 'lite')
WHEEL_MEMBER = 'mediapipe/modules/palm_detection/palm_detection_{variant}.tflite'
# sha256 of the files inside the mediapipe 0.10.21 wheels (checked on the manylinux x86_64 cp311 wheel)
TFLITE_SHA256 = {
    'full': '1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54',
    'lite': 'e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18',
}
# a wheel that exists for sure, used when pip finds none for this interpreter/platform
_FALLBACK_WHEEL_TAGS = ['--platform', 'manylinux_2_28_x86_64', '--python-version', '3.11',
                        '--implementation', 'cp', '--abi', 'cp311', '--only-binary=:all:']

_SUPPORTED_OPS = {'DEQUANTIZE', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'PRELU', 'ADD', 'MAX_POOL_2D', 'PAD',
                  'RESIZE_BILINEAR', 'RESHAPE', 'CONCATENATION'}


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def default_cache_dir() -> Path:
    """``$MODELSCOPE_HANDKP_CACHE`` or ``$XDG_CACHE_HOME/modelscope_handkp`` (``~/.cache/...``)."""
    env = os.environ.get('MODELSCOPE_HANDKP_CACHE')
    if env:
        return Path(env).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'modelscope_handkp'


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _pip_download(dest: Path, extra_args=()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, '-m', 'pip', 'download', f'mediapipe=={MEDIAPIPE_VERSION}', '--no-deps',
           '--disable-pip-version-check', '-q', '-d', str(dest), *extra_args]
    return subprocess.run(cmd, capture_output=True, text=True)


def fetch_palm_tflite(variant: str = 'full', cache_dir=None) -> Path:
    """Path of ``palm_detection_{variant}.tflite`` from the ``mediapipe==0.10.21`` wheel.

    Uses the cached copy when present; otherwise runs ``pip download mediapipe==0.10.21
    --no-deps`` into a temporary folder (PyPI must be reachable), extracts both variants
    into the cache and deletes the wheel.  Raises ``RuntimeError`` when the download fails.
    """
    _check_variant(variant)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache = cache / f'mediapipe-{MEDIAPIPE_VERSION}'
    target = cache / f'palm_detection_{variant}.tflite'
    if target.is_file() and _sha256(target) == TFLITE_SHA256[variant]:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='handkp_mediapipe_') as tmp:
        tmp = Path(tmp)
        proc = _pip_download(tmp)
        wheels = sorted(tmp.glob('mediapipe-*.whl'))
        if proc.returncode != 0 or not wheels:
            # no wheel for this interpreter / platform: the model files are the same in all wheels
            proc2 = _pip_download(tmp, _FALLBACK_WHEEL_TAGS)
            wheels = sorted(tmp.glob('mediapipe-*.whl'))
            if proc2.returncode != 0 or not wheels:
                raise RuntimeError(
                    f'could not download the mediapipe=={MEDIAPIPE_VERSION} wheel from PyPI to get '
                    f'the palm detector ({proc.stderr.strip()[-400:] or proc2.stderr.strip()[-400:]}). '
                    f'Check the network / pip configuration, or pass the path of '
                    f'palm_detection_{variant}.tflite explicitly.')
        with zipfile.ZipFile(wheels[0]) as zf:
            for v in VARIANTS:
                member = WHEEL_MEMBER.format(variant=v)
                try:
                    data = zf.read(member)
                except KeyError:
                    raise RuntimeError(f'{wheels[0].name} has no {member}') from None
                part = cache / f'.palm_detection_{v}.tflite.part'
                part.write_bytes(data)
                os.replace(part, cache / f'palm_detection_{v}.tflite')
    digest = _sha256(target)
    if digest != TFLITE_SHA256[variant]:
        warnings.warn(f'{target} has sha256 {digest}, not the expected {TFLITE_SHA256[variant]} '
                      f'of mediapipe {MEDIAPIPE_VERSION}; converting it anyway.')
    return target


# ----------------------------------------------------------------------------------------------
# flatbuffer reading
# ----------------------------------------------------------------------------------------------
@dataclass
class TFLiteOp:
    index: int
    type: str
    inputs: list
    outputs: list
    options: dict = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """The parts of a ``.tflite`` model the converter needs (first subgraph only)."""

    ops: list            # TFLiteOp, execution order, DEQUANTIZE ops folded away
    names: dict          # tensor index -> name
    shapes: dict         # tensor index -> tuple
    constants: dict      # tensor index -> float32 / int32 ndarray (fp16 dequantized)
    inputs: list
    outputs: list
    sha256: str = ''
    alias: dict = field(default_factory=dict)  # dequantized tensor -> its float16 source

    def const(self, index: int) -> np.ndarray:
        if index not in self.constants:
            raise ValueError(f'tensor {index} ({self.names.get(index)}) is not a constant')
        return self.constants[index]


def _import_tflite():
    try:
        import tflite  # noqa: F401  (flatbuffer schema bindings, pip package "tflite")
    except ImportError as e:
        raise ImportError(
            'converting the palm detector needs the small "tflite" package (flatbuffer schema '
            'bindings, no TensorFlow): pip install "tflite>=2.10"  (or: pip install '
            '"modelscope-handkp[convert]")') from e
    return tflite


def _enum_names(cls) -> dict:
    return {v: k for k, v in vars(cls).items() if not k.startswith('_') and isinstance(v, int)}


_PADDING = {0: 'SAME', 1: 'VALID'}


def read_tflite(path) -> TFLiteGraph:
    """Parse a ``.tflite`` file into a :class:`TFLiteGraph` (float16 weights -> float32)."""
    tflite = _import_tflite()
    path = Path(path)
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b'TFL3':  # every TFLite flatbuffer carries this file identifier
        raise ValueError(f'{path} is not a TFLite model (no TFL3 flatbuffer identifier); pass MediaPipe\'s '
                         'palm_detection_full.tflite (or _lite), e.g. from the mediapipe 0.10.21 wheel.')
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f'{path}: expected one subgraph, found {model.SubgraphsLength()}')
    g = model.Subgraphs(0)
    op_names = _enum_names(tflite.BuiltinOperator)
    dtype_names = _enum_names(tflite.TensorType)
    np_dtypes = {'FLOAT32': np.float32, 'FLOAT16': np.float16, 'INT32': np.int32, 'INT64': np.int64,
                 'UINT8': np.uint8, 'INT8': np.int8}

    names, shapes, constants = {}, {}, {}
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        names[i] = t.Name().decode('utf-8', 'replace')
        shapes[i] = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        b = model.Buffers(t.Buffer())
        if b is not None and b.DataLength() > 0:
            dt = dtype_names.get(t.Type())
            if dt not in np_dtypes:
                raise NotImplementedError(f'{path}: constant tensor {names[i]} has type {dt}')
            if t.Quantization() is not None and t.Quantization().ScaleLength() > 0:
                raise NotImplementedError(f'{path}: quantized constant {names[i]} is not supported')
            arr = np.frombuffer(b.DataAsNumpy().tobytes(), dtype=np_dtypes[dt]).reshape(shapes[i])
            constants[i] = arr.astype(np.float32) if dt in ('FLOAT16', 'FLOAT32') else arr.copy()

    ops, alias = [], {}
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), 'UNKNOWN')
        if name == 'CUSTOM':
            name = 'CUSTOM:' + code.CustomCode().decode()
        if name not in _SUPPORTED_OPS:
            raise NotImplementedError(f'{path}: op {name} (#{k}) is not supported by the converter')
        ins = [op.Inputs(i) for i in range(op.InputsLength())]
        outs = [op.Outputs(i) for i in range(op.OutputsLength())]
        if name == 'DEQUANTIZE':  # fp16 weights -> float32: fold into the constant itself
            if ins[0] not in constants:
                raise NotImplementedError(f'{path}: DEQUANTIZE of a non-constant tensor (#{k})')
            constants[outs[0]] = constants[ins[0]]
            alias[outs[0]] = ins[0]
            continue
        ops.append(TFLiteOp(k, name, ins, outs, _read_options(tflite, name, op)))
    graph = TFLiteGraph(ops, names, shapes, constants, [g.Inputs(i) for i in range(g.InputsLength())],
                        [g.Outputs(i) for i in range(g.OutputsLength())], _sha256(path), alias)
    return graph


def _read_options(tflite, name: str, op) -> dict:
    table = op.BuiltinOptions()
    if table is None:
        return {}
    if name == 'CONV_2D':
        o = tflite.Conv2DOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(stride=(o.StrideH(), o.StrideW()), padding=_PADDING[o.Padding()],
                    activation=o.FusedActivationFunction(),
                    dilation=(o.DilationHFactor(), o.DilationWFactor()))
    if name == 'DEPTHWISE_CONV_2D':
        o = tflite.DepthwiseConv2DOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(stride=(o.StrideH(), o.StrideW()), padding=_PADDING[o.Padding()],
                    activation=o.FusedActivationFunction(), depth_multiplier=o.DepthMultiplier(),
                    dilation=(o.DilationHFactor(), o.DilationWFactor()))
    if name == 'MAX_POOL_2D':
        o = tflite.Pool2DOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(stride=(o.StrideH(), o.StrideW()), filter=(o.FilterHeight(), o.FilterWidth()),
                    padding=_PADDING[o.Padding()], activation=o.FusedActivationFunction())
    if name == 'ADD':
        o = tflite.AddOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(activation=o.FusedActivationFunction())
    if name == 'RESIZE_BILINEAR':
        o = tflite.ResizeBilinearOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(align_corners=bool(o.AlignCorners()), half_pixel_centers=bool(o.HalfPixelCenters()))
    if name == 'CONCATENATION':
        o = tflite.ConcatenationOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(axis=o.Axis(), activation=o.FusedActivationFunction())
    return {}


# ----------------------------------------------------------------------------------------------
# graph -> BlazePalm state dict
# ----------------------------------------------------------------------------------------------
def _fail(op: TFLiteOp, graph: TFLiteGraph, msg: str):
    raise ValueError(f'palm detector graph does not match BlazePalm at op #{op.index} {op.type} '
                     f'({graph.names.get(op.outputs[0], "?")}): {msg}')


def tflite_to_state_dict(graph: TFLiteGraph, variant: str = 'full'):
    """(state_dict of float32 torch tensors for ``BlazePalm(variant)``, info dict).

    The BlazePalm layers with parameters (convolutions and PReLUs, in execution order) are
    matched one to one with the graph's ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` / ``PRELU`` ops
    in execution order; kinds, shapes, strides and paddings must agree.  The other ops
    (ADD, MAX_POOL_2D, PAD, RESIZE_BILINEAR, RESHAPE, CONCATENATION) are checked for the
    options BlazePalm's forward assumes.
    """
    import torch
    from torch import nn

    from .palm import BlazePalm

    _check_variant(variant)
    net = BlazePalm(variant)
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]
    param_ops = [op for op in graph.ops if op.type in ('CONV_2D', 'DEPTHWISE_CONV_2D', 'PRELU')]
    if len(layers) != len(param_ops):
        raise ValueError(f'the .tflite has {len(param_ops)} conv/PReLU ops, BlazePalm({variant!r}) '
                         f'has {len(layers)} layers: is this palm_detection_{variant}.tflite?')

    for op in graph.ops:  # options BlazePalm.forward relies on
        act = op.options.get('activation', 0)
        if act:
            _fail(op, graph, f'fused activation {act} is not supported')
        if op.type == 'RESIZE_BILINEAR' and (op.options['align_corners'] or not op.options['half_pixel_centers']):
            _fail(op, graph, 'expected half_pixel_centers=True, align_corners=False')
        if op.type == 'MAX_POOL_2D' and (op.options['stride'] != (2, 2) or op.options['filter'] != (2, 2)):
            _fail(op, graph, 'expected a 2x2 max-pool with stride 2')
        if op.type == 'PAD':
            pads = graph.const(op.inputs[1]).reshape(-1, 2)
            if np.any(pads[:3] != 0) or pads[3, 0] != 0:
                _fail(op, graph, f'expected channel zero-padding at the end only, got {pads.tolist()}')

    state, sources = {}, {}
    for (name, module), op in zip(layers, param_ops):
        if isinstance(module, nn.PReLU):
            if op.type != 'PRELU':
                _fail(op, graph, f'expected PRELU for {name}')
            alpha = graph.const(op.inputs[1]).reshape(-1)
            if alpha.shape != tuple(module.weight.shape):
                _fail(op, graph, f'{name}: alpha shape {alpha.shape} vs {tuple(module.weight.shape)}')
            state[f'{name}.weight'] = alpha
            sources[f'{name}.weight'] = graph.names[graph.alias.get(op.inputs[1], op.inputs[1])]
            continue
        depthwise = module.groups > 1
        expected = 'DEPTHWISE_CONV_2D' if depthwise else 'CONV_2D'
        if op.type != expected:
            _fail(op, graph, f'expected {expected} for {name}')
        if tuple(op.options['stride']) != tuple(module.stride):
            _fail(op, graph, f'{name}: stride {op.options["stride"]} vs {module.stride}')
        if op.options['dilation'] != (1, 1):
            _fail(op, graph, 'dilated convolutions are not supported')
        k = module.kernel_size[0]
        if k > 1 and op.options['padding'] != 'SAME':
            _fail(op, graph, f'{name}: expected SAME padding')
        w = graph.const(op.inputs[1])
        if depthwise:
            if op.options['depth_multiplier'] != 1:
                _fail(op, graph, 'depth multiplier != 1 is not supported')
            w = w.transpose(3, 0, 1, 2)  # [1, kh, kw, C] -> [C, 1, kh, kw]
        else:
            w = w.transpose(0, 3, 1, 2)  # [O, kh, kw, I] -> [O, I, kh, kw]
        if w.shape != tuple(module.weight.shape):
            _fail(op, graph, f'{name}: weight shape {w.shape} vs {tuple(module.weight.shape)}')
        b = graph.const(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else \
            np.zeros(w.shape[0], np.float32)
        if b.shape != tuple(module.bias.shape):
            _fail(op, graph, f'{name}: bias shape {b.shape} vs {tuple(module.bias.shape)}')
        state[f'{name}.weight'] = np.ascontiguousarray(w)
        state[f'{name}.bias'] = np.ascontiguousarray(b)
        sources[f'{name}.weight'] = graph.names[graph.alias.get(op.inputs[1], op.inputs[1])]
        sources[f'{name}.bias'] = graph.names[graph.alias.get(op.inputs[2], op.inputs[2])] \
            if len(op.inputs) > 2 and op.inputs[2] >= 0 else None

    # the outputs must be (regressors [1, 2016, 18], scores [1, 2016, 1]) in the graph's output order
    out_shapes = [graph.shapes[i] for i in graph.outputs]
    if sorted(out_shapes) != sorted([(1, 2016, 18), (1, 2016, 1)]):
        raise ValueError(f'unexpected palm detector outputs {out_shapes}')

    state_t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    net.load_state_dict(state_t, strict=True)  # every key present, every shape right
    info = dict(
        format='modelscope_handkp.palm_detector/1',
        variant=variant,
        source=f'mediapipe=={MEDIAPIPE_VERSION} ' + WHEEL_MEMBER.format(variant=variant),
        tflite_sha256=graph.sha256,
        license='Apache-2.0 (MediaPipe, Copyright The MediaPipe Authors); see modelscope_handkp/NOTICE',
        num_parameters=int(sum(v.numel() for v in state_t.values())),
        tflite_tensors=sources,
    )
    return state_t, info


def convert_palm_detector(tflite_path=None, out_dir='.', variant: str = 'full', overwrite: bool = False,
                          cache_dir=None) -> Path:
    """Convert ``palm_detection_{variant}.tflite`` into ``{out_dir}/palm_detection_{variant}.pt``.

    ``tflite_path``: the ``.tflite`` file; ``None`` fetches it from the ``mediapipe==0.10.21``
    wheel (see :func:`fetch_palm_tflite`).  Also writes ``palm_detection_{variant}.json``
    (provenance: source file, its sha256, which TFLite tensor each weight came from).
    Existing files are only replaced with ``overwrite=True``.  Returns the ``.pt`` path.
    """
    import torch

    _check_variant(variant)
    out_dir = Path(out_dir)
    pt_path = out_dir / f'palm_detection_{variant}.pt'
    json_path = out_dir / f'palm_detection_{variant}.json'
    for p in (pt_path, json_path):
        if p.exists() and not overwrite:
            raise FileExistsError(f'{p} exists; pass overwrite=True (CLI: --overwrite) to replace it')
    _import_tflite()  # before any download: without the parser a fetched wheel is of no use
    if tflite_path is not None and not Path(tflite_path).is_file():
        raise FileNotFoundError(f'{tflite_path} does not exist: pass the path of palm_detection_{variant}.tflite, '
                                f'or no path to fetch it from the mediapipe=={MEDIAPIPE_VERSION} wheel')
    src = Path(tflite_path) if tflite_path is not None else fetch_palm_tflite(variant, cache_dir)
    state, info = tflite_to_state_dict(read_tflite(src), variant)
    if info['tflite_sha256'] != TFLITE_SHA256[variant]:
        warnings.warn(f'{src} is not the palm_detection_{variant}.tflite of mediapipe {MEDIAPIPE_VERSION} '
                      f'(sha256 {info["tflite_sha256"]}); the converted weights will differ from the '
                      f'shipped ones.')
    out_dir.mkdir(parents=True, exist_ok=True)
    # both files are written to temporary names first and renamed only when both are complete: a failure
    # leaves neither half-written files nor a new .pt next to an old .json
    pt_tmp, json_tmp = (partial_path(str(p)) for p in (pt_path, json_path))
    try:
        torch.save(state, pt_tmp)
        Path(json_tmp).write_text(json.dumps(info, indent=1, sort_keys=False) + '\n')
        os.replace(pt_tmp, pt_path)
        os.replace(json_tmp, json_path)
    finally:
        for p in (pt_tmp, json_tmp):
            if os.path.exists(p):
                os.remove(p)
    return pt_path
