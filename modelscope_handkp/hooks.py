"""Training hooks and the EasyCV learning-rate schedule, for ModelScope's ``EpochBasedTrainer``.

* :class:`EasyCVLrScheduler` — mmcv/EasyCV ``lr_config`` semantics as a torch scheduler stepped
  every iteration: ``policy`` ``step`` (also ``fixed``, ``exp``, ``poly``, ``cosine``), by epoch,
  with ``constant``/``linear``/``exp`` warmup over ``warmup_iters`` iterations.  The published
  ``{policy: step, warmup: linear, warmup_iters: 500, warmup_ratio: 0.001, step: [170, 200]}``
  gives ``lr = base * 0.1 ** (#steps <= epoch)`` and, for iteration ``i < 500``,
  ``lr * (1 - (1 - i / 500) * (1 - 0.001))``.
* ``AddLrLogHook`` — EasyCV's hook: puts the current learning rate into the log.
* ``HandCheckpointHook`` — atomic checkpoints (temp file + rename): ``latest.pth`` (model,
  optimizer, scheduler, epoch/iteration, RNG and hook states; for ``resume``) and the model
  directory ``output/`` every ``interval`` epochs and at the end; ``output_best/`` whenever the
  evaluation metric (``PCK``) improves.
* ``HandTextLoggerHook`` — ModelScope's text logger plus images/s and ETA, appending every
  record (training and evaluation) as JSON lines to ``<work_dir>/train_log.jsonl``.
* ``HandEvaluationHook`` — ModelScope's ``EvaluationHook`` that, evaluating by epoch, also evaluates
  after the last epoch when its interval skips it (the published configuration evaluates every 10
  epochs: a shorter run ended with no metrics and no ``output_best/``).

They are registered with ModelScope (``HOOKS`` / ``LR_SCHEDULER``) by :mod:`modelscope_handkp.trainer`.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import random
import time
from bisect import bisect_right

import numpy as np
import torch
from modelscope.trainers.hooks.evaluation_hook import EvaluationHook
from modelscope.trainers.hooks.hook import Hook
from modelscope.trainers.hooks.logger.text_logger_hook import TextLoggerHook
from modelscope.trainers.hooks.priority import Priority
from modelscope.utils.constant import LogKeys, ModeKeys
from modelscope.utils.json_utils import EnhancedEncoder
from modelscope.utils.torch_utils import is_master

try:
    from torch.optim.lr_scheduler import LRScheduler as _TorchLRScheduler
except ImportError:  # torch < 2.0
    from torch.optim.lr_scheduler import _LRScheduler as _TorchLRScheduler

LATEST_CHECKPOINT = 'latest.pth'
TRAIN_LOG = 'train_log.jsonl'
OUTPUT_DIR = 'output'
BEST_OUTPUT_DIR = 'output_best'
BEST_INFO = 'best.json'


def read_train_log(path) -> list:
    """The records of a ``train_log.jsonl``. A last line cut off (a run killed while writing it, or a log
    being written now) is left out; any other line that is not JSON raises ``json.JSONDecodeError``."""
    with open(path, encoding='utf-8') as f:
        lines = [line for line in f if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    if lines:
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(lines[-1]))
    return records

POLICIES = ('step', 'fixed', 'exp', 'poly', 'cosine', 'cosineannealing')
WARMUPS = (None, 'constant', 'linear', 'exp')


# ------------------------------------------------------------------------------------------- files
def _atomic_write(path: str, mode: str, write) -> None:
    """``write(file)`` into a temporary file in the same folder, fsync, then rename over ``path``."""
    tmp = f'{path}.tmp.{os.getpid()}'
    try:
        with open(tmp, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    _atomic_write(path, 'wb', lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str) -> None:
    """Text to a temporary file in the same folder, then rename over ``path``."""
    _atomic_write(path, 'w', lambda f: f.write(text))


# ------------------------------------------------------------------------------------------- LR
class EasyCVLrScheduler(_TorchLRScheduler):
    """mmcv ``LrUpdaterHook`` semantics as an iteration-stepped torch scheduler.

    ``last_epoch`` counts iterations (the scheduler is stepped after every training iteration);
    the epoch is ``iteration // iters_per_epoch``.

    Args:
        optimizer: the optimizer.
        iters_per_epoch: training iterations per epoch (per process).
        policy: ``'step'`` (``step`` = list of epochs or an interval, ``gamma``), ``'fixed'``,
            ``'exp'`` (``gamma ** progress``), ``'poly'`` (``power``, ``min_lr``), ``'cosine'``
            (``min_lr`` or ``min_lr_ratio``).
        by_epoch: progress counted in epochs (default) or iterations.
        max_epochs: needed by ``poly`` and ``cosine``.
        warmup: ``None``, ``'constant'``, ``'linear'`` or ``'exp'``; ``warmup_iters`` iterations
            (or ``warmup_epochs`` with ``warmup_by_epoch``) starting at ``warmup_ratio`` x lr.
    """

    def __init__(self, optimizer, iters_per_epoch: int, policy: str = 'step', by_epoch: bool = True, step=None,
                 gamma: float = 0.1, min_lr: float | None = None, min_lr_ratio: float | None = None,
                 power: float = 1.0, max_epochs: int | None = None, warmup: str | None = None,
                 warmup_iters: int = 0, warmup_ratio: float = 0.1, warmup_by_epoch: bool = False,
                 last_epoch: int = -1, **unknown):
        if unknown:
            raise ValueError(f'unknown lr_scheduler options {sorted(unknown)}; supported: policy, by_epoch, step, '
                             'gamma, min_lr, min_lr_ratio, power, warmup, warmup_iters, warmup_ratio, '
                             'warmup_by_epoch.')
        policy = str(policy).lower()
        if policy not in POLICIES:
            raise ValueError(f'lr_scheduler policy {policy!r} is not supported; choose one of {POLICIES}.')
        if warmup not in WARMUPS:
            raise ValueError(f'lr_scheduler warmup {warmup!r} is not supported; choose one of {WARMUPS}.')
        if int(iters_per_epoch) < 1:
            raise ValueError(f'iters_per_epoch must be >= 1, got {iters_per_epoch}')
        if policy == 'step':
            if step is None:
                raise ValueError("lr_scheduler policy 'step' needs 'step' (a list of epochs or an interval).")
            step = [int(s) for s in step] if isinstance(step, (list, tuple)) else int(step)
        if policy in ('poly', 'cosine', 'cosineannealing') and not max_epochs:
            raise ValueError(f"lr_scheduler policy {policy!r} needs the number of epochs (train.max_epochs).")
        if min_lr is not None and min_lr_ratio is not None:
            raise ValueError('give only one of min_lr and min_lr_ratio')
        self.iters_per_epoch = int(iters_per_epoch)
        self.policy = policy
        self.by_epoch = bool(by_epoch)
        self.step_at = step
        self.gamma = float(gamma)
        self.min_lr = min_lr
        self.min_lr_ratio = min_lr_ratio
        self.power = float(power)
        self.max_epochs = max_epochs
        self.warmup = warmup
        self.warmup_ratio = float(warmup_ratio)
        self.warmup_iters = int(warmup_iters) * (self.iters_per_epoch if warmup_by_epoch else 1) if warmup else 0
        # where a resumed run started (epochs, iterations done): the epoch of a later iteration counts from
        # there with THIS run's iterations per epoch (another batch size or number of processes)
        self.resumed_epochs = 0
        self.resumed_iters = 0
        super().__init__(optimizer, last_epoch)

    def resume_at(self, epochs_done: int, iters_done: int) -> None:
        """Count epochs from a resumed run's position (see ``resumed_epochs``), and give the optimizer
        this schedule's rate for the next iteration (it holds the one the checkpoint's schedule chose,
        which differs when steps, epochs or warmup changed)."""
        self.resumed_epochs = int(epochs_done)
        self.resumed_iters = int(iters_done)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group['lr'] = lr
        self._last_lr = list(lrs)

    def regular_lr(self, base_lr: float, iteration: int) -> float:
        # iterations in units of this run's epochs
        iteration = self.resumed_epochs * self.iters_per_epoch + (iteration - self.resumed_iters)
        epoch = iteration // self.iters_per_epoch
        progress = epoch if self.by_epoch else iteration
        max_progress = (self.max_epochs if self.by_epoch else (self.max_epochs or 0) * self.iters_per_epoch)
        if self.policy == 'fixed':
            return base_lr
        if self.policy == 'step':
            exp = progress // self.step_at if isinstance(self.step_at, int) else bisect_right(self.step_at, progress)
            lr = base_lr * self.gamma**exp
            return max(lr, self.min_lr) if self.min_lr is not None else lr
        if self.policy == 'exp':
            return base_lr * self.gamma**progress
        target = self.min_lr if self.min_lr is not None else base_lr * (self.min_lr_ratio or 0.0)
        frac = min(1.0, progress / max_progress)
        if self.policy == 'poly':
            return (base_lr - (self.min_lr or 0.0)) * (1 - frac)**self.power + (self.min_lr or 0.0)
        return target + 0.5 * (base_lr - target) * (1 + math.cos(math.pi * frac))  # cosine

    def lr_at(self, base_lr: float, iteration: int) -> float:
        lr = self.regular_lr(base_lr, iteration)
        if self.warmup and iteration < self.warmup_iters:
            if self.warmup == 'constant':
                return lr * self.warmup_ratio
            if self.warmup == 'linear':
                return lr * (1 - (1 - iteration / self.warmup_iters) * (1 - self.warmup_ratio))
            return lr * self.warmup_ratio**(1 - iteration / self.warmup_iters)
        return lr

    def get_lr(self):
        return [self.lr_at(base, max(0, self.last_epoch)) for base in self.base_lrs]

    def _get_closed_form_lr(self):
        return self.get_lr()


def easycv_lr_config(cfg: dict) -> dict:
    """Translate an EasyCV/mmcv ``lr_config`` dict (``policy``, ``warmup``, ...) into
    :class:`EasyCVLrScheduler` keyword arguments (``iters_per_epoch``/``max_epochs`` not included)."""
    cfg = dict(cfg)
    cfg.pop('type', None)
    cfg.pop('options', None)
    if 'policy' not in cfg:
        raise ValueError(f'an EasyCV lr_scheduler needs a "policy", got {cfg!r}')
    cfg['policy'] = str(cfg['policy']).lower()
    if cfg['policy'] == 'cosineannealing':
        cfg['policy'] = 'cosine'
    return cfg


# ------------------------------------------------------------------------------------------- log lr
class AddLrLogHook(Hook):
    """EasyCV's ``AddLrLogHook``: put the learning rate of the first parameter group in the log."""

    PRIORITY = Priority.LOW

    def __init__(self, **kwargs):
        pass

    @staticmethod
    def _lr(trainer):
        opt = getattr(trainer, 'optimizer', None)
        if isinstance(opt, torch.optim.Optimizer):
            return opt.param_groups[0]['lr']
        return None

    def before_train_epoch(self, trainer):
        lr = self._lr(trainer)
        if lr is not None:
            trainer.log_buffer.output[LogKeys.LR] = lr

    def after_train_iter(self, trainer):
        self.before_train_epoch(trainer)


