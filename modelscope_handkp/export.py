"""ONNX export of the keypoint network (flip test and DARK decoding inside the graph) and of the
SSDLite hand detector (raw head outputs).

Keypoint graph (:func:`export_keypoint_onnx`)::

    inputs   crops      float32 [N, 3, H, W]   normalised RGB crops (transforms.crop_to_tensor)
             centers    float32 [N, 2]         crop centres, image pixels
             scales     float32 [N, 2]         crop sizes / 200 px
             rotations  float32 [N]            (only with ``rotations=True``) crop rotation, degrees
    outputs  keypoints  float32 [N, K, 2]      image pixels
             scores     float32 [N, K, 1]      heatmap peak values

``N`` is dynamic (0 included).  With ``flip_test`` the crops and their mirror images go through
the network as one batch; the mirrored heatmaps are flipped back, shifted one pixel and
averaged, as :meth:`TopDownHandModel.forward_heatmaps`.  Decoding is
:func:`modelscope_handkp.decode_torch.decode_heatmaps` with the full-map blur.  BatchNorm is folded
into the convolutions before export (:mod:`modelscope_handkp.models.fuse`).

Decoder-only graph (:func:`export_decoder_onnx`): ``heatmaps [N, K, h, w]`` + the same geometry
inputs -> ``keypoints``, ``scores``.

Network-only graph (:func:`export_keypoint_net`): ``crops [N, 3, H, W] -> heatmaps [N, K, h, w]``,
what the ONNX Runtime / OpenVINO backends run (flip batching and decoding stay on the host).

Detector graph (:func:`export_detector_onnx`): ``images [N, 3, 320, 320]`` (preprocessed as
``SSDLiteHandDetector.preprocess``) -> ``cls_logits [N, A, C+1]``, ``bbox_deltas [N, A, 4]``; the
anchors, box decoding and NMS stay outside (``detector.anchors()``, ``detector.postprocess``).

Graphs are written with the TorchScript-based exporter (``dynamo=False``; needs only the
``onnx`` package), opset 17, and checked with ``onnx.checker``.  Every graph carries metadata
(``handkp.*`` keys) describing its inputs.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import json
import operator
import os
import stat
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .decode_torch import HeatmapDecoder
from .model_dir import new_file_mode, test_settings
from .models.fuse import fold_batchnorm, is_folded
from .models.topdown import as_hand_network, flip_back_heatmaps
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ['KeypointGraph', 'export_keypoint_onnx', 'export_keypoint_net', 'export_decoder_onnx',
           'export_detector_onnx', 'export_palm_net', 'DEFAULT_OPSET', 'read_metadata']

DEFAULT_OPSET = 17
# Below opset 11 the TorchScript exporter writes graphs that pass onnx.checker but do not compute what
# PyTorch computes: Upsample/Resize without PyTorch's coordinate modes (the HRNet head, BlazePalm's FPN),
# DARK decoding with mistyped nodes that ONNX Runtime refuses.  The SSDLite detector has no such op.
MIN_OPSET = 11
_MIN_DETECTOR_OPSET = 9
FROM_MODEL = 'from_model'  # flip_test / post_process default: the model's test_cfg


class KeypointGraph(nn.Module):
    """crops + crop geometry -> (keypoints, scores): network, flip test and decoding in one module."""

    def __init__(self, model: nn.Module, flip_test: bool | str = FROM_MODEL, post_process: str | None = FROM_MODEL,
                 kernel: int | None = None, fold_bn: bool = True):
        super().__init__()
        model = as_hand_network(model)
        test_cfg = (getattr(model, 'cfg', {}) or {}).get('test_cfg', {}) or {}
        self.net = fold_batchnorm(model) if fold_bn and not is_folded(model) else model.eval()
        self.shift = bool(getattr(model, 'shift_heatmap', test_cfg.get('shift_heatmap', True)))
        model_flip, model_post, model_kernel = test_settings(getattr(model, 'cfg', None))
        self.flip_test = model_flip if isinstance(flip_test, str) and flip_test == FROM_MODEL else bool(flip_test)
        if post_process == FROM_MODEL:
            post_process = model_post
        if post_process in ('none', 'None', False):
            post_process = None
        kernel = model_kernel if kernel is None else int(kernel)
        self.decoder = HeatmapDecoder(post_process, kernel)

    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        if not self.flip_test:
            return self.net(crops)
        n = crops.shape[0]
        both = self.net(torch.cat([crops, crops.flip(-1)], dim=0))
        return 0.5 * (both[:n] + flip_back_heatmaps(both[n:], shift=self.shift))

    def forward(self, crops, centers, scales, rotations=None):
        return self.decoder(self.heatmaps(crops), centers, scales, rotations)


class _NetOnly(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, crops):
        return self.net(crops)


class _DetectorRaw(nn.Module):
    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images):
        return self.detector.forward_raw(images)


@contextlib.contextmanager
def _quiet_export():
    """Silence the exporter's deprecation and tracer warnings (they are about its own internals)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


