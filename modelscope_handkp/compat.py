"""Everything that adapts ModelScope's own behaviour, in one place (applied by ``import modelscope_handkp``).

The published model card (``damo/cv_hrnetw18_hand-pose-keypoints_coco-wholebody``)
---------------------------------------------------------------------------------
Its ``configuration.json`` carries ``plugins: ["pai-easycv"]``, ``model.type = "HRNet-Hand2D-Keypoints"``
and ``pipeline.type = "hrnetv2w18_hand-2d-keypoints_image"``.  ``pai-easycv`` is on ModelScope's plugin
whitelist, so ModelScope does not ask for ``trust_remote_code``, but ``pipeline()``, ``build_trainer()`` and
``Model.from_pretrained()`` call ``register_plugins_repo(["pai-easycv"])``, which pip-installs pai-easycv —
and that cannot work on a current stack (old pins, compiled ``mmcv.ops``).

What a user sees:

* **only modelscope installed** (no ``import modelscope_handkp``): unchanged ModelScope behaviour —
  ModelScope tries to pip-install pai-easycv.  Nothing this package can do about that; the fix is
  ``pip install modelscope-handkp`` and one import line.
* **modelscope + this plugin, pai-easycv absent** (the normal case): after ``import modelscope_handkp``
  the card's own code — ``pipeline(Tasks.hand_2d_keypoints, model=ID_OR_DIR)`` and
  ``build_trainer(Trainers.easycv, dict(model=ID_OR_DIR, ...))`` — runs on this plugin: the official
  model/pipeline type names are registered to this plugin's classes, the ``pai-easycv`` entry is
  dropped before ModelScope's installer sees it (logged), nothing is installed, no code is executed
  from the model directory, and no ``trust_remote_code`` is needed.
* **pai-easycv installed and working**: nothing is changed for the official names: ModelScope imports
  pai-easycv as always and pai-easycv serves the published model.  This plugin then only registers its
  own names (the names pai-easycv registers itself -- trainer ``easycv``, ``EasyCVMetric``,
  ``AddLrLogHook``, ``HandCocoWholeBodyDataset`` -- stay free; this trainer is ``'handkp-easycv'``);
  convert the directory with :func:`modelscope_handkp.convert_model_dir` to use this plugin's
  implementation for it.

Only hand keypoint configurations are adapted: another model's ``plugins`` (an EasyCV detector, say) go
to ModelScope unchanged, and a trainer may be given a folder without a configuration.

This plugin's own model directories carry **no** ``plugins`` entry (a non-whitelisted entry would make
ModelScope demand ``trust_remote_code=True``), so a local directory never needs ``trust_remote_code``;
the price is that ``import modelscope_handkp`` must run before ``pipeline()`` — without it ModelScope
does not know the ``handkp-*`` type names.

Other adaptations
-----------------
* ``modelscope.metainfo.Trainers.easycv`` (removed from current ModelScope; the card's training code uses
  it) is defined again as ``'easycv'`` when missing.
* A local model directory never triggers a hub request: ModelScope's "trusted publisher" check would
  query the hub for a relative local path that looks like ``owner/name``; for paths that exist locally it
  now answers "not trusted" at once (the answer ModelScope gives for any absolute local path).
* Configurations of hand keypoint models are checked when ModelScope reads them: a missing key
  (``task``, ``framework``, ``pipeline``, ``model.backbone`` ...) gives a message naming it and the fix
  instead of an error deep inside ModelScope; a local-looking model path that does not exist gives
  "does not exist" instead of a hub lookup.
* The registered names are added to ModelScope's in-memory AST index, so ModelScope does not warn that
  they are unknown and recognises them as ModelScope models (no transformers AutoModel probing).
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys

from modelscope.utils.logger import get_logger

from .model_dir import OFFICIAL_PLUGIN

logger = get_logger()

SERVED_PLUGINS = frozenset({OFFICIAL_PLUGIN})
_PATCHED_ATTR = '_handkp_patched'


def pai_easycv_installed() -> bool:
    """True when pai-easycv is installed (distribution metadata or an importable ``easycv``)."""
    try:
        importlib.metadata.distribution(OFFICIAL_PLUGIN)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec('easycv') is not None
    except (ImportError, ValueError):
        return False


def serves_official_model() -> bool:
    """Whether this plugin serves the published model's names (only when pai-easycv is absent)."""
    return not pai_easycv_installed()


