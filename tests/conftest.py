"""Shared test fixtures.  Reference data lives in ``../shared`` next to the checkout;
tests that need it are skipped with a clear reason on a clone without it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('HANDKP_SHARED', ROOT.parent / 'shared')).resolve()
REFERENCE = SHARED / 'reference'
DATA = SHARED / 'data'

NO_SHARED = ('../shared (reference fixtures and data from the original EasyCV/mmdet code) is not '
             'present next to this checkout; set HANDKP_SHARED to its path to run this test')


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f'{NO_SHARED} (missing {path})')
    return path


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    return need(SHARED)


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    return need(REFERENCE)


@pytest.fixture(scope='session')
def data_dir() -> Path:
    return need(DATA)


def _synth_module():
    need(REFERENCE / 'synth_weights.py')
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    import synth_weights  # noqa: E402  (fixture code shipped with the reference data)
    return synth_weights


@pytest.fixture(scope='session')
def hrnet_synth_state_dict():
    """Deterministic synthetic HRNet-w18 weights (torch tensors) of the reference fixtures."""
    import torch
    sw = _synth_module()
    sd = sw.synth_state_dict(sw.load_manifest(REFERENCE / 'hrnet_w18_hand_manifest.json'))
    return {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}


@pytest.fixture(scope='session')
def ssdlite_synth_state_dict():
    """Deterministic synthetic SSDLite weights (torch tensors) of the reference fixtures."""
    import torch
    sw = _synth_module()
    sd = sw.synth_state_dict(sw.load_manifest(REFERENCE / 'ssdlite_mnv2_hand_manifest.json'))
    return {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}


@pytest.fixture(scope='session')
def topdown_ref():
    return dict(np.load(need(REFERENCE / 'topdown_parity.npz')))


@pytest.fixture(scope='session')
def decode_ref():
    return dict(np.load(need(REFERENCE / 'decode_parity.npz')))


@pytest.fixture(scope='session')
def metrics_ref():
    return dict(np.load(need(REFERENCE / 'metrics_parity.npz')))


@pytest.fixture(scope='session')
def detector_ref():
    return dict(np.load(need(REFERENCE / 'detector_parity.npz')))


def thread_mismatches(calls, equal, threads: int = 4, rounds: int = 12) -> list:
    """Run the zero-argument ``calls`` from ``threads`` threads at once (``rounds`` calls each, cycling
    through them); each result must ``equal(result, reference)`` its single-thread reference. Returns
    the exceptions raised (repr) and the indices of mismatching calls: ``[]`` when all agree."""
    import threading
    refs = [c() for c in calls]
    bad = []

    def work(t):
        try:
            for i in range(rounds):
                j = (t + i) % len(calls)
                if not equal(calls[j](), refs[j]):
                    bad.append(j)
        except Exception as e:  # noqa: BLE001
            bad.append(repr(e))

    pool = [threading.Thread(target=work, args=(t, )) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return bad