def _check_target(path, overwrite: bool) -> Path:
    path = Path(path)
    if path.is_dir():  # before the exists() check: overwrite=True cannot help with a folder
        raise IsADirectoryError(f'{path} is a directory; give the path of the .onnx file to write.')
    if path.exists() and not overwrite:
        raise FileExistsError(f'{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it, '
                              'or choose another output path.')
    return path


def _max_opset() -> int | None:
    """The highest opset both the installed TorchScript exporter and the onnx package know (None: unknown)."""
    import onnx
    try:
        from torch.onnx import _constants
        torch_max = int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError, TypeError, ValueError):
        torch_max = None
    onnx_max = int(onnx.defs.onnx_opset_version())
    return onnx_max if torch_max is None else min(torch_max, onnx_max)


def check_opset(opset, minimum: int = MIN_OPSET) -> int:
    """``opset`` as an int, or ValueError (before anything is traced or written) when the graph cannot be
    represented correctly in it or the installed exporter cannot write it."""
    try:
        if isinstance(opset, bool):
            raise TypeError
        opset = operator.index(opset)
    except TypeError:
        raise ValueError(f'opset must be an integer, got {opset!r}') from None
    highest = _max_opset()
    if opset < minimum or highest is not None and opset > highest:
        top = f'{highest}' if highest is not None else 'the highest your torch/onnx support'
        why = (f'below {minimum} the exported graph does not give PyTorch\'s numbers (or cannot be written)'
               if opset < minimum else f'the installed torch {torch.__version__} / onnx exporter writes opsets up '
               f'to {highest}')
        raise ValueError(f'opset {opset} is not supported for this graph ({why}); use an opset from {minimum} to '
                         f'{top} (default {DEFAULT_OPSET}).')
    return opset


# the TorchScript-based exporter: ``dynamo=False`` where the argument exists (torch >= 2.5, where the
# default changes over time); older torch has only that exporter and no such argument
_TORCHSCRIPT_EXPORTER = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}


def _plain_file_mode(path: Path) -> int:
    """The mode of the file being replaced, else what a new file gets under the process umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return new_file_mode()


def _missing_dirs(folder: Path) -> list[Path]:
    """The folders of ``folder`` (itself included) that do not exist yet, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _cpu_module(module: nn.Module) -> nn.Module:
    """``module`` itself when all its tensors are on the CPU, else a CPU copy (the caller's module stays
    where it is): the example inputs are CPU tensors and the graph is written from the CPU."""
    tensors = list(module.parameters()) + list(module.buffers())
    if all(t.device.type == 'cpu' for t in tensors):
        return module
    return copy.deepcopy(module).cpu()


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes,
            metadata: dict, opset: int, static_dims: dict | None = None, overwrite: bool = False) -> Path:
    """Export to a temporary file next to ``path``, check it, add metadata, then move it in place
    (a reader never sees a half-written graph).  The graph is traced in eval mode; the train/eval
    flags of ``module``'s submodules are restored afterwards, and a module on another device is
    exported from a CPU copy.  Folders created for ``path`` are removed again when the export fails;
    without ``overwrite`` a file that appeared at ``path`` meanwhile is never replaced."""
    import onnx

    module = _cpu_module(module)
    modes = [(m, m.training) for m in module.modules()]
    created = _missing_dirs(path.parent)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(suffix='.onnx', prefix='.handkp-export-', dir=str(path.parent))
        except PermissionError as e:
            raise PermissionError(e.errno, f'cannot write {path}: the folder {path.parent} is not writable '
                                  f'({e.strerror}); choose another output path') from e
        os.close(fd)
        module.eval()
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(module, args, tmp, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=opset,
                              do_constant_folding=True, **_TORCHSCRIPT_EXPORTER)
        proto = onnx.load(tmp)
        onnx.checker.check_model(proto)
        for out in proto.graph.output:  # sizes the exporter could not infer (e.g. K after a stack)
            for axis, size in (static_dims or {}).get(out.name, {}).items():
                dim = out.type.tensor_type.shape.dim[axis]
                dim.Clear()
                dim.dim_value = int(size)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key = f'handkp.{key}'
            entry.value = value if isinstance(value, str) else json.dumps(value)
        onnx.save(proto, tmp)
        os.chmod(tmp, _plain_file_mode(path))  # mkstemp makes it private (0600); the graph is a plain file
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_no_replace(tmp, path)
        created = []
    finally:
        for m, training in modes:  # attribute, not .train(): a folded model refuses .train(True)
            m.training = training
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
    return path


