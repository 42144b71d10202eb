#!/usr/bin/env python3
"""Run ``tools/train_small.py`` for as many epochs as fit a wall-clock budget (e.g. a rented GPU's time).

    python tools/train_within.py --budget 500 --work-dir /tmp/run -- \\
        --data .gpu/open_hands --size 192 --width 18 --blocks 2 --modules 1 1 3 2 --augment clutter \\
        --batch-size 64 --workers 12 --device gpu

First a 3-epoch calibration run (in ``<work-dir>_calibration``) measures the time per epoch
(training plus the per-epoch evaluation, between the 1st and 3rd evaluation), then the real run
gets ``floor(time left / epoch time)`` epochs (at most ``--max-epochs``), so that its learning-rate
decay (at 75 % of the epochs, train_small's rule) happens inside the budget.  The budget counts from
this script's start.  Should the real run still be going 20 s after the budget, it is stopped; its
``output_best/`` (the best validation epoch so far) is then the result.  Every evaluation is
printed with the time since the start.  Options after ``--`` go to ``train_small.py`` unchanged
(``--epochs`` and ``--work-dir`` are set here).  Nothing existing is overwritten: the work
directories must not exist.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _evaluations(work_dir: str) -> list:
    from modelscope_handkp.hooks import TRAIN_LOG, read_train_log
    try:
        return [r for r in read_train_log(os.path.join(work_dir, TRAIN_LOG)) if r.get('mode') == 'eval']
    except (OSError, ValueError):  # not written yet
        return []


def train(options: list, work_dir: str, epochs: int, log_path: str, stop_at: float, t0: float):
    """Run train_small; (times of the evaluations, return code, stopped at the deadline?)."""
    cmd = [sys.executable, os.path.join(HERE, 'train_small.py'), *options, '--work-dir', work_dir,
           '--epochs', str(epochs)]
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        stamps, stopped = [], False
        while proc.poll() is None:
            time.sleep(0.25)
            ev = _evaluations(work_dir)
            for r in ev[len(stamps):]:
                stamps.append(time.time())
                pck, auc, epe = (r.get(f'evaluation/{k}', float('nan')) for k in ('PCK', 'AUC', 'EPE'))
                print(f"[{stamps[-1] - t0:7.1f} s] {os.path.basename(work_dir)} epoch {r.get('epoch')}: "
                      f'PCK {pck:.4f}  AUC {auc:.4f}  EPE {epe:.2f} px', flush=True)
            if time.time() > stop_at:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                stopped = True
                print(f'{work_dir}: stopped at the deadline', flush=True)
                break
    return stamps, proc.returncode, stopped


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 usage='%(prog)s --budget SECONDS --work-dir DIR [--max-epochs N] -- '
                                 'TRAIN_SMALL_OPTIONS')
    ap.add_argument('--budget', type=float, required=True, help='seconds from now until the run must be finished')
    ap.add_argument('--work-dir', required=True, help='work directory of the real run (must not exist)')
    ap.add_argument('--max-epochs', type=int, default=210)
    ap.add_argument('--startup', type=float, default=30.0,
                    help='seconds the real run needs before its first epoch (data, model, workers); default 30')
    ap.add_argument('options', nargs=argparse.REMAINDER, help='options for train_small.py, after --')
    args = ap.parse_args(argv)
    t0 = time.time()
    options = args.options[1:] if args.options[:1] == ['--'] else args.options
    for bad in ('--epochs', '--work-dir', '--resume', '--overwrite'):
        if bad in options:
            ap.error(f'{bad} is set by this script; leave it out of the train_small.py options.')
    calib = args.work_dir.rstrip(os.sep) + '_calibration'
    for d in (args.work_dir, calib):
        if os.path.exists(d):
            ap.error(f'{d} exists; pass a new --work-dir (nothing is overwritten).')
    if args.budget <= 0 or args.max_epochs < 1:
        ap.error('--budget and --max-epochs must be positive.')
    os.makedirs(os.path.dirname(os.path.abspath(args.work_dir)), exist_ok=True)

    stamps, rc, _ = train(options, calib, 3, calib + '.log', t0 + args.budget / 2, t0)
    if rc != 0 or len(stamps) < 3:
        with open(calib + '.log') as f:
            sys.stderr.write(f.read()[-4000:])
        raise SystemExit(f'calibration run failed or did not finish 3 epochs in half the budget; see {calib}.log')
    per_epoch = (stamps[2] - stamps[0]) / 2
    left = t0 + args.budget - time.time() - args.startup
    epochs = min(args.max_epochs, int(left // per_epoch))
    if epochs < 1:
        raise SystemExit(f'{per_epoch:.2f} s per epoch: no epoch fits the budget left; pass a larger --budget.')
    print(f'{per_epoch:.2f} s per epoch, {left:.0f} s left: {epochs} epochs', flush=True)
    _, rc, stopped = train(options, args.work_dir, epochs, args.work_dir + '.log', t0 + args.budget + 20, t0)
    best = os.path.join(args.work_dir, 'output_best')
    print(f'done in {time.time() - t0:.0f} s; best validation epoch: {best}'
          + (' (stopped at the deadline)' if stopped else ''), flush=True)
    if rc != 0 and not stopped:
        raise SystemExit(f'training failed (exit {rc}); see {args.work_dir}.log')


if __name__ == '__main__':
    main()
