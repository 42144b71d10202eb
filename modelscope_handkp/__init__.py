"""modelscope-handkp: 2D hand keypoints (21 per hand) for ModelScope, natively in PyTorch + OpenCV.

``import modelscope_handkp`` registers this plugin with ModelScope's own registries:

* ``MODELS`` (group ``hand-2d-keypoints``): ``handkp-topdown-hrnet`` ->
  :class:`~modelscope_handkp.modelscope_model.HandKeypointsModel`;
* ``PREPROCESSORS`` (group ``cv``): ``handkp-hand-image`` ->
  :class:`~modelscope_handkp.preprocessor.HandImagePreprocessor`;
* ``PIPELINES`` (group ``hand-2d-keypoints``): ``handkp-hand-2d-keypoints`` ->
  :class:`~modelscope_handkp.pipeline.HandKeypointsPipeline`;
* when pai-easycv is NOT installed, also the published model's names ``HRNet-Hand2D-Keypoints`` and
  ``hrnetv2w18_hand-2d-keypoints_image``, so the hub model's card code runs on this plugin without
  installing anything (see :mod:`modelscope_handkp.compat` for every adaptation of ModelScope,
  including ``modelscope.metainfo.Trainers.easycv``).

Usage, for both kinds of model directory (this plugin's, or the published EasyCV one)::

    import modelscope_handkp
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    out = pipeline(Tasks.hand_2d_keypoints, model=MODEL_DIR)('hands.jpg')
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

__version__ = '0.1.0'

from .model_dir import (HUB_MODEL_ID, MODEL_TYPE, OFFICIAL_MODEL_TYPE, OFFICIAL_PIPELINE_TYPE,  # noqa: E402
                        PIPELINE_TYPE, PREPROCESSOR_TYPE, ModelDirError, convert_model_dir)

STARTER_MODEL_DIR = Path(__file__).resolve().parent / 'starter_model'

# modules of this package that register more components with ModelScope (trainer, hooks, metrics)
# when they exist; a module that exists but fails to import raises.
_OPTIONAL_REGISTRATIONS = ('trainer', )


def starter_model_dir() -> str:
    """Path of the model directory bundled with the package (``modelscope_handkp/starter_model/``)."""
    if (STARTER_MODEL_DIR / 'configuration.json').is_file():
        return str(STARTER_MODEL_DIR)
    raise FileNotFoundError(
        'no starter model is bundled with this installation of modelscope-handkp yet '
        f'({STARTER_MODEL_DIR} has no configuration.json). Pass model=<a local model directory>, or the hub id '
        f'{HUB_MODEL_ID!r} (downloaded by ModelScope; needs network).')


def _register() -> None:
    from modelscope.metainfo import Preprocessors  # noqa: F401  (ModelScope's registries first)
    from modelscope.models.builder import MODELS
    from modelscope.pipelines.builder import PIPELINES
    from modelscope.preprocessors.base import PREPROCESSOR_MAP
    from modelscope.preprocessors.builder import PREPROCESSORS
    from modelscope.utils.constant import Fields, Tasks

    from . import compat
    from . import modelscope_model, pipeline, preprocessor

    compat.apply()
    task = Tasks.hand_2d_keypoints
    # also in the default group: a configuration without 'task' then reaches our clear error message
    compat.register(MODELS, 'default', MODEL_TYPE, modelscope_model.HandKeypointsModel, modelscope_model)
    compat.register(MODELS, task, MODEL_TYPE, modelscope_model.HandKeypointsModel, modelscope_model)
    compat.register(PREPROCESSORS, Fields.cv, PREPROCESSOR_TYPE, preprocessor.HandImagePreprocessor, preprocessor)
    compat.register(PIPELINES, task, PIPELINE_TYPE, pipeline.HandKeypointsPipeline, pipeline)
    # pipeline(pipeline_name=PIPELINE_TYPE, model=DIR) without task= looks in the default group
    compat.register(PIPELINES, 'default', PIPELINE_TYPE, pipeline.HandKeypointsPipeline, pipeline)
    PREPROCESSOR_MAP.setdefault((MODEL_TYPE, task), PREPROCESSOR_TYPE)
    if compat.serves_official_model():
        compat.register(MODELS, 'default', OFFICIAL_MODEL_TYPE, modelscope_model.HandKeypointsModel,
                        modelscope_model)
        compat.register(MODELS, task, OFFICIAL_MODEL_TYPE, modelscope_model.HandKeypointsModel, modelscope_model)
        compat.register(PIPELINES, task, OFFICIAL_PIPELINE_TYPE, pipeline.HandKeypointsPipeline, pipeline)
        PREPROCESSOR_MAP.setdefault((OFFICIAL_MODEL_TYPE, task), PREPROCESSOR_TYPE)
    for name in _OPTIONAL_REGISTRATIONS:
        if importlib.util.find_spec(f'{__name__}.{name}') is not None:
            importlib.import_module(f'{__name__}.{name}')


_register()

__all__ = ['__version__', 'convert_model_dir', 'starter_model_dir', 'ModelDirError', 'HUB_MODEL_ID', 'MODEL_TYPE',
           'PIPELINE_TYPE', 'PREPROCESSOR_TYPE', 'OFFICIAL_MODEL_TYPE', 'OFFICIAL_PIPELINE_TYPE']
