"""Read mmdet/mmcv-style ``config.py`` files safely, without executing them.

The hub model ships its hand detector with an mmdet 2.x config, ``detection/config.py``.  A
``.py`` config is Python source: mmcv's ``Config.fromfile`` and ModelScope's
``Config.from_file`` (``modelscope.utils.config``) load it by *importing the file as a module*
(``import_modules_from_file`` -> ``importlib.import_module``), so any code in it runs with the
user's rights.  Recent ModelScope releases (checked: 1.40) refuse such files unless
``trust_remote_code=True`` is passed, and then execute them.  Neither is acceptable for a file
downloaded with a model.

This module instead parses the file with :mod:`ast` and *evaluates only data*:

* literals: numbers, strings, bytes, ``True``/``False``/``None``, lists, tuples, sets, dicts;
* calls of ``dict(...)``, ``list(...)``, ``tuple(...)`` (keyword arguments, ``**mapping``);
* ``**mapping`` in dict displays and ``*sequence`` in list/tuple displays;
* names bound by an earlier top-level assignment ``name = <expression>`` in the same file;
* unary ``+``/``-`` and ``+ - * / // %`` on numbers, ``+`` on two sequences/strings, and
  ``sequence * int`` (results up to 100,000 items) — common in configs (``1 / 255``, ``[0.1] * 3``).

Anything else (imports, attribute access, calls of other functions, comprehensions, lambdas,
f-strings, control flow, ...) raises :class:`UnsafeConfigError` naming the file, the line and
the construct, and the file is never run.  Nothing is imported, ``eval``-ed or ``exec``-ed.

``_base_`` inheritance is resolved the mmcv way (base files read the same safe way, relative
to the config's folder, then the child's dicts merged recursively into the base; a child dict
with ``_delete_=True`` replaces the base dict).  ``{{_base_.x}}`` text references are not
supported.

Entry points: :func:`load_mmdet_config` (path to ``.py``/``.json``, a folder holding
``config.py``/``config.json``, or an already loaded dict) and :func:`model_config` (the
``model`` dict out of a whole config).
"""
from __future__ import annotations

import ast
import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ['UnsafeConfigError', 'load_mmdet_config', 'parse_config_source', 'model_config']

# Calls that only build containers from their arguments.
_CONTAINER_CALLS = {'dict': dict, 'list': list, 'tuple': tuple}
# Longest sequence/string a ``+`` or ``*`` expression may build (guards against memory bombs).
_MAX_SEQUENCE_LEN = 100_000
_NUMBER = (int, float, complex)
# Largest integer an arithmetic expression may produce (``x = x * x`` repeated would otherwise
# run for ever), and how many values all name references of one file may copy in total (``x = [x, x]``
# repeated doubles the data at every line).
_MAX_INT_BITS = 1024
_MAX_COPIED_ITEMS = 500_000


class UnsafeConfigError(ValueError):
    """The config file contains code, not just data; it was not executed."""


def _where(filename: str, node: ast.AST) -> str:
    return f'{filename}, line {getattr(node, "lineno", "?")}'


def _refuse(filename: str, node: ast.AST, what: str) -> UnsafeConfigError:
    return UnsafeConfigError(
        f'{_where(filename, node)}: {what} is not allowed in a config file read by '
        'modelscope_handkp (it only reads data: literals, dict()/list()/tuple(), names assigned '
        'earlier in the file, ** expansion). The file was NOT executed. Rewrite that line as plain '
        'data, or convert the config to JSON.')