# ------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states, as plain values and tensors (loadable with
    ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': {'name': name, 'keys': torch.from_numpy(np.asarray(keys, np.int64)), 'pos': int(pos),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    if not state:
        return
    if 'python' in state:
        v = state['python']
        random.setstate((v[0], tuple(v[1]), v[2]))
    if 'numpy' in state:
        n = state['numpy']
        np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                             n['cached_gaussian']))
    if 'torch' in state:
        torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])


# ------------------------------------------------------------------------------------------- checkpoints
_BETTER = {'PCK': 'max', 'AUC': 'max', 'EPE': 'min', 'NME': 'min'}  # which way each metric improves


class HandCheckpointHook(Hook):
    """Latest (every ``interval`` epochs and the last one) and best (by ``metric_key``) checkpoints.

    Files in the trainer's ``work_dir``:

    * ``latest.pth`` — the training state for ``resume=True``;
    * ``output/`` — a model directory (``configuration.json`` + ``pytorch_model.pt``) of the latest
      weights; ``output_best/`` and ``best.json`` for the best evaluation so far.

    Every file is written to a temporary name and renamed into place, so a crash never leaves a
    half-written checkpoint.  The trainer must provide ``training_state()`` and
    ``export_model_dir(dst, meta)`` (``modelscope_handkp.trainer.HandKeypointTrainer`` does).
    """

    PRIORITY = Priority.LOW  # after EvaluationHook (NORMAL), so this epoch's metrics are known

    def __init__(self, interval: int = 1, save_last: bool = True, metric_key: str = 'PCK', rule: str = 'max',
                 save_best: bool = True, by_epoch: bool = True, **kwargs):
        if not by_epoch or kwargs.get('save_strategy', 'by_epoch') != 'by_epoch':
            raise ValueError('HandCheckpointHook saves by epoch; remove by_epoch=False / save_strategy.')
        for k in ('save_dir', 'output_dir', 'output_sub_dir', 'max_checkpoint_num', 'save_trainer_state',
                  'save_strategy', 'push_to_hub'):
            kwargs.pop(k, None)
        if kwargs:
            raise ValueError(f'HandCheckpointHook got unsupported options {sorted(kwargs)}')
        if rule not in ('max', 'min'):
            raise ValueError(f"rule must be 'max' or 'min', got {rule!r}")
        from .evaluation import SUPPORTED_METRIC_NAMES
        if save_best and metric_key not in SUPPORTED_METRIC_NAMES:
            raise ValueError(f'best-checkpoint metric_key {metric_key!r} is not a hand keypoint metric; choose one '
                             f'of {SUPPORTED_METRIC_NAMES} (PCK/AUC: higher is better, EPE/NME: lower).')
        if save_best and rule != _BETTER.get(metric_key, rule):
            raise ValueError(f"best-checkpoint metric_key {metric_key!r} with rule {rule!r} would keep the worst "
                             f"model; use rule {_BETTER[metric_key]!r}.")
        self.interval = max(1, int(interval or 1))
        self.save_last = save_last
        self.metric_key = metric_key
        self.rule = rule
        self.save_best = save_best
        self.best_metric = None
        self.best_epoch = None

    def state_dict(self):
        return {'best_metric': self.best_metric, 'best_epoch': self.best_epoch, 'metric_key': self.metric_key,
                'rule': self.rule}

    def load_state_dict(self, state):
        saved = (state.get('metric_key', self.metric_key), state.get('rule', self.rule))
        if saved != (self.metric_key, self.rule):
            # the best value of another metric (a PCK of 0.8 against EPEs of 10 px) would never be beaten
            from modelscope.utils.logger import get_logger
            get_logger().warning(f'the best checkpoint was chosen by {saved[0]} ({saved[1]}) before this resume and '
                                 f'is now chosen by {self.metric_key} ({self.rule}): {BEST_OUTPUT_DIR}/ and '
                                 f'{BEST_INFO} are replaced at the next evaluation.')
            self.best_metric = self.best_epoch = None
            return
        self.best_metric = state.get('best_metric')
        self.best_epoch = state.get('best_epoch')

    def _better(self, value) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best_metric is None:
            return True
        return value > self.best_metric if self.rule == 'max' else value < self.best_metric

    @staticmethod
    def _evaluated(trainer, tag) -> bool:
        return any(isinstance(h, EvaluationHook) and h.last_eval_tag == tag for h in trainer.hooks)

    def _keep_if_best(self, trainer, metrics, epoch: int, iters: int, where: str) -> None:
        """Export ``output_best/`` and ``best.json`` when ``metrics`` beat the best so far."""
        if self.save_best and metrics and self.metric_key not in metrics:
            raise ValueError(f'best-checkpoint metric {self.metric_key!r} is not among the evaluated metrics '
                             f'{sorted(metrics)}; add it to the evaluator\'s metric_names or choose one of these.')
        if not (self.save_best and metrics and self._better(metrics.get(self.metric_key))):
            return
        self.best_metric = float(metrics[self.metric_key])
        self.best_epoch = epoch
        if not is_master():
            return
        work_dir = trainer.work_dir
        meta = {'epoch': epoch, 'iter': iters, 'metrics': metrics}
        trainer.export_model_dir(os.path.join(work_dir, BEST_OUTPUT_DIR), meta, overwrite=True)
        atomic_write_text(os.path.join(work_dir, BEST_INFO),
                          json.dumps({'metric': self.metric_key, 'rule': self.rule, 'value': self.best_metric,
                                      'epoch': epoch, 'iter': iters, 'metrics': metrics}, indent=2,
                                     cls=EnhancedEncoder))
        trainer.logger.info(f'New best {self.metric_key} = {self.best_metric:.5f} {where}: '
                            f'{os.path.join(work_dir, BEST_OUTPUT_DIR)}')

    def after_train_iter(self, trainer):
        # evaluation every N iterations (evaluation.period.by_epoch = False): the best checkpoint is kept
        # right after each evaluation, as for epochs
        if self.save_best and self._evaluated(trainer, ('iter', trainer.iter)):
            # trainer.iter counts up after this hook: iterations completed = iter + 1
            self._keep_if_best(trainer, trainer.metric_values, trainer.epoch, trainer.iter + 1,
                               f'at iteration {trainer.iter + 1} (epoch {trainer.epoch + 1})')

    def after_train_epoch(self, trainer):
        epoch = trainer.epoch + 1  # epochs completed
        metrics = trainer.metric_values if self._evaluated(trainer, ('epoch', trainer.epoch)) else None
        self._keep_if_best(trainer, metrics, epoch, trainer.iter, f'at epoch {epoch}')
        if not is_master():
            return
        work_dir = trainer.work_dir
        meta = {'epoch': epoch, 'iter': trainer.iter, 'metrics': metrics or {}}
        if self.every_n_epochs(trainer, self.interval) or (self.save_last and self.is_last_epoch(trainer)):
            trainer.export_model_dir(os.path.join(work_dir, OUTPUT_DIR), meta, overwrite=True)
            atomic_torch_save(trainer.training_state(), os.path.join(work_dir, LATEST_CHECKPOINT))
            trainer.logger.info(f'Saved {LATEST_CHECKPOINT} and {OUTPUT_DIR}/ at epoch {epoch} in {work_dir}')