def plugin_name(requirement: str) -> str:
    """``'pai-easycv>=0.11'`` -> ``'pai-easycv'`` (normalised like pip names)."""
    name = re.split(r'[<>=!~;\[\s@]', str(requirement).strip(), maxsplit=1)[0]
    return re.sub(r'[-_.]+', '-', name).lower()


def filter_served_plugins(plugins):
    """``plugins`` without the entries this plugin serves (when pai-easycv is absent); None if empty."""
    if not plugins:
        return plugins
    items = [plugins] if isinstance(plugins, str) else list(plugins)
    if not serves_official_model():
        return plugins
    kept = [p for p in items if plugin_name(p) not in SERVED_PLUGINS]
    dropped = [p for p in items if plugin_name(p) in SERVED_PLUGINS]
    if dropped:
        logger.info(f'modelscope_handkp serves {dropped} (not installed); nothing will be pip-installed for it.')
    return kept or None


def _caller_config():
    """The configuration (as a dict) that ModelScope's caller of ``register_plugins_repo`` holds -- the local
    ``cfg`` (pipeline builder, ``Model.from_pretrained``) or ``configuration`` (trainer builder) -- or None
    when it cannot be seen (then the plugins are filtered as for a hand model, the published card's case)."""
    frame = sys._getframe(2)
    try:
        for name in ('cfg', 'configuration'):
            cfg = frame.f_locals.get(name)
            if cfg is not None and hasattr(cfg, 'to_dict'):
                try:
                    data = cfg.to_dict()
                except Exception:  # noqa: BLE001 - an exotic config: cannot tell
                    return None
                return data if isinstance(data, dict) else None
        return None
    finally:
        del frame


def _wrap_register_plugins_repo(original):
    if getattr(original, _PATCHED_ATTR, False):
        return original

    @functools.wraps(original)
    def register_plugins_repo(plugins):
        cfg = _caller_config()
        if cfg is not None and not _is_hand_config(cfg):
            return original(plugins)  # another model's plugins (an EasyCV detector, say): ModelScope's business
        return original(filter_served_plugins(plugins))

    setattr(register_plugins_repo, _PATCHED_ATTR, True)
    register_plugins_repo.__wrapped_original__ = original
    return register_plugins_repo


def _wrap_trusted_source(original):
    if getattr(original, _PATCHED_ATTR, False):
        return original

    @functools.wraps(original)
    def is_model_from_trusted_source(model_id, *args, **kwargs):
        if isinstance(model_id, (str, os.PathLike)) and os.path.exists(model_id):
            return False  # a local directory: no hub lookup (ModelScope never trusts local paths)
        return original(model_id, *args, **kwargs)

    setattr(is_model_from_trusted_source, _PATCHED_ATTR, True)
    return is_model_from_trusted_source


_CALLER_MODULES = ('modelscope.pipelines.builder', 'modelscope.trainers.builder', 'modelscope.models.base.base_model')


def patch_plugin_installation() -> None:
    """Route ModelScope's ``register_plugins_repo`` through :func:`filter_served_plugins`."""
    plugins_mod = importlib.import_module('modelscope.utils.plugins')
    if OFFICIAL_PLUGIN not in plugins_mod.PLUGIN_WHITE_LIST:  # keep the card usable without trust_remote_code
        plugins_mod.PLUGIN_WHITE_LIST.append(OFFICIAL_PLUGIN)
    plugins_mod.register_plugins_repo = _wrap_register_plugins_repo(plugins_mod.register_plugins_repo)
    for name in _CALLER_MODULES:
        mod = importlib.import_module(name)
        if hasattr(mod, 'register_plugins_repo'):
            mod.register_plugins_repo = _wrap_register_plugins_repo(mod.register_plugins_repo)


def patch_local_trust_lookup() -> None:
    """No hub request for the trusted-publisher check of an existing local path."""
    auto = importlib.import_module('modelscope.utils.automodel_utils')
    auto.is_model_from_trusted_source = _wrap_trusted_source(auto.is_model_from_trusted_source)
    for name in _CALLER_MODULES:
        mod = importlib.import_module(name)
        if hasattr(mod, 'is_model_from_trusted_source'):
            mod.is_model_from_trusted_source = _wrap_trusted_source(mod.is_model_from_trusted_source)


