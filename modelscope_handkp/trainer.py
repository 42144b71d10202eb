"""``build_trainer('easycv', ...)``: train and evaluate the hand keypoint model with ModelScope.

:class:`HandKeypointTrainer` is ModelScope's ``EpochBasedTrainer`` with what the published
(EasyCV) configuration needs and what a current stack lacks:

* datasets: an ``MsDataset`` (hub zip split or local folder), a dataset folder, an annotation
  file, a ``{'ann_file': ..., 'img_prefix': ...}`` dict, a ready ``torch`` dataset, or ``None``
  (then ``configuration.json``'s ``dataset`` section) — all read by
  :class:`~modelscope_handkp.datasets.CocoWholeBodyHandDataset` with the configured training
  pipeline;
* the EasyCV ``lr_scheduler`` (``policy: step`` + linear warmup) as an iteration-stepped
  :class:`~modelscope_handkp.hooks.EasyCVLrScheduler`;
* CPU without CUDA assumptions, a GPU when present, and ``torchrun`` data-parallel training with
  NCCL on GPUs or gloo on CPU (ModelScope's own DDP hook, loss logging and metric broadcast
  require CUDA);
* deterministic data: the sample order depends on ``(seed, epoch)`` and each sample's
  augmentation on ``(seed, epoch, index)`` only, so ``resume=True`` after a crash reproduces an
  uninterrupted run;
* atomic checkpoints (``latest.pth``, ``output/``, ``output_best/``) and JSON-lines logs in
  ``work_dir`` (see :mod:`modelscope_handkp.hooks`); an existing training run in ``work_dir`` is
  never overwritten without ``overwrite=True`` (or continued with ``resume=True``).

The model directory ``<work_dir>/output`` (``configuration.json`` + ``pytorch_model.pt``) is
this plugin's format and loads with ``pipeline(Tasks.hand_2d_keypoints, model=...)``.
"""
from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence

import torch
from modelscope.metrics import build_metric
from modelscope.msdatasets.ms_dataset import MsDataset
from modelscope.trainers.base import BaseTrainer
from modelscope.trainers.builder import TRAINERS
from modelscope.trainers.hooks.hook import Hook
from modelscope.trainers.hooks.priority import Priority
from modelscope.trainers.trainer import EpochBasedTrainer
from modelscope.trainers.utils.log_buffer import LogBuffer
from modelscope.utils.config import Config, ConfigDict
from modelscope.utils.constant import DistributedParallelType, ModeKeys
from modelscope.utils.data_utils import to_device
from modelscope.utils.file_utils import func_receive_dict_inputs
from modelscope.utils.logger import get_logger
from modelscope.utils.torch_utils import is_master
from torch import distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from . import evaluation  # noqa: F401  (registers the EasyCVMetric metric)
from . import model_dir as md
from .codec import decode_heatmaps
from .datasets.coco_wholebody_hand import (CocoWholeBodyHandDataset, DatasetError, resolve_split_folder,
                                           substitute_data_root)
from .hooks import (BEST_INFO, BEST_OUTPUT_DIR, LATEST_CHECKPOINT, OUTPUT_DIR, TRAIN_LOG, EasyCVLrScheduler,
                    capture_rng_state, easycv_lr_config, read_train_log, restore_rng_state)
from .models.topdown import TopDownHandModel

logger = get_logger()

TRAINER_NAME = 'easycv'  # the published card's trainer name (registered when pai-easycv is absent)
PRIVATE_TRAINER_NAME = 'handkp-easycv'  # always registered; the name to use next to a working pai-easycv
STATE_FORMAT = 'modelscope_handkp.trainer_state'
WORK_DIR_ARTEFACTS = (LATEST_CHECKPOINT, OUTPUT_DIR, BEST_OUTPUT_DIR, BEST_INFO, TRAIN_LOG)

# ModelScope hooks replaced by this trainer's own (CPU-safe / atomic / JSON-lines) versions
_HOOK_REPLACEMENTS = {'CheckpointHook': 'HandCheckpointHook', 'TextLoggerHook': 'HandTextLoggerHook',
                      'EvaluationHook': 'HandEvaluationHook'}


def _plain(obj):
    """ConfigDict/Config -> plain dicts and lists (JSON-ready)."""
    if isinstance(obj, Config):
        obj = obj._cfg_dict
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _read_json_config(cfg_file: str) -> Config:
    """configuration.json -> ModelScope ``Config`` without ModelScope's jsonplus reader (which
    needs ``simplejson``); EasyCV's ``{"__class__": "tuple", ...}`` values are decoded."""
    from .model_dir import decode_jsonplus
    with open(cfg_file, 'r', encoding='utf-8') as f:
        text = f.read()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f'{cfg_file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix or '
                         'restore it.') from None
    if not isinstance(raw, Mapping):
        raise ValueError(f'{cfg_file} must hold a JSON object, got {type(raw).__name__}')
    return Config(decode_jsonplus(raw), cfg_text=text, filename=cfg_file)


class _JsonConfigTrainerBase(BaseTrainer):
    """Sits between ``EpochBasedTrainer`` and ``BaseTrainer`` in the MRO so that
    ``configuration.json`` is parsed with the standard library."""

    def __init__(self, cfg_file: str, arg_parse_fn=None):
        if str(cfg_file).endswith('.json'):
            self.cfg = _read_json_config(cfg_file)
        else:
            if str(cfg_file).endswith('.py') and not getattr(self, '_handkp_trust_remote_code', False):
                raise ValueError(f'{cfg_file} is a Python configuration: reading it runs it as code. Use a '
                                 'configuration.json (or .yaml), or pass trust_remote_code=True if you trust '
                                 'this file.')
            trust = {'trust_remote_code': True} if getattr(self, '_handkp_trust_remote_code', False) and \
                'trust_remote_code' in inspect.signature(Config.from_file).parameters else {}
            self.cfg = Config.from_file(cfg_file, **trust)
        train_cfg = self.cfg.get('train') if isinstance(self.cfg.get('train'), Mapping) else None
        if train_cfg is not None and 'work_dir' in train_cfg and not train_cfg['work_dir']:
            del train_cfg['work_dir']  # "work_dir": null (the published configuration) -> ModelScope's ./work_dir
        self.args = self.cfg.to_args(arg_parse_fn) if arg_parse_fn else None
        self.log_buffer = LogBuffer()
        self.visualization_buffer = LogBuffer()
        self.timestamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())


class _IndexedConcat(ConcatDataset):
    """ConcatDataset whose evaluation samples carry their global ``index``."""

    def __getitem__(self, idx):
        item = super().__getitem__(idx)
        if isinstance(item, dict) and 'index' in item:
            item = dict(item)
            item['index'] = idx if idx >= 0 else len(self) + idx
        return item


def _leaf_datasets(ds):
    if isinstance(ds, ConcatDataset):
        for d in ds.datasets:
            yield from _leaf_datasets(d)
    else:
        yield ds


class _EpochHook(Hook):
    """Before each epoch: tell the sampler and the datasets which epoch it is (data order and
    augmentation draws are functions of the epoch)."""

    PRIORITY = Priority.HIGHEST

    def before_train_epoch(self, trainer):
        loader = trainer.train_dataloader
        sampler = getattr(loader, 'sampler', None)
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(trainer.epoch)
        for ds in _leaf_datasets(trainer.train_dataset):
            if hasattr(ds, 'set_epoch'):
                ds.set_epoch(trainer.epoch)


