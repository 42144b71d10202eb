"""Checkpoint reading and strict, explained loading.

Accepted layouts: a bare state dict; ``{'state_dict': ...}`` (EasyCV, mmdet, mmpose);
``{'model': ...}``; keys with a ``module.`` prefix (saved from DataParallel/DDP).  Files are read
with ``torch.load(weights_only=True)``: a checkpoint cannot run code when it is loaded.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping

import torch

SHOW = 5  # how many keys of each kind an error lists


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, or does not fit the model."""


def _load_file(path) -> object:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f'checkpoint file {path!r} does not exist; pass the path of a .pt/.pth file '
                              'or a model directory that contains one.')
    if os.path.isdir(path):
        raise CheckpointError(f'{path!r} is a directory; pass the checkpoint file inside it (for a model '
                              'directory use the pipeline or Model.from_pretrained).')
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'checkpoint file {path!r} is empty (0 bytes); it was probably not written '
                              'completely — download or copy it again.')
    with open(path, 'rb') as f:
        head = f.read(64)
    text = head.lstrip().lower()
    if text.startswith(b'version https://git-lfs'):
        raise CheckpointError(f'checkpoint file {path!r} is a Git LFS pointer (a small text file naming the real '
                              'file), not the weights: run `git lfs pull` in that repository, or download the '
                              'file itself again.')
    if text.startswith((b'<!doctype', b'<html', b'<?xml', b'{')):
        raise CheckpointError(f'checkpoint file {path!r} is a text (HTML/XML/JSON) document, not a PyTorch '
                              'checkpoint — probably an error page saved by a download; download the file again.')
    try:
        try:
            return torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError:
            allowed = _numpy_globals()
            if not allowed or not hasattr(torch.serialization, 'safe_globals'):
                raise
            # mmcv / mmdet checkpoints keep numpy scalars in their meta (hook_msgs): data, not code
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f'checkpoint {path!r} holds objects other than tensors and plain containers, which are not loaded '
            f'for safety (torch.load weights_only=True): {str(e).splitlines()[0]} — re-save it as a plain '
            'state dict: torch.save(model.state_dict(), path).') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError) as e:
        raise CheckpointError(f'checkpoint {path!r} cannot be read (truncated or not a PyTorch file?): '
                              f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""} — download or '
                              'copy it again.') from e


def _numpy_globals() -> list:
    """NumPy's scalar / array reconstructors and dtype classes (plain data) for ``weights_only`` loading."""
    import importlib

    import numpy as np
    # numpy 2 moved numpy.core to numpy._core; numpy 1.26 has a numpy._core shim whose attributes appear only
    # once its submodules are imported, so pick the real module by version, not by hasattr
    numpy_major = int(np.__version__.split('.')[0])
    multiarray = importlib.import_module('numpy._core.multiarray' if numpy_major >= 2 else 'numpy.core.multiarray')
    found = [np.dtype, np.ndarray]
    # a pickle names a function by the module it had when it was saved: numpy.core.multiarray (numpy 1.x,
    # e.g. every mmcv / EasyCV checkpoint) or numpy._core.multiarray (numpy 2); accept both names
    renames = _allows_renamed_globals()
    for name in ('scalar', '_reconstruct'):
        fn = getattr(multiarray, name, None)
        if fn is not None:
            found.append(fn)
            if renames:
                found += [(fn, f'{module}.{name}') for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
                          if module != getattr(fn, '__module__', None)]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25: one class per dtype
    if dtypes is not None:
        found += [cls for cls in (getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType'))
                  if isinstance(cls, type)]
    return found


def _allows_renamed_globals() -> bool:
    """Whether ``torch.serialization.safe_globals`` takes ``(global, 'module.name')`` pairs (torch >= 2.6)."""
    try:
        major, minor = (int(v) for v in torch.__version__.split('+')[0].split('.')[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 6)


def read_state_dict(path_or_obj) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a file path or an already-loaded checkpoint object."""
    obj = path_or_obj
    if isinstance(obj, (str, os.PathLike)):
        obj = _load_file(obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'a checkpoint must be a dict of tensors, got {type(obj).__name__}')
    for wrapper in ('state_dict', 'model'):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            obj = inner
            break
    sd = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            continue
        if k.startswith('module.'):
            k = k[len('module.'):]
        if hasattr(v, 'shape'):
            sd[k] = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
    if not sd:
        raise CheckpointError('the checkpoint holds no tensors (expected a state dict, or a dict with a '
                              "'state_dict' or 'model' entry).")
    return sd


def _first(items) -> str:
    items = list(items)
    more = f' ... and {len(items) - SHOW} more' if len(items) > SHOW else ''
    return ', '.join(items[:SHOW]) + more


def check_state_dict(model: torch.nn.Module, state_dict: Mapping) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and wrongly-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})' for k in own
              if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys: {_first(missing)}')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys: {_first(unexpected)}')
        if shapes:
            parts.append(f'{len(shapes)} keys with the wrong shape: {_first(shapes)}')
        raise CheckpointError(
            'the checkpoint does not fit this model architecture — ' + '; '.join(parts) +
            '. Check that the configuration (model.backbone / keypoint_head) matches the checkpoint, '
            'or pass the checkpoint that belongs to this configuration.')


def load_checkpoint(model: torch.nn.Module, path_or_state_dict, strict: bool = True) -> torch.nn.Module:
    """Load weights into ``model``; with ``strict`` nothing is loaded unless every key fits."""
    sd = read_state_dict(path_or_state_dict)
    if strict:
        check_state_dict(model, sd)
    own = model.state_dict()
    fitting = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(fitting, strict=strict)
    return model
