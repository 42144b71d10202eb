"""Inference backends for the keypoint network: same numbers, different speed.

``make_backend(model, kind='auto', num_threads=None)`` returns an object with

* ``.name`` — the backend actually in use (``'eager'``, ``'fused'``, ``'onnxruntime'``, ``'openvino'``);
* ``.heatmaps(crops, flip_test=True)`` -> float32 Tensor [N, K, h, w] (flip-averaged with ``flip_test``);
* ``.predict(crops, centers, scales, rotations=None, flip_test=True)`` -> (coords float32 ndarray
  [N, K, 2] in image pixels, scores float32 ndarray [N, K, 1]).

``crops`` are normalised crops [N, 3, H, W] (:func:`modelscope_handkp.transforms.crop_to_tensor`),
``centers``/``scales`` [N, 2] and ``rotations`` [N] (degrees) describe each crop.  ``N == 0`` gives
empty outputs.  Flip test is always ONE batched pass over the crops and their mirror images.

Kinds:

``eager``
    The model as built (BatchNorm layers, NCHW) and :func:`codec.decode_heatmaps` — the reference.
``fused``
    BatchNorm folded into the convolutions (:mod:`.models.fuse`), channels-last memory format
    (oneDNN's fast path for these convolutions), vectorised torch decoding.
``onnxruntime``
    The network exported once to ONNX (cached on disk, key = hash of weights + config + exporter
    version), run by an ONNX Runtime CPU session with all graph optimisations and one intra-op
    thread per core.  Needs ``pip install onnxruntime`` (extra ``[onnx]``).
``openvino``
    The same ONNX file compiled by OpenVINO for the CPU (fp32): batches are cut into one chunk per
    core and run as concurrent streams, single crops by a latency-compiled copy.  Needs
    ``pip install openvino`` (extra ``[openvino]``).
``auto``
    The first of :data:`AUTO_ORDER` that is installed and passes a two-crop self-check against
    the eager model; anything that fails is logged (a runtime that is not installed at INFO level, any
    other failure as a warning) and the next is tried, ending
    with ``eager``.

All backends give the eager keypoints within float32 rounding (tests/test_backends.py); the
measured speeds are in ``benchmarks/run.py``.

The ONNX cache lives in ``$MODELSCOPE_HANDKP_CACHE/onnx`` (default ``${XDG_CACHE_HOME:-~/.cache}/modelscope_handkp/onnx``;
a temporary directory, with a warning, if that is not writable).  A cached graph that does not load (a
damaged file) is exported again once.  OpenVINO caches its compiled models there too, also for a graph
given as ``onnx_path=`` (nothing is written next to it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import codec
from . import decode_torch
from .model_dir import test_settings
from .models.fuse import fold_batchnorm
from .models.topdown import as_hand_network, flip_back_heatmaps

__all__ = ['make_backend', 'available_backends', 'AUTO_ORDER', 'KINDS', 'EagerBackend', 'FusedBackend',
           'OnnxRuntimeBackend', 'OpenVinoBackend', 'AutoBackend', 'BackendError', 'onnx_cache_dir', 'model_fingerprint',
           'physical_cores', 'cached_onnx', 'ort_session', 'openvino_core', 'openvino_compile', 'require_module']

logger = logging.getLogger(__name__)

KINDS = ('eager', 'fused', 'onnxruntime', 'openvino')
# fastest first, as measured by benchmarks/run.py (2-core AMD EPYC, AVX2)
AUTO_ORDER = ('openvino', 'onnxruntime', 'fused', 'eager')
EXPORT_VERSION = 1  # bump when the exported graph changes, to invalidate cached files
SELF_CHECK_RTOL = 1e-4  # self-check: max |heatmap difference| / max |heatmap|


class BackendError(RuntimeError):
    """A backend cannot be built or run here."""


def physical_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def onnx_cache_dir() -> Path:
    """Directory for exported graphs: ``$MODELSCOPE_HANDKP_CACHE/onnx`` or ``~/.cache/modelscope_handkp/onnx``."""
    env = os.environ.get('MODELSCOPE_HANDKP_CACHE')
    base = Path(env) if env else Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'modelscope_handkp'
    preferred = base / 'onnx'
    reasons = []
    for candidate in (preferred, None):
        try:
            if candidate is None:
                candidate = _temporary_cache_dir()
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                if reasons:
                    logger.warning('the ONNX cache directory %s cannot be used (%s); using %s instead (set '
                                   'MODELSCOPE_HANDKP_CACHE to a writable directory)', preferred, reasons[0], candidate)
                return candidate
            reasons.append('not writable')
        except OSError as e:
            reasons.append(f'{type(e).__name__}: {e}')
    raise BackendError(f'no writable directory for the ONNX cache ({preferred}: {reasons[0]}; the temporary '
                       f'directory: {reasons[-1]}); set MODELSCOPE_HANDKP_CACHE to one.')


def _temporary_cache_dir() -> Path:
    """``<tmp>/modelscope_handkp-<uid>/onnx``, the fallback cache: its top folder is made private (0700),
    and one that is not this user's own, private folder is refused (OSError): in a shared temporary
    directory anyone can create that name first and leave graphs there, which would then be run as this
    model (wrong keypoints) or as OpenVINO compiled blobs."""
    top = Path(tempfile.gettempdir()) / f'modelscope_handkp-{os.getuid()}'
    top.parent.mkdir(parents=True, exist_ok=True)
    top.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(top)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        owner = 'a symbolic link' if stat.S_ISLNK(st.st_mode) else (
            f'owned by user id {st.st_uid}' if st.st_uid != os.getuid() else
            f'writable by other users (mode {stat.S_IMODE(st.st_mode):o})')
        raise PermissionError(f'{top} is {owner}, so graphs found there cannot be trusted')
    return top / 'onnx'


def model_fingerprint(model: nn.Module) -> str:
    """sha256 (hex, 20 chars) of the model's tensors, config and the exporter versions."""
    model = as_hand_network(model)
    h = hashlib.sha256()
    h.update(json.dumps(getattr(model, 'cfg', {}), sort_keys=True, default=str).encode())
    h.update(f'export-v{EXPORT_VERSION} torch-{torch.__version__}'.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f'{name}:{tuple(t.shape)}:{t.dtype}'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def require_module(module: str, extra: str):
    """Import ``module`` or raise :class:`BackendError` saying how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendError(f'{module} is not installed; pip install {module} (or the [{extra}] extra)') from e


def cached_onnx(model: nn.Module, stem: str, export, what: str) -> Path:
    """``<cache>/<stem>-<fingerprint>.onnx``: ``model`` written by ``export(model, path, overwrite=True)``
    the first time it is asked for (``what`` names it in the log)."""
    path = onnx_cache_dir() / f'{stem}-{model_fingerprint(model)}.onnx'
    if path.exists() and not _loads(path):
        logger.warning('the cached %s %s is damaged; exporting it again', what, path)
        path.unlink(missing_ok=True)  # another process may have replaced it already
    if not path.exists():
        require_module('onnx', 'onnx')  # the exporter checks every graph with it
        logger.info('exporting the %s to %s (once per model)', what, path)
        export(model, path, overwrite=True)
    return path


def _loads(path: Path) -> bool:
    """Whether ``path`` parses as an ONNX model (True when the onnx package is absent: let the runtime judge)."""
    try:
        import onnx
    except ImportError:
        return True
    try:
        onnx.load(str(path), load_external_data=False)
        return True
    except Exception:  # noqa: BLE001 - any parse error means a damaged file
        return False


def ort_session(path, threads: int, optimization: str = 'all', spinning: bool = True):
    """ONNX Runtime CPU session: ``threads`` intra-op threads, sequential execution."""
    ort = require_module('onnxruntime', 'onnx')
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])


def openvino_core(cache_dir: Path | None):
    """An OpenVINO ``Core`` whose compiled models are cached in ``cache_dir / 'openvino'`` (None: not cached)."""
    core = require_module('openvino', 'openvino').Core()
    if cache_dir is None:
        return core
    try:
        core.set_property({'CACHE_DIR': str(Path(cache_dir) / 'openvino')})
    except Exception:  # noqa: BLE001 - the compiled-model cache is only an optimisation
        pass
    return core


def openvino_compile(core, graph, threads: int, streams: int = 1):
    """``graph`` compiled for the CPU in fp32: one stream with a latency hint, or ``streams`` streams."""
    config = {'INFERENCE_NUM_THREADS': int(threads), 'INFERENCE_PRECISION_HINT': 'f32'}
    config.update({'PERFORMANCE_HINT': 'LATENCY'} if streams <= 1 else {'NUM_STREAMS': int(streams)})
    return core.compile_model(graph, 'CPU', config)


def _test_cfg(model: nn.Module) -> dict:
    return (getattr(model, 'cfg', {}) or {}).get('test_cfg', {}) or {}


def _as_numpy(x, dtype=np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def _as_crops(crops) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(crops)) if not isinstance(crops, torch.Tensor) else crops
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f'crops must be a float32 [N, 3, H, W] tensor, got shape {tuple(x.shape)}')
    return x.detach().to('cpu', torch.float32)


class _Backend:
    """Shared parts: flip batching, decoding, the empty batch."""

    name = 'base'

    def __init__(self, model: nn.Module, num_threads: int | None = None):
        model = as_hand_network(model)  # Model.from_pretrained's wrapper: its network and test settings
        self.model = model.eval()
        cfg = _test_cfg(model)
        self.shift = bool(getattr(model, 'shift_heatmap', cfg.get('shift_heatmap', True)))
        _, self.post_process, self.kernel = test_settings(getattr(model, 'cfg', None))
        self.num_keypoints = int(getattr(model, 'num_keypoints', 21))
        w, h = (int(v) for v in getattr(model, 'input_size', (256, 256)))
        self.input_size = (w, h)
        self.heatmap_size = tuple(int(v) for v in getattr(model, 'heatmap_size', (w // 4, h // 4)))
        self.num_threads = num_threads
        if num_threads is not None and self.name in ('eager', 'fused'):
            torch.set_num_threads(int(num_threads))

    def __repr__(self):
        return f'{type(self).__name__}(name={self.name!r})'

    # -- network ------------------------------------------------------------------------------
    def _net(self, batch: torch.Tensor) -> torch.Tensor:
        """Heatmaps [B, K, h, w] for a batch of crops; implemented by each backend."""
        raise NotImplementedError

    def _empty_heatmaps(self) -> torch.Tensor:
        w, h = self.heatmap_size
        return torch.zeros(0, self.num_keypoints, h, w)

    @torch.no_grad()
    def heatmaps(self, crops, flip_test: bool = True) -> torch.Tensor:
        """float32 heatmaps [N, K, h, w]; with ``flip_test`` crops and mirrors go in one batch."""
        x = _as_crops(crops)
        n = x.shape[0]
        if n == 0:
            return self._empty_heatmaps()
        if not flip_test:
            return self._net(x)
        both = self._net(torch.cat([x, x.flip(-1)], dim=0))
        return 0.5 * (both[:n] + flip_back_heatmaps(both[n:], shift=self.shift))

    # -- decoding -----------------------------------------------------------------------------
    def _decode(self, heatmaps: torch.Tensor, centers: np.ndarray, scales: np.ndarray, rotations):
        coords, scores = decode_torch.decode_heatmaps(
            heatmaps, torch.from_numpy(centers), torch.from_numpy(scales), self.post_process, self.kernel,
            None if rotations is None else torch.from_numpy(rotations), blur='local')
        return coords.numpy(), scores.numpy()

    def predict(self, crops, centers, scales, rotations=None, flip_test: bool = True):
        """(coords float32 [N, K, 2] image px, scores float32 [N, K, 1]) for normalised crops."""
        x = _as_crops(crops)
        n = x.shape[0]
        centers = _as_numpy(centers).reshape(-1, 2)
        scales = _as_numpy(scales).reshape(-1, 2)
        if len(centers) != n or len(scales) != n:
            raise ValueError(f'{n} crops but {len(centers)} centers and {len(scales)} scales; give one '
                             'center and one scale per crop.')
        if rotations is not None:
            rotations = _as_numpy(rotations).reshape(-1)
            if len(rotations) != n:
                raise ValueError(f'{n} crops but {len(rotations)} rotations')
            if not np.any(rotations):
                rotations = None
        if n == 0:
            k = self.num_keypoints
            return np.zeros((0, k, 2), np.float32), np.zeros((0, k, 1), np.float32)
        hm = self.heatmaps(x, flip_test)
        coords, scores = self._decode(hm, centers, scales, rotations)
        return coords.astype(np.float32, copy=False), scores.astype(np.float32, copy=False)


class EagerBackend(_Backend):
    """The model as it is, and the NumPy/OpenCV codec: the reference path."""

    name = 'eager'

    def _net(self, batch):
        return self.model(batch)

    @torch.no_grad()
    def heatmaps(self, crops, flip_test: bool = True) -> torch.Tensor:
        x = _as_crops(crops)
        if x.shape[0] == 0:
            return self._empty_heatmaps()
        return self.model.forward_heatmaps(x, flip_test=flip_test)

    def _decode(self, heatmaps, centers, scales, rotations):
        return codec.decode_heatmaps(heatmaps, centers, scales, self.post_process, self.kernel, rotations)


class FusedBackend(_Backend):
    """BatchNorm folded into the convolutions, channels-last activations, torch decoding."""

    name = 'fused'

    def __init__(self, model: nn.Module, num_threads: int | None = None, channels_last: bool = True):
        super().__init__(model, num_threads)
        self.channels_last = bool(channels_last)
        self.net = fold_batchnorm(self.model)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def _net(self, batch):
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self.net(batch).contiguous()


class _OnnxFileBackend(_Backend):
    """Backends that run the exported network graph (crops -> heatmaps) from the disk cache."""

    def __init__(self, model: nn.Module, num_threads: int | None = None, onnx_path=None):
        super().__init__(model, num_threads)
        self.threads = int(num_threads) if num_threads else physical_cores()
        self.onnx_path = Path(onnx_path) if onnx_path else self._cached_graph(self.model)

    @staticmethod
    def _cached_graph(model: nn.Module) -> Path:
        from .export import export_keypoint_net

        return cached_onnx(model, 'hand_keypoints_net', export_keypoint_net, 'keypoint network')

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _net(self, batch):
        return torch.from_numpy(self._run(np.ascontiguousarray(batch.numpy())))


class OnnxRuntimeBackend(_OnnxFileBackend):
    """ONNX Runtime CPU session over the cached network graph."""

    name = 'onnxruntime'

    def __init__(self, model: nn.Module, num_threads: int | None = None, onnx_path=None,
                 optimization: str = 'all', spinning: bool = True):
        require_module('onnxruntime', 'onnx')  # before the (slow) export
        super().__init__(model, num_threads, onnx_path)
        self.session = ort_session(self.onnx_path, self.threads, optimization, spinning)
        self._input = self.session.get_inputs()[0].name

    def _run(self, batch):
        return self.session.run(None, {self._input: batch})[0]


class OpenVinoBackend(_OnnxFileBackend):
    """OpenVINO CPU plugin (fp32) over the cached network graph.

    Two compiled models share the file: a throughput one with one stream per thread for batches,
    which are cut into one chunk per stream and run concurrently, and a latency one (one stream, all
    threads) for single crops, compiled the first time a single crop comes.  Each crop is computed
    on its own either way, so the heatmaps do not depend on how a batch is cut.  On 2-core machines
    the streams were 2-18 % faster than one stream with two threads (``benchmarks/run.py --levers``
    and interleaved runs; the machine is noisy): the small HRNet branches do not keep two threads
    busy, two independent crops do.
    """

    name = 'openvino'

    def __init__(self, model: nn.Module, num_threads: int | None = None, onnx_path=None, streams: int | None = None):
        require_module('openvino', 'openvino')  # before the (slow) export
        super().__init__(model, num_threads, onnx_path)
        # compiled blobs go to the cache, never next to a graph the caller named (e.g. in a model directory)
        self._core = openvino_core(self.onnx_path.parent if onnx_path is None else _optional_cache_dir())
        self._lock = threading.Lock()  # infer requests are not thread-safe: one batch at a time
        self._graph = self._core.read_model(str(self.onnx_path))
        self.streams = max(1, int(streams) if streams is not None else self.threads)
        self.compiled = self.request = None
        self.requests = []
        if self.streams > 1:
            self.compiled_streams = openvino_compile(self._core, self._graph, self.threads, self.streams)
            self.requests = [self.compiled_streams.create_infer_request() for _ in range(self.streams)]
        else:
            self._latency_request()

    def _latency_request(self):
        """The one-stream model for single crops, compiled on first use when streams are on (the
        default flip test never needs it; it would cost ~120 MiB more)."""
        if self.request is None:
            self.compiled = openvino_compile(self._core, self._graph, self.threads)
            self.request = self.compiled.create_infer_request()
        return self.request

    def _run(self, batch):
        with self._lock:
            return self._run_locked(batch)

    def _run_locked(self, batch):
        n = batch.shape[0]
        if n < 2 or not self.requests:
            request = self._latency_request()
            request.infer({0: batch})
            return np.array(request.get_output_tensor(0).data, copy=True)
        bounds = np.linspace(0, n, min(n, len(self.requests)) + 1).round().astype(int)
        chunks = [np.ascontiguousarray(batch[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        used = self.requests[:len(chunks)]
        for request, chunk in zip(used, chunks):
            request.start_async({0: chunk})
        for request in used:
            request.wait()
        return np.concatenate([np.asarray(r.get_output_tensor(0).data) for r in used], axis=0)


def _optional_cache_dir() -> Path | None:
    """:func:`onnx_cache_dir`, or None when there is none (for caches that are only an optimisation)."""
    try:
        return onnx_cache_dir()
    except BackendError:
        return None


_CLASSES = {'eager': EagerBackend, 'fused': FusedBackend, 'onnxruntime': OnnxRuntimeBackend,
            'openvino': OpenVinoBackend}


def available_backends() -> list[str]:
    """Kinds whose runtime is importable here (not yet built or checked)."""
    import importlib.util

    out = ['eager', 'fused']
    for kind, module in (('onnxruntime', 'onnxruntime'), ('openvino', 'openvino')):
        if importlib.util.find_spec(module) is not None:
            out.append(kind)
    return out


@torch.no_grad()
def _self_check(backend: _Backend, model: nn.Module) -> None:
    """Two random crops (the batch of one hand with flip test) through the backend and the eager
    model; raise if the heatmaps differ."""
    w, h = backend.input_size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    ref = model(x)
    got = backend.heatmaps(x, flip_test=False)
    rel = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    if not rel <= SELF_CHECK_RTOL:
        raise BackendError(f'{backend.name} heatmaps differ from the eager model by {rel:.2e} (relative)')


class AutoBackend:
    """The backend chosen by ``kind='auto'``; if it ever fails at run time, logs a warning and
    continues with the eager backend for good."""

    def __init__(self, backend: _Backend, model: nn.Module, num_threads: int | None):
        self.backend = backend
        self._model = model
        self._num_threads = num_threads

    @property
    def name(self) -> str:
        return self.backend.name

    def __getattr__(self, item):  # input_size, heatmap_size, num_keypoints, ...
        return getattr(self.__dict__['backend'], item)

    def __repr__(self):
        return f'AutoBackend({self.backend!r})'

    def _fall_back(self, error: Exception) -> None:
        logger.warning('inference backend %r failed (%s: %s); continuing with the eager PyTorch backend',
                       self.backend.name, type(error).__name__, error)
        self.backend = EagerBackend(self._model, self._num_threads)

    def heatmaps(self, crops, flip_test: bool = True):
        try:
            return self.backend.heatmaps(crops, flip_test)
        except Exception as e:  # noqa: BLE001
            if self.backend.name == 'eager':
                raise
            self._fall_back(e)
            return self.backend.heatmaps(crops, flip_test)

    def predict(self, crops, centers, scales, rotations=None, flip_test: bool = True):
        try:
            return self.backend.predict(crops, centers, scales, rotations, flip_test)
        except ValueError:
            raise  # bad arguments: the same with any backend
        except Exception as e:  # noqa: BLE001
            if self.backend.name == 'eager':
                raise
            self._fall_back(e)
            return self.backend.predict(crops, centers, scales, rotations, flip_test)


def make_backend(model: nn.Module, kind: str = 'auto', num_threads: int | None = None, self_check: bool | None = None,
                 **options):
    """Build an inference backend for a :class:`TopDownHandModel`; see the module docs.

    ``kind``: ``'auto'`` (default), ``'eager'``, ``'fused'``, ``'onnxruntime'`` or ``'openvino'``.
    ``num_threads``: intra-op threads (ONNX Runtime / OpenVINO default: one per core; for the
    torch backends it calls ``torch.set_num_threads``, which is process-wide).
    ``self_check``: compare two crops with the eager model after building (default: on for
    ``'auto'``).  ``options`` go to the backend class (e.g. ``channels_last=False``,
    ``optimization='basic'``, ``spinning=False``).
    """
    if kind not in KINDS + ('auto', ):
        raise ValueError(f"unknown backend kind {kind!r}; choose one of {('auto', ) + KINDS}")
    model = as_hand_network(model).eval()
    if kind != 'auto':
        backend = _CLASSES[kind](model, num_threads, **options)
        if self_check:
            _self_check(backend, model)
        return backend
    check = True if self_check is None else bool(self_check)
    for candidate in AUTO_ORDER:
        if candidate == 'eager':
            break
        try:
            backend = _CLASSES[candidate](model, num_threads)
            if check:
                _self_check(backend, model)
            return AutoBackend(backend, model, num_threads)
        except Exception as e:  # noqa: BLE001 - any failure falls through to the next backend
            level = logging.INFO if isinstance(e, BackendError) and 'not installed' in str(e) else logging.WARNING
            logger.log(level, 'inference backend %r unavailable (%s: %s); trying the next one', candidate,
                       type(e).__name__, e)
    return AutoBackend(EagerBackend(model, num_threads), model, num_threads)
