"""README.md stays true: every fenced ``bash``/``python`` block in it is executed here or by CI.

Each block is preceded by a directive comment saying how it is checked::

    <!-- test: ci -->                 the block's commands are what .ci/run runs (checked: each line is in it)
    <!-- test: run -->                each `modelscope-handkp ...` line runs (in a temporary directory)
    <!-- test: python -->             the block is executed as Python (cwd: a temporary directory)
    <!-- test: sub OLD => NEW -->     before running, replace OLD by NEW (repeatable; NEW may name
                                      {tiny_data}, {official_dir}, {tmp})

``../shared`` in a block means the shared data next to this checkout (tests skip without it).
A block without a directive fails this test, so nothing in the README goes unchecked.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_model_dir import official_dir  # noqa: F401  (session fixture, for {official_dir})

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
BLOCK = re.compile(r'((?:<!--\s*test:[^\n]*?-->[ \t]*\n)*)```(bash|python)\n(.*?)```', re.S)
DIRECTIVE = re.compile(r'<!--\s*test:\s*(.*?)\s*-->')


def blocks():
    text = README.read_text(encoding='utf-8')
    out = []
    for m in BLOCK.finditer(text):
        directives = DIRECTIVE.findall(m.group(1))
        line = text[:m.start(2)].count('\n') + 1
        out.append(pytest.param(m.group(2), m.group(3), directives, id=f'README.md:{line}'))
    return out


def test_readme_has_the_required_sections():
    text = README.read_text(encoding='utf-8')
    for heading in ('## Install', '## Run', '## Tests', '## ModelScope', '## Training', '## Export',
                    '## Performance', '## Differences'):
        assert heading in text, f'README.md lacks a "{heading}" section'


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / '.ci' / 'run').read_text()
    text = README.read_text(encoding='utf-8')
    m = re.search(r'## Tests.*?```bash\n(.*?)```', text, re.S)
    assert m, 'README.md has no test command block'
    for cmd in [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.startswith('#')]:
        assert cmd.strip() in ci, f'.ci/run does not run the README test command {cmd!r}'


def _substitutions(directives, values):
    subs = []
    for d in directives:
        if d.startswith('sub '):
            old, new = (s.strip() for s in d[4:].split('=>', 1))
            subs.append((old, new.format(**values)))
    return subs


@pytest.fixture(scope='module')
def values(tmp_path_factory, request):
    """Paths the directives may name (built lazily; those needing ../shared skip without it)."""
    from conftest import SHARED
    return {'shared': SHARED, 'factory': tmp_path_factory, 'request': request}


def _resolve(values, names):
    out = {'tmp': str(values['factory'].mktemp('readme'))}
    shared = values['shared']
    if 'tiny_data' in names:
        if not (shared / 'data' / 'open_hands').is_dir():
            pytest.skip('../shared/data/open_hands is not present')
        from test_trainer import subset_annotations
        root = values['factory'].mktemp('tiny_data')
        src = shared / 'data' / 'open_hands'
        for split, n in (('train', 8), ('val', 4)):
            subset_annotations(src / 'annotations' / f'{split}.json', root / 'annotations' / f'{split}.json', n)
        os.symlink(src / 'images', root / 'images')
        out['tiny_data'] = str(root)
    if 'official_dir' in names:
        out['official_dir'] = str(values['request'].getfixturevalue('official_dir'))
    return out


@pytest.mark.parametrize('lang, body, directives', blocks())
def test_readme_block(lang, body, directives, values, tmp_path):
    kinds = {d.split()[0] for d in directives if d}
    assert kinds & {'ci', 'run', 'python'}, \
        'this README block has no <!-- test: ... --> directive saying how it is checked (see tests/test_readme.py)'
    from conftest import SHARED
    names = set(re.findall(r'\{(\w+)\}', ' '.join(directives)))
    vals = _resolve(values, names)
    for old, new in _substitutions(directives, vals):
        assert old in body, f'sub directive: {old!r} is not in the block'
        body = body.replace(old, new)
    if '../shared' in body:
        if not SHARED.is_dir():
            pytest.skip('the block uses ../shared, which is not present next to this checkout')
        body = body.replace('../shared', str(SHARED))
    if 'ci' in kinds:
        ci = (ROOT / '.ci' / 'run').read_text()
        for ln in body.splitlines():
            if ln.strip() and not ln.lstrip().startswith('#'):
                assert ln.strip() in ci, f'.ci/run does not run {ln.strip()!r}'
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if 'python' in kinds:
        assert lang == 'python'
        script = tmp_path / 'block.py'
        script.write_text(body)
        res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return
    ran = 0
    for ln in body.splitlines():
        ln = ln.strip()
        if not ln or ln.startswith('#'):
            continue
        argv = shlex.split(ln, comments=True)
        assert argv[0] == 'modelscope-handkp', f'unchecked README command {ln!r}: mark its block "ci" or change it'
        res = subprocess.run([sys.executable, '-m', 'modelscope_handkp', *argv[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f'{ln}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}'
        if argv[1] in ('predict', 'eval'):
            lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith('{')]
            assert lines, f'{ln} printed no JSON'
        ran += 1
    assert ran, 'the block has no modelscope-handkp command'