class _DistributedHook(Hook):
    """Data parallelism without CUDA assumptions: joins the process group started by torchrun
    (NCCL with GPUs, gloo on CPU) and places the model on this process's device."""

    PRIORITY = Priority.HIGHEST

    def __init__(self, backend: str | None = None):
        self.backend = backend

    def after_init(self, trainer):
        use_cuda = torch.cuda.is_available() and str(trainer._handkp_device or 'gpu') not in ('cpu', )
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
            if missing:
                raise RuntimeError(f'distributed training was requested but {missing} are not set; start the '
                                   'script with `torchrun --nproc_per_node=N script.py`.')
            dist.init_process_group(backend=self.backend or ('nccl' if use_cuda else 'gloo'))
        trainer.parallel_groups[DistributedParallelType.DP] = None  # the default (world) group
        trainer.device = torch.device(f'cuda:{local_rank}') if use_cuda else torch.device('cpu')
        trainer.model.to(trainer.device)


def find_hand_net(model: torch.nn.Module) -> TopDownHandModel:
    """The :class:`TopDownHandModel` inside a (wrapped) model."""
    if isinstance(model, TopDownHandModel):
        return model
    inner = getattr(model, 'hand_model', None)  # modelscope_model.HandKeypointsModel keeps it unregistered
    if isinstance(inner, TopDownHandModel):
        return inner
    for m in model.modules():
        if isinstance(m, TopDownHandModel):
            return m
    raise TypeError(f'{type(model).__name__} contains no modelscope_handkp TopDownHandModel; the easycv trainer of '
                    'modelscope_handkp trains hand keypoint models only.')


_MODEL_DIR_FILES = ('configuration.json', 'pytorch_model.pt', 'detection')
TRAINED_BY = 'modelscope_handkp easycv trainer'


def _own_file(path: str) -> bool:
    """Whether a work_dir file with one of this trainer's names (``latest.pth``, ``best.json``,
    ``train_log.jsonl``) holds what this trainer writes there -- a name alone proves nothing."""
    name = os.path.basename(path)
    try:
        if os.path.getsize(path) == 0:  # e.g. the log of a run killed at once: nothing to lose
            return True
        if name == LATEST_CHECKPOINT:
            state = torch.load(path, map_location='cpu', weights_only=True)
            return isinstance(state, dict) and state.get('format') == STATE_FORMAT
        if name == BEST_INFO:
            with open(path, encoding='utf-8') as f:
                best = json.load(f)
            return isinstance(best, dict) and {'metric', 'rule', 'value'} <= set(best)
        if name == TRAIN_LOG:  # JSON records with a 'mode' (the last line may be cut off: a killed run)
            records = read_train_log(path)
            return bool(records) and all(isinstance(r, dict) and 'mode' in r for r in records)
    except Exception:  # noqa: BLE001 - unreadable or another format: not this trainer's
        return False
    return False


def _foreign_entries(path: str) -> list[str]:
    """What in a work_dir artefact a previous run of this trainer did not write: for the model folders
    (``output/``, ``output_best/``) their foreign entries; for a file, the file itself unless it holds
    this trainer's content (see :func:`_own_file`)."""
    if not os.path.isdir(path):
        name = os.path.basename(path)
        if name in (OUTPUT_DIR, BEST_OUTPUT_DIR):
            return [f'{name} (a file, where this trainer writes a folder)']
        return [] if _own_file(path) else [f'{name} (not written by this trainer)']
    foreign = sorted(e for e in os.listdir(path) if e not in _MODEL_DIR_FILES)
    weights = os.path.join(path, 'pytorch_model.pt')
    if not foreign and os.path.isfile(weights):
        try:
            meta = torch.load(weights, map_location='cpu', weights_only=True).get('meta') or {}
        except Exception:  # noqa: BLE001 - unreadable: not ours to judge, keep it
            meta = {}
        if meta.get('trained_by') != TRAINED_BY:
            foreign = ['pytorch_model.pt (not written by this trainer)']
    return foreign


#: configuration sections a cfg_options key may add although the model directory's configuration lacks them
_STANDARD_SECTIONS = frozenset(('framework', 'task', 'model', 'dataset', 'train', 'evaluation', 'preprocessor',
                                'pipeline', 'detector', 'handkp', 'parallel'))


def _check_cfg_options(options, sections) -> None:
    """A ``cfg_options`` key must start with a section of the configuration (``train.max_epochs``): ModelScope
    merges any key, so a typo (``trian.max_epochs``) was a silently ignored new section."""
    if not options or not sections:
        return
    sections = set(sections) | _STANDARD_SECTIONS
    for key in options:
        head = str(key).split('.')[0]
        if head not in sections:
            raise ValueError(f'cfg_options key {key!r}: the configuration has no section {head!r} (it has '
                             f'{", ".join(sorted(sections))}); check the spelling.')


def _check_train_settings(cfg) -> None:
    """The training numbers a user commonly overrides, checked with the key named (a string max_epochs
    failed later as "'>=' not supported between 'int' and 'str'")."""
    def integer(v):
        return isinstance(v, int) and not isinstance(v, bool)

    checks = (('train.max_epochs', lambda v: integer(v) and v >= 1, 'a positive integer'),
              ('train.dataloader.batch_size_per_gpu', lambda v: integer(v) and v >= 1, 'a positive integer'),
              ('train.dataloader.workers_per_gpu', lambda v: integer(v) and v >= 0, 'an integer >= 0'),
              ('evaluation.dataloader.batch_size_per_gpu', lambda v: integer(v) and v >= 1, 'a positive integer'),
              ('train.optimizer', lambda v: isinstance(v, Mapping), 'a section like {"type": "Adam", "lr": 0.0005}'),
              ('train.optimizer.lr', lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
               'a number >= 0'),
              ('train.lr_scheduler.step', lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) or (
                  isinstance(v, Sequence) and not isinstance(v, str) and all(integer(e) for e in v)
                  and list(v) == sorted(v)), 'an epoch or an increasing list of epochs like [170, 200]'))
    for path, ok, want in checks:
        value = cfg.safe_get(path)
        if value is not None and not ok(value):
            raise ValueError(f'{path} must be {want}, got {value!r}.')


def _hook_keys(hooks):
    """(key, hook) pairs: the key is the hook's class name and its occurrence among hooks of that class
    (``HandCheckpointHook#0``), so a state survives a hook list that differs (another number of
    processes adds a hook)."""
    seen: dict[str, int] = {}
    for hook in hooks:
        name = type(hook).__name__
        yield f'{name}#{seen.get(name, 0)}', hook
        seen[name] = seen.get(name, 0) + 1


def _legacy_hook_state(saved: Mapping, key: str):
    """The state of hook ``key`` in a training state of version 1 (keys ``Name-<position>``)."""
    name, occurrence = key.rsplit('#', 1)
    old = []
    for k, v in saved.items():
        hook, _, position = k.rpartition('-')
        if hook == name and position.isdigit():
            old.append((int(position), v))
    old.sort(key=lambda item: item[0])
    return old[int(occurrence)][1] if int(occurrence) < len(old) else None


