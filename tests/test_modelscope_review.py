"""ModelScope conventions found in review: how ModelScope's own machinery calls this plugin's model."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import modelscope_handkp
from test_model_dir import write_tiny_dir


def test_modelscope_checkpoint_hook_can_prepare_its_output_folder(tmp_path):
    """ModelScope's CheckpointHook / BestCkptSaverHook call
    ``model.save_pretrained(output_dir, '*.bin', save_function=..., config=..., save_config_function=...)``
    at every run (the folder exists from the previous run): this used to raise ``ValueError: ... other
    checkpoint names (['*.bin']) would not be loaded back`` and then ``FileExistsError``."""
    from modelscope.models import Model
    from modelscope.trainers.hooks.checkpoint.checkpoint_processor import CheckpointProcessor
    from modelscope.utils.config import Config

    tiny_dir = write_tiny_dir(tmp_path / 'tiny')
    model = Model.from_pretrained(str(tiny_dir))
    assert isinstance(model, modelscope_handkp.modelscope_model.HandKeypointsModel)
    with torch.no_grad():
        next(iter(model.parameters())).add_(1.0)  # "trained" weights
    trainer = types.SimpleNamespace(model=model, cfg=Config.from_file(str(tiny_dir / 'configuration.json')),
                                    train_preprocessor=None, eval_preprocessor=None, unwrap_module=lambda m: m)
    out = tmp_path / 'output'
    for _ in range(2):  # a second run in the same work_dir finds the folder filled
        CheckpointProcessor().prepare_output(trainer, str(out))
    assert sorted(p.name for p in out.iterdir()) == ['configuration.json', 'pytorch_model.pt']
    back = Model.from_pretrained(str(out))
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


def test_folder_check_names_our_mistakes_and_leaves_other_models_to_modelscope(tmp_path):
    """After `import modelscope_handkp` every local folder without configuration.json was refused for every
    task, which also blocked ModelScope's pipelines built from other layouts (a diffusers model_index.json)."""
    import importlib

    from modelscope_handkp import model_dir as md
    check = importlib.import_module('modelscope.pipelines.builder').is_official_hub_path
    other = tmp_path / 'diffusers_model'
    other.mkdir()
    (other / 'model_index.json').write_text('{}')
    check(str(other))  # no error: ModelScope decides
    work = tmp_path / 'work'
    (work / 'output').mkdir(parents=True)
    (work / 'output_best').mkdir()
    (work / 'output' / 'configuration.json').write_text('{}')
    (work / 'train_log.jsonl').write_text('')
    with pytest.raises(md.ModelDirError, match=r"is a training work_dir, not a model directory; pass its model "
                                               r"directory '.*work/output' \(last\) or '.*work/output_best' \(best\)"):
        check(str(work))
    weights_only = tmp_path / 'weights_only'
    weights_only.mkdir()
    (weights_only / 'pytorch_model.pt').write_bytes(b'x')
    with pytest.raises(md.ModelDirError, match='is not a model directory: it has no configuration.json'):
        check(str(weights_only))


def test_pipeline_of_a_model_without_a_directory_says_to_save_it(tmp_path):
    """pipeline(task, model=HandKeypointsModel(None)) failed with 'stat: path should be string ... not NoneType'."""
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    from modelscope_handkp.modelscope_model import HandKeypointsModel
    model = HandKeypointsModel(None)
    with pytest.raises(ValueError, match=r'has no model_dir .*model\.save_pretrained\(DIR\), then pass '
                                         r'pipeline\(task, model=DIR\)'):
        pipeline(Tasks.hand_2d_keypoints, model=model, detector='whole_image')
    model.save_pretrained(str(tmp_path / 'saved'))
    pipe = pipeline(Tasks.hand_2d_keypoints, model=str(tmp_path / 'saved'), detector='whole_image')
    assert pipe(np.zeros((64, 64, 3), np.uint8))['keypoints'].shape == (1, 21, 3)


def test_pipeline_name_without_task_builds_the_hand_pipeline(caplog):
    """pipeline(pipeline_name=..., model=DIR) without task= raised 'not in the pipelines registry group
    default'; and a build from that group must not switch the output check of other pipelines."""
    import logging

    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    first = pipeline(Tasks.hand_2d_keypoints, model=modelscope_handkp.starter_model_dir())
    p = pipeline(pipeline_name=modelscope_handkp.PIPELINE_TYPE, model=modelscope_handkp.starter_model_dir())
    assert type(p).__name__ == 'HandKeypointsPipeline'
    with caplog.at_level(logging.WARNING):
        for pipe in (p, first):
            assert pipe(np.zeros((64, 64, 3), np.uint8))['keypoints'].shape == (0, 21, 3)
    assert 'output keys are missing' not in caplog.text