class _SafeEvaluator:
    """Evaluates the data-only subset of Python expressions described in the module doc."""

    def __init__(self, filename: str, names: Mapping[str, Any]):
        self.filename = filename
        self.names = names
        self.copied = 0  # values copied by name references so far (see _MAX_COPIED_ITEMS)

    def __call__(self, node: ast.AST) -> Any:
        method = getattr(self, f'_eval_{type(node).__name__}', None)
        if method is None:
            raise _refuse(self.filename, node, f'the expression `{_source_hint(node)}` '
                                               f'({type(node).__name__})')
        return method(node)

    # -- atoms -------------------------------------------------------------------------------
    def _eval_Constant(self, node: ast.Constant):
        if node.value is Ellipsis:
            raise _refuse(self.filename, node, '`...`')
        return node.value

    def _eval_Name(self, node: ast.Name):
        if node.id in self.names:
            value = self.names[node.id]
            self.copied += _count_items(value, _MAX_COPIED_ITEMS - self.copied + 1)
            if self.copied > _MAX_COPIED_ITEMS:
                raise _refuse(self.filename, node, f'referring to names that hold more than '
                                                   f'{_MAX_COPIED_ITEMS} values in all')
            # Deep copy so later edits of one dict never alias another (as with real Python
            # objects this would be shared, but configs are treated as values here).
            return copy.deepcopy(value)
        if node.id in _CONTAINER_CALLS:
            raise _refuse(self.filename, node, f'the bare name `{node.id}` (only calls '
                                               f'`{node.id}(...)` are allowed)')
        raise UnsafeConfigError(
            f'{_where(self.filename, node)}: name `{node.id}` is not defined earlier in the file '
            '(only names assigned by previous top-level `name = ...` lines can be used).')

    # -- containers --------------------------------------------------------------------------
    def _elements(self, elts) -> list:
        out = []
        for elt in elts:
            if isinstance(elt, ast.Starred):
                value = self(elt.value)
                if not isinstance(value, (list, tuple)):
                    raise _refuse(self.filename, elt, f'`*` expansion of a {type(value).__name__}')
                out.extend(value)
            else:
                out.append(self(elt))
        return out

    def _eval_List(self, node: ast.List):
        return self._elements(node.elts)

    def _eval_Tuple(self, node: ast.Tuple):
        return tuple(self._elements(node.elts))

    def _eval_Set(self, node: ast.Set):
        return set(self._elements(node.elts))

    def _eval_Dict(self, node: ast.Dict):
        out = {}
        for key, value in zip(node.keys, node.values):
            if key is None:  # ``{**mapping}``
                out.update(self._mapping(value))
            else:
                out[self._hashable(key)] = self(value)
        return out

    def _mapping(self, node: ast.AST) -> dict:
        value = self(node)
        if not isinstance(value, dict):
            raise _refuse(self.filename, node, f'`**` expansion of a {type(value).__name__}')
        return value

    def _hashable(self, node: ast.AST):
        key = self(node)
        try:
            hash(key)
        except TypeError:
            raise _refuse(self.filename, node, f'a dict key of type {type(key).__name__}') from None
        return key

    def _eval_Call(self, node: ast.Call):
        func = node.func
        if not (isinstance(func, ast.Name) and func.id in _CONTAINER_CALLS
                and func.id not in self.names):
            raise _refuse(self.filename, node, f'the call `{_source_hint(node)}` (only dict(), '
                                               'list() and tuple() may be called)')
        if func.id == 'dict':
            if len(node.args) > 1:
                raise _refuse(self.filename, node, 'dict() with several positional arguments')
            out = dict(self._mapping(node.args[0])) if node.args else {}
            for kw in node.keywords:
                if kw.arg is None:  # ``dict(**mapping)``
                    out.update(self._mapping(kw.value))
                else:
                    out[kw.arg] = self(kw.value)
            return out
        if node.keywords or len(node.args) > 1:
            raise _refuse(self.filename, node, f'{func.id}() with keyword or several arguments')
        if not node.args:
            return _CONTAINER_CALLS[func.id]()
        value = self(node.args[0])
        if not isinstance(value, (list, tuple, set, str, dict)):
            raise _refuse(self.filename, node, f'{func.id}() of a {type(value).__name__}')
        return _CONTAINER_CALLS[func.id](value)

    # -- arithmetic ----------------------------------------------------------------------------
    def _eval_UnaryOp(self, node: ast.UnaryOp):
        value = self(node.operand)
        if isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(value, _NUMBER) \
                and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node.op, ast.Not):
            return not value
        raise _refuse(self.filename, node, f'the operator {type(node.op).__name__} on '
                                           f'{type(value).__name__}')

    def _check_length(self, node: ast.AST, length: int) -> None:
        if length > _MAX_SEQUENCE_LEN:  # repeated doubling could otherwise exhaust memory
            raise _refuse(self.filename, node, f'building a sequence longer than '
                                               f'{_MAX_SEQUENCE_LEN} items')

    def _eval_BinOp(self, node: ast.BinOp):
        left, right = self(node.left), self(node.right)
        op = node.op
        numbers = all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in (left, right))
        if numbers and isinstance(op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv,
                                       ast.Mod)):
            try:
                result = _ARITH[type(op)](left, right)
            except ZeroDivisionError:
                raise UnsafeConfigError(f'{_where(self.filename, node)}: division by zero') from None
            except OverflowError:
                raise UnsafeConfigError(f'{_where(self.filename, node)}: number too large') from None
            if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
                raise _refuse(self.filename, node, f'an integer of more than {_MAX_INT_BITS} bits')
            return result
        sequences = (list, tuple, str)
        if isinstance(op, ast.Add) and isinstance(left, sequences) and type(left) is type(right):
            self._check_length(node, len(left) + len(right))
            return left + right
        if isinstance(op, ast.Mult):
            seq, times = (left, right) if isinstance(left, sequences) else (right, left)
            if isinstance(seq, sequences) and isinstance(times, int) and not isinstance(times, bool):
                self._check_length(node, len(seq) * max(times, 0))
                return seq * times
        raise _refuse(self.filename, node, f'the operator {type(op).__name__} on '
                                           f'{type(left).__name__} and {type(right).__name__}')


_ARITH = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


def _count_items(value, limit: int) -> int:
    """How many values (containers, keys and leaves) ``value`` holds, counting at most ``limit``."""
    count, stack = 0, [value]
    while stack and count < limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return count