def strip_run_folders(train_cfg) -> None:
    """Remove the folders of the run that wrote a configuration (``work_dir``, ModelScope's
    ``checkpoint.*.save_dir`` and ``logging.out_dir``) from its ``train`` section, in place: a model
    directory must not send the next user's checkpoints and logs into the trainer's work dir."""
    if not isinstance(train_cfg, dict):
        return
    train_cfg.pop('work_dir', None)
    for section, key in (('checkpoint', 'save_dir'), ('logging', 'out_dir')):
        sec = train_cfg.get(section)
        if isinstance(sec, dict):
            sec.pop(key, None)
            for sub in sec.values():
                if isinstance(sub, dict):
                    sub.pop(key, None)


_RUN_LOG_NAME = re.compile(r'\d{8}_\d{6}\.log')  # ModelScope's text log of a run: <timestamp>.log


def _remove_if_only_logs(work_dir: str) -> None:
    """Remove ``work_dir`` when it holds nothing but ModelScope's log files (a run that wrote nothing)."""
    if os.path.isdir(work_dir) and all(n.endswith('.log') for n in os.listdir(work_dir)):
        shutil.rmtree(work_dir, ignore_errors=True)


class HandKeypointTrainer(EpochBasedTrainer, _JsonConfigTrainerBase):
    """ModelScope trainer ``'easycv'`` for top-down hand keypoint models (see module docs).

    Extra keyword arguments (in ``default_args``):
        resume (bool): continue the run in ``work_dir`` from ``latest.pth`` (model, optimizer,
            scheduler, epoch, RNG and hook states); starts fresh when there is none.
        overwrite (bool): replace a previous run's checkpoints/logs in ``work_dir``.
        skip_invalid (bool): skip (log and count) missing images / malformed annotations
            instead of raising.
        device (str): ``'cpu'``, ``'gpu'`` (default: a GPU when available) or ``'cuda:N'``.
        launcher (str): ``'pytorch'`` for torchrun (also detected from the environment).
        trust_remote_code (bool): allow a Python ``cfg_file`` (ModelScope runs it to read it); JSON
            and YAML configurations never need it.
    """

    def __init__(self, model=None, cfg_file=None, *args, resume: bool = False, overwrite: bool = False,
                 skip_invalid: bool = False, **kwargs):
        self._handkp_resume = bool(resume)
        self._handkp_overwrite = bool(overwrite)
        self._handkp_skip_invalid = bool(skip_invalid)
        self._handkp_device = kwargs.get('device')
        self._handkp_best_cfg = None
        self._handkp_export_cfg = None
        # code is never run from a model directory; a Python cfg_file (which runs when read) needs this
        self._handkp_trust_remote_code = bool(kwargs.pop('trust_remote_code', False))
        # ModelScope creates work_dir and writes a log into it while it builds the trainer: a work_dir this
        # constructor created is removed again when building fails (e.g. a bad configuration value)
        wd = kwargs.get('work_dir')
        wd = os.path.abspath(os.fspath(wd)) if isinstance(wd, (str, os.PathLike)) and os.fspath(wd) else None
        created = wd is not None and not os.path.exists(wd)
        try:
            super().__init__(model, cfg_file, *args, **kwargs)
            _check_cfg_options(kwargs.get('cfg_options'), getattr(self, '_handkp_sections', None))
            _check_train_settings(self.cfg)
        except BaseException:
            if created:
                self._detach_run_log()
                _remove_if_only_logs(wd)
            raise
        self.work_dir = os.path.abspath(self.work_dir)
        self._handkp_created_work_dir = created and self.work_dir == wd

    def rebuild_config(self, cfg):
        cfg = super().rebuild_config(cfg)
        self._handkp_sections = set(cfg.keys())  # before cfg_options are merged: what a key may name
        return cfg

    # ------------------------------------------------------------------ model
    def get_or_download_model_dir(self, model, model_revision=None, third_party=None):
        """A local directory is used as it is (ModelScope would query the hub about it, ~25 s
        offline); a model id is downloaded with ``snapshot_download``."""
        if os.path.exists(model):
            return model if os.path.isdir(model) else os.path.dirname(model)
        return super().get_or_download_model_dir(model, model_revision, third_party)

    def get_metrics(self):
        metrics = self.cfg.safe_get('evaluation.metrics')
        if metrics is None:
            metrics = {'type': 'EasyCVMetric'}
        if isinstance(metrics, (str, Mapping)):
            metrics = [metrics]
        return list(metrics)

    def build_model(self):
        """The registered ModelScope model of the directory (``HandKeypointsModel``) with its weights;
        a directory without ``pytorch_model.pt`` (a configuration only) starts from random weights."""
        from modelscope.models import Model

        from .model_dir import WEIGHTS_FILE
        has_weights = os.path.isfile(os.path.join(self.model_dir, WEIGHTS_FILE))
        extra = {}
        if not has_weights:
            logger.warning(f'{self.model_dir} has no {WEIGHTS_FILE}: the network starts from random weights '
                                '(training from scratch).')
            extra['load_weights'] = False
        try:
            model = Model.from_pretrained(self.model_dir, cfg_dict=self.cfg, trust_remote_code=False, **extra)
        finally:  # from_pretrained writes its keyword arguments into cfg.model; keep them out of the export
            for k in extra:
                self.cfg.model.pop(k, None)
        if not isinstance(model, torch.nn.Module) and hasattr(model, 'model'):
            model = model.model
        find_hand_net(model)  # fail early with a clear message
        return model

    @property
    def hand_net(self) -> TopDownHandModel:
        return find_hand_net(self.unwrap_module(self.model))

    # ------------------------------------------------------------------ datasets
    def _dataset_kwargs(self, model_cfg: Config, train: bool) -> dict:
        from .model_dir import keypoint_model_cfg
        mc = keypoint_model_cfg(_plain(model_cfg))
        section = _plain(model_cfg.safe_get(f'dataset.{"train" if train else "val"}') or {})
        pipeline = section.get('pipeline') if train else []
        data_cfg = dict((section.get('data_source') or {}).get('data_cfg') or {})
        data_cfg.update(image_size=mc['image_size'], heatmap_size=mc['heatmap_size'],
                        num_joints=int(mc['keypoint_head'].get('out_channels', 21)))
        return dict(data_cfg=data_cfg, pipeline=pipeline, test_mode=not train, skip_invalid=self._handkp_skip_invalid,
                    seed=self._seed)

    def _from_location(self, location, split, kwargs, data_root=None):
        if isinstance(location, Mapping):  # an EasyCV data_source dict
            src = substitute_data_root(dict(location), data_root)
            if 'ann_file' not in src:
                raise DatasetError(f'a dataset dict needs "ann_file" (and "img_prefix"), got {sorted(src)}')
            return CocoWholeBodyHandDataset(src['ann_file'], src.get('img_prefix'), data_root=data_root, **kwargs)
        path = os.path.abspath(os.path.expanduser(os.fspath(location)))
        if os.path.isdir(path):
            ann, prefix, hints = resolve_split_folder(path, split, train=not kwargs['test_mode'])
            return CocoWholeBodyHandDataset(ann, prefix, prefix_hints=hints, **kwargs)
        if os.path.isfile(path):
            return CocoWholeBodyHandDataset(path, None, **kwargs)
        raise DatasetError(f'dataset path {path!r} does not exist; pass a COCO-WholeBody annotation file, a dataset '
                           'folder (annotations/*.json + images/), or an MsDataset.')

    def _from_ms_dataset(self, ds: MsDataset, kwargs, model_cfg):
        from modelscope.msdatasets.dataset_cls.dataset import ExternalDataset
        inst = ds.ds_instance
        if isinstance(inst, Dataset) and not hasattr(inst, 'features'):
            return inst  # already converted to a torch dataset (e.g. to_custom_dataset)
        section = _plain(model_cfg.safe_get(f'dataset.{"val" if kwargs["test_mode"] else "train"}') or {})
        source = section.get('data_source') or {}
        if isinstance(inst, ExternalDataset):
            split_config = inst.config_kwargs.get('split_config') or {}
            if len(split_config) != 1:
                raise DatasetError(f'the MsDataset has splits {sorted(split_config)}; load one split '
                                   "(MsDataset.load(..., split='train')).")
            split, root = next(iter(split_config.items()))
            root = str(root).rstrip(os.sep)
            ann = source.get('ann_file')
            if ann and ('${data_root}' in str(ann) or os.path.exists(os.path.join(root, str(ann)))):
                return self._from_location({'ann_file': ann, 'img_prefix': source.get('img_prefix')}, split, kwargs,
                                           data_root=root)
            return self._from_location(root, split, kwargs)
        ctx = getattr(ds, '_dataset_context_config', None)
        name = getattr(ctx, 'dataset_name', None)
        if name and os.path.exists(str(name)):
            return self._from_location(name, getattr(ctx, 'split', None), kwargs)
        raise DatasetError('cannot find the files behind this MsDataset (not a zip dataset split or a local '
                           "folder loaded with MsDataset.load(FOLDER, split='train')); pass the dataset folder or "
                           'annotation file instead, or load it with split=.')

    def build_dataset(self, datasets, model_cfg, mode, preprocessor=None, **kwargs):
        train = mode == ModeKeys.TRAIN
        dkw = self._dataset_kwargs(model_cfg, train)
        if datasets is None:
            return self._dataset_from_config(model_cfg, mode, dkw)
        if isinstance(datasets, MsDataset):
            return self._from_ms_dataset(datasets, dkw, model_cfg)
        if type(datasets) is ConcatDataset:  # a plain one only: a subclass keeps its own __getitem__ (a repeated
            # index with other ground truth is then refused by the metric)
            # each part numbers its samples from 0: the metric, which counts each index once (a distributed
            # sampler repeats samples), kept only the first part's hands
            return _IndexedConcat(datasets.datasets)
        if isinstance(datasets, Dataset):
            return datasets
        if isinstance(datasets, Mapping) and datasets and all(isinstance(v, MsDataset) for v in datasets.values()):
            which = 'train' if train else 'val'
            raise DatasetError(f'{"train" if train else "eval"}_dataset is a dict of MsDatasets {sorted(datasets)} '
                               '(what MsDataset.load(FOLDER) returns without split=); pass one split: '
                               f"MsDataset.load(FOLDER, split='{which}'), or the dataset folder itself.")
        if isinstance(datasets, (str, os.PathLike, Mapping)):
            return self._from_location(datasets, None, dkw)
        if isinstance(datasets, Sequence) and datasets:
            parts = [self.build_dataset(d, model_cfg, mode, preprocessor) for d in datasets]
            return _IndexedConcat(parts)
        raise TypeError(f'unsupported {"train" if train else "eval"}_dataset of type {type(datasets).__name__}: pass '
                        'an MsDataset, a dataset folder or annotation file path, or a torch Dataset.')

    def _dataset_from_config(self, model_cfg, mode, dkw):
        which = 'train' if mode == ModeKeys.TRAIN else 'val'
        if model_cfg.safe_get('dataset.name'):  # a hub dataset named by the configuration
            ds = MsDataset.load(model_cfg.safe_get('dataset.name'),
                                subset_name=model_cfg.safe_get('dataset.subset', default='default'),
                                split=model_cfg.safe_get(f'dataset.split_{mode}'))
            return self._from_ms_dataset(ds, dkw, model_cfg)
        source = _plain(model_cfg.safe_get(f'dataset.{which}.data_source') or {})
        ann = source.get('ann_file')
        if not ann:
            return None
        if '${data_root}' in str(ann) or not os.path.isfile(os.path.abspath(str(ann))):
            self.logger.warning(f'no {"train" if which == "train" else "eval"}_dataset given and the configured '
                                f'dataset.{which}.data_source.ann_file {ann!r} is not available; pass '
                                f'{"train" if which == "train" else "eval"}_dataset=... to use this trainer for '
                                f'{"training" if which == "train" else "evaluation"}.')
            return None
        return self._from_location(source, None, dkw)

    def _sampler(self, dataset, shuffle: bool):
        rank, world = 0, 1
        if self._dist:
            rank, world = dist.get_rank(), dist.get_world_size()
        return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self._seed)

    def _loader(self, dataset, cfg: Mapping, shuffle: bool, collate_fn):
        cfg = dict(cfg or {})
        batch_size = int(cfg.pop('batch_size_per_gpu', cfg.pop('batch_size', 32)))
        workers = int(cfg.pop('workers_per_gpu', cfg.pop('num_workers', 2)))
        cfg.pop('shuffle', None)
        cfg.pop('dist', None)
        drop_last = bool(cfg.pop('drop_last', False))
        if drop_last and not shuffle:  # evaluation: every sample counts (a train-loader setting must not drop any)
            drop_last = False
        persistent = bool(cfg.pop('persistent_workers', False)) and workers > 0
        pin = bool(cfg.pop('pin_memory', torch.cuda.is_available() and self.device.type == 'cuda'))
        sampler = self._sampler(dataset, shuffle)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=collate_fn, drop_last=drop_last, persistent_workers=persistent,
                          pin_memory=pin, **cfg)

    def get_train_dataloader(self):
        if self.train_dataset is None:
            raise ValueError('no training data: pass train_dataset= (an MsDataset split, a COCO-WholeBody folder '
                             'or annotation file) to build_trainer, or set dataset.train.data_source in the '
                             'configuration.')
        loader = self._loader(self.train_dataset, self.cfg.train.get('dataloader', {}), True, self.train_data_collator)
        if len(loader) == 0:  # the LR schedule failed on it as "iters_per_epoch must be >= 1, got 0"
            n, world = len(self.train_dataset), (dist.get_world_size() if self._dist else 1)
            per_process = f' ({len(loader.sampler)} per process of {world})' if world > 1 else ''
            why = (f'fewer than the batch size {loader.batch_size} with train.dataloader.drop_last=true' if n else
                   'it is empty')
            raise ValueError(f'no training iteration per epoch: the training set has {n} hands{per_process}, {why}. '
                             'Lower the batch size (--batch-size / train.dataloader.batch_size_per_gpu), set '
                             'drop_last to false, or add training data.')
        return loader

    def get_eval_data_loader(self):
        if self.eval_dataset is None:
            raise ValueError('no evaluation data: pass eval_dataset= (an MsDataset split, a COCO-WholeBody folder '
                             'or annotation file) to build_trainer.')
        if len(self.eval_dataset) == 0:  # all metrics would be 0.0, as if the model had found nothing
            raise ValueError('the evaluation dataset is empty (0 hands): there is nothing to evaluate; pass a dataset '
                             'with hands as eval_dataset.')
        cfg = self.cfg.safe_get('evaluation.dataloader') or self.cfg.train.get('dataloader', {})
        return self._loader(self.eval_dataset, cfg, False, self.eval_data_collator)

    # ------------------------------------------------------------------ hooks
    def register_hook_from_cfg(self, hook_cfg):
        out = []
        cfgs = []
        best = None
        for h in hook_cfg:
            h = dict(h)
            t = h.get('type')
            if t == 'DDPHook':
                continue  # replaced by _DistributedHook (CPU/gloo capable)
            if t == 'TensorboardHook' and importlib.util.find_spec('tensorboard') is None:
                self.logger.warning('TensorboardHook skipped: the tensorboard package is not installed '
                                    '(pip install tensorboard to get TensorBoard logs).')
                continue
            if t == 'EvaluationHook' and getattr(self, 'eval_dataset', None) is None:
                self.logger.warning('EvaluationHook skipped: no eval_dataset was given, so training runs without '
                                    'evaluation and without best-checkpoint selection.')
                continue
            if t == 'BestCkptSaverHook':
                best = h
                continue
            if t in _HOOK_REPLACEMENTS:
                h['type'] = _HOOK_REPLACEMENTS[t]
                if t == 'CheckpointHook':
                    h = {k: v for k, v in h.items() if k in ('type', 'interval', 'save_last', 'by_epoch')}
                if t == 'TextLoggerHook':
                    h = {k: v for k, v in h.items() if k in ('type', 'interval', 'ignore_last', 'reset_flag',
                                                             'out_dir', 'ignore_rounding_keys', 'rounding_digits')}
            cfgs.append(h)
        if best is not None:
            self._handkp_best_cfg = {k: best[k] for k in ('metric_key', 'rule', 'save_best') if k in best}
            if best.get('restore_best'):
                self.logger.warning('train.checkpoint.best.restore_best is not supported: the trainer keeps the last '
                                    'weights; the best ones are in work_dir/output_best/ (load that directory).')
        init_stage = not any(getattr(hk, '_handkp_internal', False) for hk in self.hooks)
        if init_stage:  # the trainer's own hook list (not the optimizer/lr hooks added by train())
            types = {c['type'] for c in cfgs}
            if 'HandCheckpointHook' not in types:
                cfgs.append({'type': 'HandCheckpointHook', 'interval': 1})
            if 'HandTextLoggerHook' not in types:
                cfgs.append({'type': 'HandTextLoggerHook', 'interval': 10})
            for c in cfgs:
                if c['type'] == 'HandCheckpointHook' and self._handkp_best_cfg:
                    c.update(self._handkp_best_cfg)
        out = super().register_hook_from_cfg(cfgs)
        if init_stage:
            internal = [_EpochHook()]
            if self._distributed_requested():
                internal.append(_DistributedHook())
            for hk in internal:
                hk._handkp_internal = True
                self.register_hook(hk)
        return out

    def _distributed_requested(self) -> bool:
        launcher = getattr(self, 'launcher', None)
        return launcher is not None or int(os.environ.get('WORLD_SIZE', '1')) > 1

    # ------------------------------------------------------------------ optimisation
    def create_optimizer_and_scheduler(self):
        optimizer, lr_scheduler = self.optimizers
        optim_options = {}
        if optimizer is None:
            optimizer_cfg = copy.deepcopy(self.cfg.train.get('optimizer', None))
            if optimizer_cfg is None:
                raise ValueError('no optimizer: set train.optimizer in the configuration (e.g. '
                                 '{"type": "Adam", "lr": 0.0005}) or pass optimizers=(optimizer, scheduler).')
            optim_options = dict(optimizer_cfg.pop('options', {}) or {})
            optimizer = self.build_optimizer(cfg=optimizer_cfg)
        lr_options = {}
        lr_cfg = self.cfg.train.get('lr_scheduler', None) if lr_scheduler is None else None
        if lr_cfg is not None:
            lr_cfg = _plain(lr_cfg)
            lr_options = dict(lr_cfg.pop('options', {}) or {})
            if 'policy' in lr_cfg:  # EasyCV / mmcv lr_config
                lr_scheduler = EasyCVLrScheduler(optimizer, iters_per_epoch=self.iters_per_epoch,
                                                 max_epochs=self._max_epochs, **easycv_lr_config(lr_cfg))
                lr_options = {**lr_options, 'by_epoch': False}
            else:
                lr_scheduler = self.build_lr_scheduler(cfg=ConfigDict(lr_cfg), default_args={'optimizer': optimizer})
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        return self.optimizer, self.lr_scheduler, optim_options, lr_options

    def train_step(self, model, inputs):
        model.train()
        self._mode = ModeKeys.TRAIN
        inner = self.unwrap_module(self.model)
        if isinstance(inner, TopDownHandModel):
            heatmaps = model(inputs['img'])
            outputs = {'loss': inner.loss(heatmaps, inputs['target'], inputs['target_weight'])}
        elif isinstance(inputs, Mapping) and not func_receive_dict_inputs(inner.forward):
            outputs = model.forward(**inputs)
        else:
            outputs = model.forward(inputs)
        if hasattr(outputs, 'to_dict') and not isinstance(outputs, dict):
            outputs = outputs.to_dict()
        if not isinstance(outputs, Mapping) or 'loss' not in outputs:
            raise TypeError(f'the model\'s training forward must return a dict with "loss", got {type(outputs)}')
        log_vars = {}
        for key, value in outputs.items():
            if 'loss' in key and isinstance(value, torch.Tensor):
                v = value.detach().clone()
                if self._dist:
                    dist.all_reduce(v)
                    v /= dist.get_world_size()
                log_vars[key] = v.item()
        self.log_buffer.update(log_vars)
        self.train_outputs = dict(outputs)

    # ------------------------------------------------------------------ work_dir / state
    def _artefacts(self):
        return [os.path.join(self.work_dir, a) for a in WORK_DIR_ARTEFACTS
                if os.path.exists(os.path.join(self.work_dir, a))]

    def _prepare_work_dir(self, resume: bool, overwrite: bool):
        found = self._artefacts()
        # resume=True without latest.pth starts from the beginning and writes output/ like a fresh run
        fresh = not resume or not os.path.isfile(os.path.join(self.work_dir, LATEST_CHECKPOINT))
        model_dir = os.path.realpath(self.model_dir) if getattr(self, 'model_dir', None) else None
        for p in found:
            if model_dir and os.path.realpath(p) == model_dir and (overwrite or fresh):
                raise FileExistsError(f'the model directory you train from ({self.model_dir}) is {p}, which this '
                                      'run would replace; copy it elsewhere or choose another work_dir.')
        if found and resume and fresh and not overwrite:
            for p in found:
                foreign = _foreign_entries(p)
                if foreign:
                    raise FileExistsError(
                        f'resume=True found no {LATEST_CHECKPOINT} in {self.work_dir!r} to continue from, so this '
                        f'run starts from the beginning and would write into {p}, which holds {foreign} that this '
                        'trainer did not write; move those files (or the folder) elsewhere, or choose another '
                        'work_dir.')
        if found and not (resume or overwrite):
            names = ', '.join(os.path.basename(p) for p in found)
            entries = {os.path.basename(p): _foreign_entries(p) for p in found}
            foreign = [f'{name}: {", ".join(e)}' for name, e in entries.items() if e]
            if foreign and len(foreign) == len(found):  # no run of this trainer: --overwrite would be refused
                raise FileExistsError(
                    f'work_dir {self.work_dir!r} holds files with the names this trainer writes, but not written '
                    f'by it ({"; ".join(foreign)}); choose another work_dir, or move them elsewhere.')
            raise FileExistsError(
                f'work_dir {self.work_dir!r} already holds a training run ({names}). Pass resume=True (CLI: '
                '--resume) to continue it, overwrite=True (--overwrite) to replace it, or choose another work_dir.')
        if found and overwrite and not resume:
            for p in found:
                foreign = _foreign_entries(p)
                if foreign:
                    raise FileExistsError(
                        f'overwrite=True would delete {p}, but it holds {foreign} that this trainer did not write; '
                        'move those files (or the folder) elsewhere, or choose another work_dir.')
            if is_master():
                for p in found:
                    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
                self.logger.info(f'overwrite=True: removed the previous run in {self.work_dir}')
        if self._dist:
            dist.barrier()

    def training_state(self) -> dict:
        """Everything needed to continue training (loadable with ``torch.load(weights_only=True)``)."""
        hooks = {}
        for key, hook in _hook_keys(self.hooks):
            if hasattr(hook, 'state_dict') and type(hook).__module__.startswith('modelscope_handkp'):
                hooks[key] = hook.state_dict()
        world = dist.get_world_size() if self._dist else 1
        return {
            'format': STATE_FORMAT,
            'version': 1,
            'epoch': self.epoch + 1,  # epochs completed (saved after an epoch)
            'iter': self.iter,  # iterations completed
            'max_epochs': self._max_epochs,
            'seed': self._seed,
            'world_size': world,
            'state_dict': {k: v.detach().cpu() for k, v in self.hand_net.state_dict().items()},
            'optimizer': self.optimizer.state_dict(),
            'lr_scheduler': self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            'rng': capture_rng_state(),
            'hooks': hooks,
        }

    def load_training_state(self, path: str) -> dict:
        """Restore model, optimizer, scheduler, epoch/iteration, hook and RNG states from ``path``."""
        try:
            state = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:
            raise RuntimeError(f'cannot read the training state {path!r} ({type(e).__name__}: {e}); delete it and '
                               'pass overwrite=True to start again.') from e
        if not isinstance(state, Mapping) or state.get('format') != STATE_FORMAT:
            raise RuntimeError(f'{path!r} is not a modelscope_handkp training state (another program\'s '
                               'checkpoint?); to start from its weights pass it as checkpoint_path= / --init-from '
                               'with a new work_dir, or move it away.')
        own = self.hand_net.state_dict()
        saved = state['state_dict']
        clash = sorted(k for k in set(own) | set(saved)
                       if k not in own or k not in saved or tuple(own[k].shape) != tuple(saved[k].shape))
        if clash:
            raise RuntimeError(
                f'{path!r} holds the training state of another network than this model\'s ({len(clash)} weights '
                f'differ in name or shape, e.g. {clash[0]}): resume with the model the run was started with '
                '(the model= / --model given then), or train this model in a new work_dir.')
        self.hand_net.load_state_dict(saved)
        self.optimizer.load_state_dict(state['optimizer'])
        if self.lr_scheduler is not None and state.get('lr_scheduler') is not None:
            iters = getattr(self.lr_scheduler, 'iters_per_epoch', None)
            # the schedule comes from the configuration of THIS run (e.g. more epochs, other decay
            # steps); only the counters come from the checkpoint
            configured = {k: v for k, v in vars(self.lr_scheduler).items()
                          if k in ('step_at', 'gamma', 'max_epochs', 'min_lr', 'min_lr_ratio', 'power', 'policy',
                                   'by_epoch', 'warmup', 'warmup_ratio', 'warmup_iters')}
            self.lr_scheduler.load_state_dict(state['lr_scheduler'])
            changed = {k: (getattr(self.lr_scheduler, k), v) for k, v in configured.items()
                       if getattr(self.lr_scheduler, k) != v}
            if changed:
                self.logger.info('learning-rate schedule changed since the checkpoint (checkpoint -> now): '
                                 + ', '.join(f'{k} {a} -> {b}' for k, (a, b) in changed.items()))
            vars(self.lr_scheduler).update(configured)
            if iters is not None and iters != self.lr_scheduler.iters_per_epoch:
                self.logger.warning(f'iterations per epoch changed since the checkpoint '
                                    f'({self.lr_scheduler.iters_per_epoch} -> {iters}): batch size, dataset or '
                                    'number of processes differ; the schedule goes on from epoch '
                                    f'{int(state["epoch"])}.')
                self.lr_scheduler.iters_per_epoch = iters
            if hasattr(self.lr_scheduler, 'resume_at'):
                self.lr_scheduler.resume_at(int(state['epoch']), int(state['iter']))
        self._epoch = int(state['epoch'])
        self._iter = int(state['iter'])
        self._inner_iter = 0
        saved = dict(state.get('hooks') or {})
        for key, hook in _hook_keys(self.hooks):
            if hasattr(hook, 'load_state_dict'):
                hook_state = saved.get(key, _legacy_hook_state(saved, key))
                if hook_state is not None:
                    hook.load_state_dict(hook_state)
        world = dist.get_world_size() if self._dist else 1
        if state.get('world_size', 1) != world:
            self.logger.warning(f'resuming a run of {state.get("world_size")} processes with {world}.')
        restore_rng_state(state.get('rng'))
        self.logger.info(f'Resumed from {path}: {self._epoch} epochs / {self._iter} iterations done.')
        return state

    # ------------------------------------------------------------------ console and text log
    def _attach_run_log(self):
        """The handler of this run's text log, ``work_dir/<timestamp>.log``. ModelScope adds a log file only
        for the first trainer of a process, so a second one would log into the first one's work dir: the
        run-log handlers of earlier trainers are taken off the ``modelscope`` logger (other handlers stay)."""
        import logging
        from modelscope.utils.logger import formatter
        target = os.path.join(os.path.abspath(self.work_dir), f'{self.timestamp}.log')
        mine = None
        for h in list(self.logger.handlers):
            if not isinstance(h, logging.FileHandler):
                continue
            if h.baseFilename == target:
                mine = h
            elif getattr(h, '_handkp_run_log', False) or _RUN_LOG_NAME.fullmatch(os.path.basename(h.baseFilename)):
                self.logger.removeHandler(h)
                h.close()
        if mine is None and is_master():
            mine = logging.FileHandler(target, 'a', encoding='utf-8')
            mine.setFormatter(formatter)
            mine.setLevel(self.logger.level or logging.INFO)
            mine._handkp_run_log = True
            self.logger.addHandler(mine)
        return mine

    def _detach_run_log(self) -> None:
        h = getattr(self, '_handkp_log_handler', None)
        if h is not None:
            self.logger.removeHandler(h)
            h.close()
            self._handkp_log_handler = None

    def _log_to_files(self, text: str) -> None:
        """``text`` into the run's text log only, not onto the console."""
        import logging
        h = getattr(self, '_handkp_log_handler', None)
        if h is not None:
            h.handle(self.logger.makeRecord(self.logger.name, logging.INFO, __file__, 0, text, None, None))

    def print_cfg(self):
        """ModelScope prints the whole configuration (hundreds of lines) to the console; here it goes to the
        run's text log, and the console gets one line naming that file. (ModelScope calls this right after
        it has set up its logger, so the run's log handler is attached here.)"""
        self._handkp_log_handler = self._attach_run_log()
        if is_master():
            cfg = _plain(self.cfg)
            cfg.setdefault('train', {})['work_dir'] = self.work_dir
            self._log_to_files('configuration of this run:\n' + json.dumps(cfg, indent=4, default=str))
            if self._handkp_log_handler is not None:
                self.logger.info(f'configuration and hook list of this run: {self._handkp_log_handler.baseFilename}')

    def print_hook_info(self):
        if is_master() and not getattr(self, '_hook_info_printed', False):
            self._log_to_files(self.get_hook_info())
            self._hook_info_printed = True

    # ------------------------------------------------------------------ model directory
    def _export_configuration(self) -> dict:
        if self._handkp_export_cfg is None:
            from .model_dir import detector_spec, handkp_configuration, keypoint_model_cfg
            cfg = _plain(self.cfg)
            model_cfg = keypoint_model_cfg(cfg)
            try:
                det = detector_spec(cfg, self.model_dir)
            except Exception as e:  # noqa: BLE001 - an unusable detector section is replaced, and said so
                self.logger.warning(f'the detector section of the configuration is not usable ({e}); the trained '
                                    'model directory gets detector type "none" (pass boxes= to the pipeline).')
                det = None
            export = handkp_configuration(model_cfg, None, base=cfg)
            export['detector'] = {'type': 'none'}
            self._handkp_detector_files = None
            if det is not None:
                if det.type == 'ssdlite':
                    if det.config_file and det.checkpoint and os.path.isfile(det.config_file) \
                            and os.path.isfile(det.checkpoint):
                        cfg_name = 'config' + (os.path.splitext(det.config_file)[1] or '.py')
                        export['detector'] = {'type': 'ssdlite', 'config_file': f'detection/{cfg_name}',
                                              'checkpoint': 'detection/' + os.path.basename(det.checkpoint),
                                              'score_threshold': float(det.score_threshold)}
                        self._handkp_detector_files = [(det.config_file, export['detector']['config_file']),
                                                       (det.checkpoint, export['detector']['checkpoint'])]
                    else:
                        self.logger.warning('the detector files named by the configuration are missing; the trained '
                                            'model directory gets detector type "none".')
                else:
                    export['detector'] = det.to_config()
            export.setdefault('train', {})
            strip_run_folders(export['train'])
            self._handkp_export_cfg = export
        return self._handkp_export_cfg

    def export_model_dir(self, dst: str, meta: Mapping | None = None, overwrite: bool = False) -> str:
        """Write the current weights as a model directory (configuration.json + pytorch_model.pt, and the
        detector files its configuration names), built next to ``dst`` and renamed into place as a whole;
        returns ``dst``.  An existing non-empty ``dst`` is only replaced with ``overwrite=True`` (the
        checkpoint hook does so for ``<work_dir>/output*``)."""
        md.check_target(os.path.abspath(dst), None, overwrite)
        export = self._export_configuration()
        info = {'trained_by': TRAINED_BY, **_plain(dict(meta or {}))}
        md.publish_model_folder(dst, export, self.hand_net.state_dict(), info, self._handkp_detector_files or [])
        return dst

    # ------------------------------------------------------------------ train / evaluate
    def train(self, checkpoint_path=None, load_all_state=True, *args, resume=None, overwrite=None, **kwargs):
        """Train for ``train.max_epochs``.  ``resume=True`` continues from ``<work_dir>/latest.pth``;
        ``checkpoint_path`` starts from other weights (a model file or a training state).  A work_dir
        this trainer created is removed again when the run fails before writing anything but logs."""
        try:
            return self._train(checkpoint_path, load_all_state, *args, resume=resume, overwrite=overwrite, **kwargs)
        except Exception:
            if self._handkp_created_work_dir and all(n.endswith('.log') for n in os.listdir(self.work_dir)):
                self._detach_run_log()
                _remove_if_only_logs(self.work_dir)
            raise

    def _train(self, checkpoint_path, load_all_state, *args, resume=None, overwrite=None, **kwargs):
        resume = self._handkp_resume if resume is None else bool(resume)
        overwrite = self._handkp_overwrite if overwrite is None else bool(overwrite)
        latest = os.path.join(self.work_dir, LATEST_CHECKPOINT)
        if checkpoint_path is not None:
            self._check_start_checkpoint(checkpoint_path, resume, overwrite)
        self._prepare_work_dir(resume, overwrite)
        self._mode = ModeKeys.TRAIN
        self.train_dataloader = self.get_train_dataloader()
        self.data_loader = self.train_dataloader
        self.images_per_iter = self.train_dataloader.batch_size * (dist.get_world_size() if self._dist else 1)
        self.register_optimizers_hook()
        self.register_processors()
        self.print_hook_info()
        self.model.to(self.device)
        if self._dist and not isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            dev = [self.device.index] if self.device.type == 'cuda' else None
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=dev, find_unused_parameters=bool(self.cfg.safe_get(
                    'train.find_unused_parameters', default=False)))
        if resume and os.path.isfile(latest):
            if checkpoint_path is not None:
                self.logger.warning(f'resume=True continues the run in {latest}; checkpoint_path={checkpoint_path!r} '
                                    'is not used (it only gives the starting weights of a new run).')
            self.load_training_state(latest)
        elif checkpoint_path is not None:
            if resume:
                self.logger.info(f'resume=True but {latest} does not exist yet: starting from {checkpoint_path}.')
            self._load_weights(checkpoint_path, load_all_state)
        elif resume:
            self.logger.info(f'resume=True but {latest} does not exist yet: starting from the beginning.')
        if self._epoch >= self._max_epochs:
            self.logger.info(f'training already finished ({self._epoch}/{self._max_epochs} epochs).')
            return
        self._check_best_metric()
        self.model.train()
        self.train_loop(self.train_dataloader)

    def _check_best_metric(self) -> None:
        """The best checkpoint's metric must be one the evaluation computes: this failed only at the first
        evaluation, after the first epoch (or interval) of training."""
        from .hooks import HandCheckpointHook, HandEvaluationHook
        if getattr(self, 'eval_dataset', None) is None or not any(isinstance(h, HandEvaluationHook)
                                                                  for h in self.hooks):
            return
        names = set()
        for cfg in self.metrics:
            metric = _build_metric(cfg)
            if not isinstance(metric, evaluation.EasyCVMetric):
                return  # another metric's names are known only once it has run
            names.update(n for ev in metric.evaluators for n in ev.metric_names)
        for hook in self.hooks:
            if isinstance(hook, HandCheckpointHook) and hook.save_best and hook.metric_key not in names:
                raise ValueError(f'the best checkpoint is chosen by {hook.metric_key!r} (train.checkpoint.best.'
                                 f'metric_key), which the evaluation does not compute (it computes {sorted(names)}); '
                                 'add it to evaluation.metrics evaluators\' metric_names or choose one of these.')

    def _check_start_checkpoint(self, path, resume: bool, overwrite: bool):
        """Refuse, before the work_dir is touched, a start checkpoint that is missing or that this run deletes."""
        if not isinstance(path, (str, os.PathLike)) or not os.path.exists(path):
            raise FileNotFoundError(f'checkpoint_path {path!r} does not exist; pass the path of a weights file '
                                    '(e.g. <model dir>/pytorch_model.pt) or of a training state (latest.pth).')
        if resume and os.path.isfile(os.path.join(self.work_dir, LATEST_CHECKPOINT)):
            return  # the run continues; nothing is deleted
        if not overwrite:
            return  # _prepare_work_dir refuses to write into an existing run
        real = os.path.realpath(path)
        for p in self._artefacts():
            art = os.path.realpath(p)
            if real == art or real.startswith(art.rstrip(os.sep) + os.sep):
                raise FileExistsError(
                    f'checkpoint_path {path!r} is part of the previous run in {self.work_dir!r} ({p}), which '
                    'overwrite=True deletes before training; copy it elsewhere and pass that path, or pass '
                    'resume=True (without overwrite) to continue that run.')

    def _load_weights(self, path, load_all_state=True):
        from .checkpoint import load_checkpoint
        obj = torch.load(path, map_location='cpu', weights_only=True) if os.path.isfile(path) else None
        if isinstance(obj, Mapping) and obj.get('format') == STATE_FORMAT and load_all_state:
            self.load_training_state(path)
        else:
            load_checkpoint(self.hand_net, path, strict=True)
            self.logger.info(f'loaded weights from {path}')

    def evaluate(self, checkpoint_path=None, saving_fn=None, **kwargs):
        """Evaluate on ``eval_dataset``; returns ``{'PCK', 'AUC', 'EPE', 'NME'}`` (the configured names)."""
        if checkpoint_path is not None:
            from .checkpoint import load_checkpoint
            load_checkpoint(self.hand_net, checkpoint_path, strict=kwargs.get('strict', True))
        self.model.to(self.device)
        self._mode = ModeKeys.EVAL
        if self.eval_dataloader is None:
            self.eval_dataloader = self.get_eval_data_loader()
        self.data_loader = self.eval_dataloader
        metric_classes = [_build_metric(m) for m in self.metrics]
        if saving_fn is not None:
            from modelscope.metrics.prediction_saving_wrapper import PredictionSavingWrapper
            metric_classes.append(PredictionSavingWrapper(saving_fn=saving_fn))
        for m in metric_classes:
            m.trainer = self
        values = self.evaluation_loop(self.eval_dataloader, metric_classes)
        self._metric_values = values
        return values

    def evaluation_step(self, data):
        net = self.hand_net
        net.eval()
        _, post, kernel = md.test_settings(net.cfg)
        with torch.no_grad():
            heatmaps = net.forward_heatmaps(data['img'], flip_test=net.flip_test)
        coords, scores = decode_heatmaps(heatmaps, data['center'].cpu().numpy(), data['scale'].cpu().numpy(),
                                         post_process=post, kernel=kernel)
        return {'preds': coords, 'scores': scores}

    def evaluation_loop(self, data_loader, metric_classes):
        self.invoke_hook('before_val')
        net = self.hand_net
        was_training = net.training
        if self._dist:  # evaluate the same weights everywhere (BN statistics differ between processes)
            for b in net.buffers():
                dist.broadcast(b.data, 0)
        n = 0
        t0 = time.time()
        for batch in data_loader:
            batch = to_device(batch, self.device)
            result = self.evaluation_step(batch)
            for m in metric_classes:
                m.add(result, batch)
            n += len(batch['img'])
        values = {}
        if self._dist:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, metric_classes)
            if is_master():
                for others in gathered[1:]:
                    for mine, other in zip(metric_classes, others):
                        mine.merge(other)
        if is_master():
            for m in metric_classes:
                values.update(m.evaluate())
        if self._dist:
            box = [values]
            dist.broadcast_object_list(box, src=0)
            values = box[0]
        if is_master():
            self.logger.info(f'Evaluation on {n} samples per process in {time.time() - t0:.1f}s: '
                             + ', '.join(f'{k}={v:.5f}' for k, v in values.items() if isinstance(v, float)))
        net.train(was_training)
        self.invoke_hook('after_val')
        return values