# ------------------------------------------------------------------------------------------- evaluation
class HandEvaluationHook(EvaluationHook):
    """ModelScope's ``EvaluationHook``; by epoch, the last epoch is always evaluated too."""

    def _should_evaluate(self, trainer):
        if super()._should_evaluate(trainer):
            return True
        strategy = getattr(self, 'eval_strategy', None)  # ModelScope < 1.10: a by_epoch flag instead
        by_epoch = bool(getattr(self, 'by_epoch', True)) if strategy is None else str(strategy) == 'by_epoch'
        return by_epoch and self.is_last_epoch(trainer)


# ------------------------------------------------------------------------------------------- logging
class HandTextLoggerHook(TextLoggerHook):
    """ModelScope's ``TextLoggerHook`` plus ``img_per_s`` and ``eta`` (seconds and h:mm:ss) in every
    training record, and every record appended to ``<work_dir>/train_log.jsonl``.  A record every
    ``interval`` iterations of an epoch and one for the iterations after its last full interval (averaged
    over those; ``ignore_last=True`` drops them, as ModelScope's default does).

    The ``lr`` of a training record is the learning rate the logged iteration was trained with (read
    before the iteration); the scheduler hooks put the next iteration's rate there, as they step first."""

    def __init__(self, interval=10, **kwargs):
        kwargs.pop('by_epoch', None)
        kwargs.setdefault('ignore_last', False)  # the end of each epoch is logged (see after_train_iter)
        super().__init__(by_epoch=True, interval=interval, **kwargs)
        self._t0 = None
        self._iter0 = 0
        self._iter_lr = None

    def before_train_iter(self, trainer):
        self._iter_lr = AddLrLogHook._lr(trainer)

    def after_train_iter(self, trainer):
        # the iterations after an epoch's last full interval get a record too, averaged over those iterations
        # only (ModelScope either drops them, ignore_last, or averages the last `interval` values, which
        # repeats iterations of the record before)
        rest = (trainer.inner_iter + 1) % self.interval
        if rest and self.end_of_epoch(trainer) and not self.ignore_last:
            self.fetch_tensor(trainer, rest)
            trainer.log_buffer.average(rest)
            self._record_iters = rest
            try:
                self.log(trainer)
            finally:
                self._record_iters = None
            if self.reset_flag:
                trainer.log_buffer.clear_output()
            return
        super().after_train_iter(trainer)

    def before_run(self, trainer):
        super().before_run(trainer)
        self.json_log_path = os.path.join(self.out_dir, TRAIN_LOG)
        self._t0 = time.time()
        self._iter0 = trainer.iter
        if is_master() and os.path.isfile(self.json_log_path):
            self._drop_records_after(trainer.iter, trainer)

    def _drop_records_after(self, iters_done: int, trainer) -> None:
        """A run resumed from a checkpoint trains the iterations after it again: the records an interrupted
        run wrote for them go, so that the log holds each iteration once (the text ``*.log`` keeps them).
        Records are placed by their ``total_iter`` (iterations done when written); the log of a run from
        before that field is left as it is."""
        with open(self.json_log_path, encoding='utf-8') as f:
            lines = f.readlines()
        keep = len(lines)
        for i, line in enumerate(lines):
            try:
                done = json.loads(line).get('total_iter')
            except (json.JSONDecodeError, AttributeError):
                done = None if i < len(lines) - 1 else iters_done + 1  # a last line cut off goes too
            if done is not None and done > iters_done:
                keep = i
                break
        text = ''.join(lines[:keep])
        if text and not text.endswith('\n'):  # a run killed between a record and its newline
            text += '\n'
        if text != ''.join(lines):
            atomic_write_text(self.json_log_path, text)
        if keep < len(lines):
            trainer.logger.info(f'{TRAIN_LOG}: {len(lines) - keep} records of iterations after iteration '
                                f'{iters_done} (an interrupted run) removed; they are trained again now.')

    def log(self, trainer):
        out = trainer.log_buffer.output
        if trainer.mode == ModeKeys.TRAIN and self._t0 is not None:
            done = max(1, trainer.iter + 1 - self._iter0)
            elapsed = time.time() - self._t0
            per_iter = elapsed / done
            imgs = getattr(trainer, 'images_per_iter', None)
            if imgs and LogKeys.ITER_TIME in out and out[LogKeys.ITER_TIME] > 0:
                out['img_per_s'] = round(imgs / out[LogKeys.ITER_TIME], 2)
            remaining = max(0, trainer.max_iters - trainer.iter - 1)
            out['eta_s'] = int(per_iter * remaining)
            out['eta_str'] = str(datetime.timedelta(seconds=int(per_iter * remaining)))
            if self._iter_lr is not None:
                out[LogKeys.LR] = self._iter_lr
        if trainer.mode == ModeKeys.TRAIN:
            out['total_iter'] = trainer.iter + 1
        else:  # an evaluation record: no training rate (the scheduler's is already the next epoch's)
            out.pop(LogKeys.LR, None)
            out['total_iter'] = trainer.iter
        return super().log(trainer)

    def _log_info(self, log_dict, trainer):
        rest = getattr(self, '_record_iters', None)
        if rest and log_dict.get(LogKeys.MODE) == ModeKeys.TRAIN and LogKeys.ITER_TIME in log_dict:
            # the parent's ETA adds time * interval per record; this record covers `rest` iterations only
            self.time_sec_tot -= log_dict[LogKeys.ITER_TIME] * (self.interval - rest)
        for key in ('eta_s', 'eta_str', 'total_iter'):  # the parent prints its own ETA
            if key not in self._logged_keys:
                self._logged_keys.append(key)
        super()._log_info(log_dict, trainer)