def _move_no_replace(tmp: str, path: Path) -> None:
    """Rename ``tmp`` to ``path`` unless ``path`` exists (atomically where the filesystem has hard links)."""
    appeared = FileExistsError(f'{path} appeared while the graph was exported; it is left as it is (pass '
                               'overwrite=True, CLI: --overwrite, to replace it).')
    try:
        os.link(tmp, path)  # fails when path exists, never replaces it
    except FileExistsError:
        raise appeared from None
    except OSError:  # no hard links here (some network / FAT filesystems)
        if os.path.lexists(path):
            raise appeared from None
        os.replace(tmp, path)
    else:
        os.remove(tmp)


def _model_metadata(model: nn.Module) -> dict:
    w, h = (int(v) for v in getattr(model, 'input_size', (256, 256)))
    return dict(input_size=[w, h], heatmap_size=[int(v) for v in getattr(model, 'heatmap_size', (w // 4, h // 4))],
                num_keypoints=int(getattr(model, 'num_keypoints', 21)), color='RGB',
                mean=[float(v) for v in IMAGENET_MEAN], std=[float(v) for v in IMAGENET_STD],
                pixel_scale=1.0 / 255.0, scale_unit_px=200.0)


def export_keypoint_onnx(model: nn.Module, path, flip_test: bool | str = FROM_MODEL, rotations: bool = False,
                         post_process: str | None = FROM_MODEL, kernel: int | None = None, opset: int = DEFAULT_OPSET,
                         overwrite: bool = False) -> Path:
    """Write the keypoint graph (network + flip test + decoding) to ``path``; returns the path.

    ``flip_test``, ``post_process`` (``'unbiased'``, ``'default'`` or ``None`` for plain argmax) and
    ``kernel`` default to the model's ``test_cfg`` (true, 'unbiased', 11), as in the pipeline.  With
    ``rotations`` the graph takes a 4th input, the crop rotations in degrees.
    """
    opset = check_opset(opset)
    path = _check_target(path, overwrite)
    model = as_hand_network(model)
    graph = KeypointGraph(model, flip_test=flip_test, post_process=post_process, kernel=kernel)
    w, h = (int(v) for v in getattr(model, 'input_size', (256, 256)))
    n = 2
    args = [torch.zeros(n, 3, h, w), torch.full((n, 2), 100.0), torch.ones(n, 2)]
    names = ['crops', 'centers', 'scales']
    if rotations:
        args.append(torch.zeros(n))
        names.append('rotations')
    dynamic = {name: {0: 'N'} for name in names + ['keypoints', 'scores']}
    meta = _model_metadata(model)
    meta.update(graph='keypoints', flip_test=graph.flip_test, post_process=graph.decoder.post_process,
                kernel=graph.decoder.kernel, inputs=names, outputs=['keypoints', 'scores'])
    k = int(getattr(model, 'num_keypoints', 21))
    return _export(graph, tuple(args), path, names, ['keypoints', 'scores'], dynamic, meta, opset,
                   static_dims={'keypoints': {1: k, 2: 2}, 'scores': {1: k, 2: 1}}, overwrite=overwrite)


def export_keypoint_net(model: nn.Module, path, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> Path:
    """Write the network alone (``crops -> heatmaps``, BatchNorm folded) to ``path``."""
    opset = check_opset(opset)
    path = _check_target(path, overwrite)
    model = as_hand_network(model)
    net = model if is_folded(model) else fold_batchnorm(model)
    w, h = (int(v) for v in getattr(model, 'input_size', (256, 256)))
    meta = _model_metadata(model)
    meta.update(graph='heatmaps', inputs=['crops'], outputs=['heatmaps'])
    return _export(_NetOnly(net), (torch.zeros(2, 3, h, w), ), path, ['crops'], ['heatmaps'],
                   {'crops': {0: 'N'}, 'heatmaps': {0: 'N'}}, meta, opset, overwrite=overwrite)


def export_decoder_onnx(path, post_process: str | None = 'unbiased', kernel: int = 11, num_keypoints: int = 21,
                        heatmap_size=(64, 64), rotations: bool = False, opset: int = DEFAULT_OPSET,
                        overwrite: bool = False) -> Path:
    """Write the decoding alone (``heatmaps, centers, scales[, rotations] -> keypoints, scores``),
    for runtimes that produce the heatmaps some other way."""
    opset = check_opset(opset)
    path = _check_target(path, overwrite)
    w, h = (int(v) for v in heatmap_size)
    args = [torch.rand(2, num_keypoints, h, w), torch.full((2, 2), 100.0), torch.ones(2, 2)]
    names = ['heatmaps', 'centers', 'scales']
    if rotations:
        args.append(torch.zeros(2))
        names.append('rotations')
    decoder = HeatmapDecoder(post_process, kernel)
    meta = dict(graph='decoder', post_process=post_process, kernel=int(kernel), heatmap_size=[w, h],
                num_keypoints=int(num_keypoints), inputs=names, outputs=['keypoints', 'scores'], scale_unit_px=200.0)
    dynamic = {name: {0: 'N'} for name in names + ['keypoints', 'scores']}
    return _export(decoder, tuple(args), path, names, ['keypoints', 'scores'], dynamic, meta, opset,
                   static_dims={'keypoints': {1: num_keypoints, 2: 2}, 'scores': {1: num_keypoints, 2: 1}},
                   overwrite=overwrite)


def export_detector_onnx(detector: nn.Module, path, opset: int = DEFAULT_OPSET, fold_bn: bool = True,
                         overwrite: bool = False) -> Path:
    """Write the hand detector's network to ``path``: for the SSDLite hand detector
    (:class:`modelscope_handkp.detection.ssdlite.SSDLiteHandDetector`, from ``build_hand_detector``)
    ``images -> cls_logits, bbox_deltas`` (inputs are its preprocessed batches; decode with its
    anchors); for a :class:`~modelscope_handkp.detection.palm.PalmDetector` its network, as
    :func:`export_palm_net` (``fold_bn`` does not apply: the palm network has no BatchNorm).
    """
    from .detection.palm import PalmDetector
    if isinstance(detector, PalmDetector):
        return export_palm_net(detector.model, path, opset=opset, overwrite=overwrite)
    if not isinstance(detector, nn.Module) or not hasattr(detector, 'forward_raw'):
        raise TypeError(f'{type(detector).__name__} is not a hand detector network; export_detector_onnx expects '
                        'the SSDLite hand detector (modelscope_handkp.detection.build_hand_detector) or a '
                        'PalmDetector (build_palm_detector).')
    opset = check_opset(opset, _MIN_DETECTOR_OPSET)
    path = _check_target(path, overwrite)
    net = fold_batchnorm(detector) if fold_bn else detector
    w, h = (int(v) for v in getattr(detector, 'input_size', (320, 320)))
    meta = dict(graph='detector_raw', input_size=[w, h], inputs=['images'], outputs=['cls_logits', 'bbox_deltas'],
                color='RGB', mean=[float(v) for v in detector.pixel_mean.flatten()],
                std=[float(v) for v in detector.pixel_std.flatten()],
                score_thr=float(getattr(detector, 'score_thr', 0.02)),
                nms_iou=float(getattr(detector, 'nms_iou', 0.45)),
                max_det=int(getattr(detector, 'max_det', 200)),
                note='hand score = softmax(cls_logits)[..., 0] (background last); boxes = '
                     'DeltaXYWH decode of bbox_deltas against detector.anchors()')
    dynamic = {'images': {0: 'N'}, 'cls_logits': {0: 'N'}, 'bbox_deltas': {0: 'N'}}
    return _export(_DetectorRaw(net), (torch.zeros(1, 3, h, w), ), path, ['images'], ['cls_logits', 'bbox_deltas'],
                   dynamic, meta, opset, overwrite=overwrite)


def export_palm_net(model: nn.Module, path, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> Path:
    """Write MediaPipe's palm detector network (:class:`~modelscope_handkp.detection.palm.BlazePalm`,
    ``images [N, 3, 192, 192] RGB in [0, 1] -> regressors [N, 2016, 18], scores [N, 2016, 1]``, the raw
    outputs of ``PalmDetector.forward_raw``) to ``path``; decode with ``PalmDetector.postprocess``."""
    opset = check_opset(opset)
    path = _check_target(path, overwrite)
    size = 192
    meta = dict(graph='palm_detector_raw', variant=str(getattr(model, 'variant', 'full')), input_size=[size, size],
                inputs=['images'], outputs=['regressors', 'scores'], color='RGB', mean=[0.0, 0.0, 0.0],
                std=[1.0, 1.0, 1.0], note='images letterboxed to 192x192 and divided by 255; anchors from '
                'modelscope_handkp.detection.palm.palm_anchors()')
    dynamic = {'images': {0: 'N'}, 'regressors': {0: 'N'}, 'scores': {0: 'N'}}
    return _export(model, (torch.zeros(1, 3, size, size), ), path, ['images'], ['regressors', 'scores'],
                   dynamic, meta, opset, overwrite=overwrite)


def read_metadata(path) -> dict:
    """The ``handkp.*`` metadata of an exported graph, JSON values decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out = {}
    for prop in proto.metadata_props:
        if prop.key.startswith('handkp.'):
            try:
                out[prop.key[len('handkp.'):]] = json.loads(prop.value)
            except ValueError:
                out[prop.key[len('handkp.'):]] = prop.value
    return out