def _build_metric(cfg):
    """The metric of an ``evaluation.metrics`` entry; ``EasyCVMetric`` is always this package's (also when a
    working pai-easycv owns that registry name, whose metric expects EasyCV evaluators)."""
    if isinstance(cfg, Mapping) and cfg.get('type') == 'EasyCVMetric':
        return evaluation.EasyCVMetric(**{k: v for k, v in cfg.items() if k != 'type'})
    if cfg == 'EasyCVMetric':
        return evaluation.EasyCVMetric()
    return build_metric(cfg)


def _register():
    """Register the trainer and its parts with ModelScope.

    The names pai-easycv registers itself (trainer ``easycv``, ``EasyCVMetric``, ``AddLrLogHook``,
    ``HandCocoWholeBodyDataset``) are taken only when pai-easycv is absent: next to a working pai-easycv
    they stay its own (ModelScope refuses a second registration, which would break pai-easycv's import),
    and this trainer is ``build_trainer('handkp-easycv', ...)``."""
    import sys

    from . import compat
    compat.apply()  # Trainers.easycv, no pip install of pai-easycv (idempotent)
    shared = compat.serves_official_model()
    module = sys.modules[__name__]
    compat.register(TRAINERS, 'default', PRIVATE_TRAINER_NAME, HandKeypointTrainer, module)
    if shared:
        compat.register(TRAINERS, 'default', TRAINER_NAME, HandKeypointTrainer, module)
    from modelscope.msdatasets.dataset_cls.custom_datasets.builder import CUSTOM_DATASETS
    from modelscope.utils.constant import Tasks

    from modelscope.metrics.builder import METRICS
    from modelscope.trainers.hooks.builder import HOOKS
    from modelscope.trainers.lrscheduler.builder import LR_SCHEDULER

    from . import hooks
    from .datasets import coco_wholebody_hand
    if shared:
        compat.register(CUSTOM_DATASETS, Tasks.hand_2d_keypoints, 'HandCocoWholeBodyDataset',
                        coco_wholebody_hand.HandCocoWholeBodyDataset, coco_wholebody_hand)
        compat.register(METRICS, 'default', 'EasyCVMetric', evaluation.EasyCVMetric, evaluation)
        compat.register(HOOKS, 'default', 'AddLrLogHook', hooks.AddLrLogHook, hooks)
    for name in ('HandCheckpointHook', 'HandTextLoggerHook', 'HandEvaluationHook'):
        compat.register(HOOKS, 'default', name, getattr(hooks, name), hooks)
    compat.register(LR_SCHEDULER, 'default', 'EasyCVLrScheduler', hooks.EasyCVLrScheduler, hooks)


_register()