def _source_hint(node: ast.AST, limit: int = 60) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every parsed node
        text = type(node).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


def parse_config_source(source: str, filename: str = '<config>') -> dict:
    """Evaluate the data in a config's Python source; returns ``{name: value}``.

    Only top-level ``name = <expression>`` statements (and a docstring / bare string
    constants) are accepted; every other statement raises :class:`UnsafeConfigError`.
    Names starting with ``__`` are dropped, like mmcv does.
    """
    try:
        tree = ast.parse(source, filename=filename, mode='exec')
    except SyntaxError as exc:
        raise ValueError(f'{filename} is not valid Python syntax ({exc.msg}, line {exc.lineno}); '
                         'cannot read it as an mmdet config.') from None
    except (RecursionError, MemoryError):
        raise UnsafeConfigError(f'{filename}: expressions nested too deeply to parse; the file was NOT '
                                'executed. Rewrite it as plain data, or convert the config to JSON.') from None
    names: dict[str, Any] = {}
    evaluate = _SafeEvaluator(filename, names)
    try:
        _evaluate_statements(tree, filename, names, evaluate)
    except RecursionError:
        raise UnsafeConfigError(f'{filename}: expressions nested too deeply; the file was NOT executed. '
                                'Rewrite it as plain data, or convert the config to JSON.') from None
    return {k: v for k, v in names.items() if not k.startswith('__')}


def _evaluate_statements(tree: ast.Module, filename: str, names: dict, evaluate: _SafeEvaluator) -> None:
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            continue  # docstring or a stray string: no effect
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if stmt.value is None:
                continue  # bare annotation ``x: int``
            if not all(isinstance(t, ast.Name) for t in targets):
                raise _refuse(filename, stmt, 'an assignment to something other than a plain '
                                              f'name (`{_source_hint(stmt)}`)')
            value = evaluate(stmt.value)
            for target in targets:
                names[target.id] = value
            continue
        kind = {ast.Import: 'an import', ast.ImportFrom: 'an import'}.get(type(stmt))
        raise _refuse(filename, stmt, kind or f'the statement `{_source_hint(stmt)}` '
                                              f'({type(stmt).__name__})')


def _merge(base: dict, child: dict) -> dict:
    """mmcv's inheritance merge: child keys override, dicts merge recursively, ``_delete_``."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and not value.get('_delete_', False) \
                and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != '_delete_'}
            out[key] = value
    return out


def _read_file(path: Path, _chain: tuple = ()) -> dict:
    path = path.resolve()
    if path in _chain:
        raise ValueError(f'config inheritance loop: {" -> ".join(map(str, _chain + (path,)))}')
    suffix = path.suffix.lower()
    if suffix == '.json':
        with open(path, encoding='utf-8') as f:
            cfg = json.load(f)
        if not isinstance(cfg, dict):
            raise ValueError(f'{path} holds a JSON {type(cfg).__name__}, not an object; '
                             'expected an mmdet config dict.')
    elif suffix == '.py':
        cfg = parse_config_source(path.read_text(encoding='utf-8'), filename=str(path))
    else:
        raise ValueError(f'unsupported config file {path}: expected an mmdet config.py or a '
                         '.json file.')
    bases = cfg.pop('_base_', None)
    if bases is None:
        return cfg
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else list(bases):
        base_cfg = _read_file(path.parent / base, _chain + (path,))
        clash = set(merged) & set(base_cfg)
        if clash:
            raise ValueError(f'{path}: base configs define the same keys {sorted(clash)}.')
        merged.update(base_cfg)
    return _merge(merged, cfg)


def load_mmdet_config(source) -> dict:
    """Load an mmdet-style config without running any of it.

    ``source``: a mapping (returned as a deep-copied plain dict), a path to ``config.py``
    (parsed safely, see the module doc) or ``*.json``, or a folder holding ``config.py`` or
    ``config.json``.  Returns the whole config as a plain dict (``model``, ``test_pipeline``,
    ...).  Raises :class:`UnsafeConfigError` for a ``.py`` file with code in it.
    """
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f'config must be a dict or a path to config.py/.json; got '
                        f'{type(source).__name__}.')
    path = Path(source).expanduser()
    if path.is_dir():
        for name in ('config.py', 'config.json'):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f'no config.py or config.json in folder {path}; pass the '
                                    'config file itself.')
    if not path.is_file():
        raise FileNotFoundError(f'config file {path} does not exist.')
    return _read_file(path)


def model_config(cfg) -> dict:
    """The mmdet ``model`` dict out of a whole config, a model dict, or a path to either."""
    cfg = load_mmdet_config(cfg)
    if isinstance(cfg.get('model'), dict):
        return cfg['model']
    if 'type' in cfg:
        return cfg
    raise ValueError('the config has neither a `model` dict nor a `type` key; expected an mmdet '
                     f'config (top-level keys found: {sorted(cfg)[:20]}).')