def _looks_local(path) -> bool:
    """A string that cannot be a hub id (``owner/name``): absolute, relative with ./ ../ ~, or deeper."""
    p = os.fspath(path)
    return (os.path.isabs(p) or p.startswith(('.', '~')) or p.count('/') != 1 or '\\' in p
            or p.endswith('/') or os.sep != '/' and os.sep in p)


def _is_hand_config(cfg: dict) -> bool:
    from . import model_dir as md
    model = cfg.get('model') if isinstance(cfg.get('model'), dict) else {}
    if 'handkp' in cfg or model.get('type') == md.MODEL_TYPE:
        return True
    official = (model.get('type') == md.OFFICIAL_MODEL_TYPE
                or (cfg.get('pipeline') or {}).get('type') == md.OFFICIAL_PIPELINE_TYPE
                or 'DETECTION' in cfg and cfg.get('task') == md.TASK)  # other EasyCV models have DETECTION too
    return official and serves_official_model()


def _wrap_read_config(original):
    if getattr(original, _PATCHED_ATTR, False):
        return original

    @functools.wraps(original)
    def read_config(model_id_or_path, *args, **kwargs):
        from . import model_dir as md
        if model_id_or_path is None:  # pipeline(task, model=MODEL) with a model built without a directory
            raise ValueError('the model has no model_dir (it was built without a model directory), and ModelScope '
                             'reads the pipeline configuration from there; save it first, '
                             'model.save_pretrained(DIR), then pass pipeline(task, model=DIR).')
        local = isinstance(model_id_or_path, (str, os.PathLike)) and os.path.isdir(model_id_or_path)
        if local and os.path.isfile(os.path.join(model_id_or_path, md.CONFIG_FILE)):
            # a broken file is named before ModelScope reads it: its reader's temporary copy outlives its
            # folder on a parse error, and an "Exception ignored ... FileNotFoundError" traceback follows
            md.read_configuration(model_id_or_path)
        try:
            cfg = original(model_id_or_path, *args, **kwargs)
        except Exception:
            if local and os.path.isfile(os.path.join(model_id_or_path, md.CONFIG_FILE)):
                md.read_configuration(model_id_or_path)  # raises a clear ModelDirError when it is the file
            raise
        if cfg is not None and hasattr(cfg, 'to_dict'):
            try:
                data = cfg.to_dict()
            except Exception:  # pragma: no cover - exotic configs are ModelScope's business
                return cfg
            if isinstance(data, dict) and _is_hand_config(data):
                where = (os.path.join(os.fspath(model_id_or_path), md.CONFIG_FILE) if local else
                         f'{md.CONFIG_FILE} of {model_id_or_path}')
                md.validate_configuration(data, where, model_id_or_path if local else None)
        return cfg

    setattr(read_config, _PATCHED_ATTR, True)
    return read_config


def _not_a_model_dir(folder) -> str | None:
    """The error for a folder a hand pipeline cannot be built from, or None.  Only folders that look like
    this plugin's mistakes are named -- empty, weights without configuration.json, a training work_dir --
    since ModelScope builds other tasks' pipelines from folders without configuration.json too (e.g.
    diffusers' model_index.json, transformers' files): those stay ModelScope's business."""
    from . import model_dir as md
    if any(os.path.isfile(os.path.join(folder, f)) for f in (md.CONFIG_FILE, 'config.json')):
        return None
    try:
        names = {n for n in os.listdir(folder) if not n.startswith('.')}
    except OSError:
        return None
    where = repr(os.fspath(folder))
    output = os.path.join(folder, 'output')
    if 'train_log.jsonl' in names or 'latest.pth' in names or os.path.isfile(os.path.join(output, md.CONFIG_FILE)):
        best = os.path.join(os.fspath(folder), 'output_best')
        return (f'{where} is a training work_dir, not a model directory; pass its model directory '
                f'{os.path.join(os.fspath(folder), "output")!r}' + (f' (last) or {best!r} (best)' if
                                                                    os.path.isdir(best) else '') + '.')
    if not names or md.WEIGHTS_FILE in names or 'pytorch_model.bin' in names:
        # ModelScope would fail with "'NoneType' object does not support item assignment"
        return (f'{where} is not a model directory: it has no {md.CONFIG_FILE}; pass the folder that holds the '
                "model's configuration.json and weights.")
    return None


def _wrap_is_official_hub_path(original, check_folders: bool = True):
    if getattr(original, _PATCHED_ATTR, False):
        if original._handkp_check_folders == check_folders:
            return original
        original = original.__wrapped_original__  # a module that imported the other variant

    @functools.wraps(original)
    def is_official_hub_path(path, *args, **kwargs):
        from . import model_dir as md
        items = path if isinstance(path, (list, tuple)) else [path]
        for p in items:
            if not isinstance(p, (str, os.PathLike)):
                continue
            if not os.path.exists(p) and _looks_local(p):
                raise md.ModelDirError(f'model directory {os.fspath(p)!r} does not exist (and it is not a hub id '
                                       "of the form 'owner/name'); check the path.")
            if check_folders and os.path.isdir(p):
                why = _not_a_model_dir(p)
                if why:
                    raise md.ModelDirError(why)
        return original(path, *args, **kwargs)

    setattr(is_official_hub_path, _PATCHED_ATTR, True)
    is_official_hub_path._handkp_check_folders = check_folders
    is_official_hub_path.__wrapped_original__ = original
    return is_official_hub_path


_CONFIG_READERS = ('modelscope.utils.hub', 'modelscope.pipelines.builder', 'modelscope.pipelines.base',
                   'modelscope.trainers.builder')
_HUB_PATH_CHECKERS = ('modelscope.pipelines.util', 'modelscope.pipelines.builder', 'modelscope.pipelines.base',
                      'modelscope.trainers.builder')


def patch_config_checks() -> None:
    """Clear errors, before ModelScope trips over them, for hand keypoint configurations with missing keys,
    for local model paths that do not exist (instead of a hub lookup) and for folders without any
    configuration file (instead of ``TypeError: 'NoneType' object does not support item assignment``)."""
    for name in _CONFIG_READERS:
        mod = importlib.import_module(name)
        if hasattr(mod, 'read_config'):
            mod.read_config = _wrap_read_config(mod.read_config)
    for name in _HUB_PATH_CHECKERS:
        mod = importlib.import_module(name)
        if hasattr(mod, 'is_official_hub_path'):
            mod.is_official_hub_path = _wrap_is_official_hub_path(mod.is_official_hub_path,
                                                                  check_folders=name.startswith('modelscope.pipelines'))


def define_trainers_easycv() -> None:
    """``from modelscope.metainfo import Trainers; Trainers.easycv`` -> ``'easycv'``."""
    from modelscope import metainfo
    if not hasattr(metainfo.Trainers, 'easycv'):
        setattr(metainfo.CVTrainers, 'easycv', 'easycv')


def add_to_ast_index(registry: str, group: str, name: str, module) -> None:
    """Tell ModelScope's lazy-import index that ``name`` lives in ``module`` (already imported)."""
    from modelscope.utils.ast_utils import INDEX_KEY
    from modelscope.utils.import_utils import LazyImportModule
    index = LazyImportModule.get_ast_index()
    index[INDEX_KEY][(registry, group, name)] = {
        'filepath': getattr(module, '__file__', '') or '',
        'imports': [],
        'module': module.__name__,
    }


def register(registry, group: str, name: str, cls, module) -> bool:
    """Register ``cls`` as ``name`` in ``registry[group]``; returns False (and logs) when another
    package already owns the name.  Re-importing this package re-registers its own classes."""
    existing = registry.get(name, group_key=group)
    if existing is not None and existing is not cls and not str(
            getattr(existing, '__module__', '')).startswith('modelscope_handkp'):
        logger.warning(f'{registry.name}[{group}] already has {name!r} from {existing.__module__}; '
                       'modelscope_handkp leaves it in place.')
        return False
    registry.register_module(group, module_name=name, module_cls=cls, force=True)
    add_to_ast_index(registry.name.upper(), group, name, module)
    return True


def apply() -> None:
    """Apply all adaptations (idempotent)."""
    define_trainers_easycv()
    patch_plugin_installation()
    patch_local_trust_lookup()
    patch_config_checks()
