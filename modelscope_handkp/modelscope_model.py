"""The ModelScope ``Model`` of this plugin: the top-down HRNet hand keypoint network of a model directory.

Registered in ModelScope's ``MODELS`` registry (group ``Tasks.hand_2d_keypoints``) as
``handkp-topdown-hrnet`` and — when pai-easycv is not installed — as the published model's
``HRNet-Hand2D-Keypoints``, so ``Model.from_pretrained(DIR)`` works for both kinds of directory::

    import modelscope_handkp  # registers
    from modelscope.models import Model
    model = Model.from_pretrained(DIR)          # HandKeypointsModel, weights loaded
    heatmaps = model.forward_heatmaps(crops, flip_test=True)

``state_dict()`` keys are ``backbone.*`` / ``keypoint_head.*``, the layout of the published
``pytorch_model.pt``, so checkpoints written by ModelScope's trainer load back unchanged.
"""
from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np
import torch
from modelscope.models.base import TorchModel

from . import model_dir as md


class HandKeypointsModel(TorchModel):
    """Top-down hand keypoint model (HRNet + heatmap head) wrapped for ModelScope.

    Args:
        model_dir: a model directory (either format); its ``pytorch_model.pt`` is loaded.  ``None``
            builds the network from ``kwargs`` (or the default HRNet-w18 256x256) with random weights.
        load_weights: ``False`` skips loading ``pytorch_model.pt`` (e.g. to train from scratch).
        **kwargs: the ``model`` section of configuration.json as ModelScope passes it (``backbone``,
            ``keypoint_head``, ``test_cfg``, ... — they override the file), ``device``.
    """

    def __init__(self, model_dir: str | None = None, load_weights: bool = True, **kwargs):
        device = kwargs.pop('device', None)
        super().__init__(model_dir, device=device or 'cpu')
        from .checkpoint import load_checkpoint
        from .models import build_hand_model, default_model_cfg

        overrides = md.decode_jsonplus({k: v for k, v in kwargs.items()
                                        if k in ('backbone', 'keypoint_head', 'test_cfg', 'train_cfg',
                                                 'image_size', 'heatmap_size')})
        if model_dir is not None:
            spec = md.load_model_spec(model_dir, require_weights=load_weights)
            if overrides:
                spec.model_cfg.update(overrides)
                spec.flip_test, spec.post_process, spec.kernel = md.test_settings(
                    spec.model_cfg, f'{model_dir} (with the settings passed to the model)')
        else:
            cfg = default_model_cfg()
            cfg.update(overrides)
            flip, post, kernel = md.test_settings(cfg, 'the settings passed to the model')
            spec = md.ModelSpec(None, md.FORMAT_HANDKP, {}, cfg, None, flip, post, kernel)
        self.spec = spec
        try:
            net = build_hand_model(spec.model_cfg)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            what = str(e) if isinstance(e, ValueError) else (
                f'{type(e).__name__}: {e}; check model.backbone / model.keypoint_head against the published '
                'configuration.json')
            raise md.ModelDirError(f'the model section of {model_dir or "the given config"} cannot be built: {what}') from e
        if net._parameters or net._buffers:  # pragma: no cover - guards the layout assumption below
            raise TypeError('TopDownHandModel grew direct parameters; HandKeypointsModel must register them too.')
        # register the network's children directly: state_dict keys stay backbone.* / keypoint_head.*
        for name, child in net.named_children():
            self.add_module(name, child)
        self.__dict__['hand_model'] = net  # same modules, not registered twice
        if load_weights and spec.checkpoint:
            try:
                load_checkpoint(net, spec.checkpoint, strict=True)
            except Exception as e:
                raise md.ModelDirError(f'{spec.checkpoint}: {e}') from e
        from .codec import HeatmapCodec
        self.codec = HeatmapCodec(input_size=net.input_size, heatmap_size=net.heatmap_size,
                                  post_process=spec.post_process, kernel=spec.kernel)
        self.flip_test = spec.flip_test
        if device is not None:  # Model.from_pretrained(dir, device='cuda:0' / 'gpu' / 'cpu') puts it there
            from modelscope.utils.device import create_device
            self.to(create_device(device))
        # built for inference, as from_pretrained users expect: in train mode the BatchNorm layers
        # would use batch statistics (wrong keypoints) and overwrite their running statistics; the
        # trainer switches to train mode itself
        self.eval()

    # ------------------------------------------------------------------ properties of the network
    @property
    def input_size(self):
        return self.hand_model.input_size

    @property
    def heatmap_size(self):
        return self.hand_model.heatmap_size

    @property
    def num_keypoints(self) -> int:
        return self.hand_model.num_keypoints

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train(self, mode: bool = True):
        super().train(mode)
        self.hand_model.training = mode
        return self

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, target_folder, save_checkpoint_names=None, save_function=None, config=None,
                        save_config_function=None, overwrite: bool = False, **kwargs) -> str:
        """Write the current weights as a model directory of this plugin (``configuration.json`` +
        ``pytorch_model.pt``, the SSDLite detector files and the model card of the source directory)
        that ``Model.from_pretrained`` and the pipeline load back; returns the folder.

        The weights always go to ``pytorch_model.pt``, the file these directories are loaded from
        (ModelScope's usual ``pytorch_model.bin`` is accepted as a name and written there too, so
        nothing stale is loaded instead).  ``config``: its ``train`` / ``evaluation`` / ``dataset``
        sections are kept.  A non-empty ``target_folder`` is only replaced with ``overwrite=True`` (or when
        ``save_config_function`` is given, as ModelScope's checkpoint hooks do: they rewrite their own folder).
        ``save_function`` / ``save_config_function`` are not used (the format is fixed).
        """
        names = [save_checkpoint_names] if isinstance(save_checkpoint_names, str) else list(save_checkpoint_names or [])
        # a pattern is accepted when it names the weights file: ModelScope's CheckpointHook passes '*.bin'
        unknown = [n for n in names
                   if not any(fnmatch.fnmatchcase(f, str(n)) for f in (md.WEIGHTS_FILE, 'pytorch_model.bin'))]
        if unknown:
            raise ValueError(f'save_pretrained writes the weights to {md.WEIGHTS_FILE}, the file this plugin\'s model '
                             f'directories are loaded from; other checkpoint names ({unknown}) would not be '
                             'loaded back. Leave save_checkpoint_names out.')
        if save_config_function is not None:
            # ModelScope's checkpoint hooks (CheckpointProcessor.prepare_output) write into their output folder
            # again on every run in the same work_dir: ModelScope's contract is "created if it doesn't exist"
            overwrite = True
        if save_function is not None or save_config_function is not None:
            import warnings
            warnings.warn('HandKeypointsModel.save_pretrained ignores save_function / save_config_function: it '
                          'writes its own format (configuration.json + pytorch_model.pt).', stacklevel=2)
        if hasattr(config, 'to_dict'):
            config = config.to_dict()
        meta = {'saved_by': 'modelscope_handkp.HandKeypointsModel.save_pretrained',
                'source': self.spec.model_dir}
        return md.write_model_dir(self.spec, target_folder, self.hand_model.state_dict(), meta,
                                  overwrite=overwrite, config=config)

    # ------------------------------------------------------------------ computation
    def forward_heatmaps(self, images: torch.Tensor, flip_test: bool | None = None) -> torch.Tensor:
        """Normalised RGB crops [N, 3, H, W] -> heatmaps [N, K, h, w] (flip test in the same forward)."""
        flip = self.flip_test if flip_test is None else bool(flip_test)
        self._check_crops(images)
        return self.hand_model.forward_heatmaps(images.to(self.device), flip_test=flip)

    def _check_crops(self, images) -> None:
        """[N, 3, H, W] at the network's input size: other sizes failed deep in the network with a bare
        'size of tensor a (50) must match ...' (and the decoding assumes this size)."""
        w, h = (int(v) for v in self.hand_model.input_size)
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != (h, w):
            raise ValueError(f'crops must be a tensor [N, 3, {h}, {w}] (normalised RGB, this model\'s input size '
                             f'{w}x{h}), got shape {list(shape)}; make them with '
                             'modelscope_handkp.transforms.crop_to_tensor(image, centers, scales, '
                             f'image_size=({w}, {h})), or use the pipeline for images.')

    def decode(self, heatmaps, centers, scales, rotations=None) -> np.ndarray:
        """Heatmaps -> keypoints float32 [N, K, 3] (x, y, score) in image pixels."""
        coords, scores = self.codec.decode(heatmaps, centers, scales, rotations=rotations)
        return np.concatenate([coords, scores], axis=-1).astype(np.float32)

    def forward(self, img: torch.Tensor = None, target: torch.Tensor = None, target_weight: torch.Tensor = None,
                img_metas=None, return_loss: bool | None = None, **kwargs) -> dict[str, Any]:
        """Trainer and inference entry point.

        * training (``self.training`` or ``return_loss=True``): ``img`` [N,3,H,W], ``target`` [N,K,h,w],
          ``target_weight`` [N,K,1] -> ``{'loss': JointsMSELoss}``.
        * otherwise: ``{'heatmaps': [N,K,h,w]}`` (flip test as configured), plus — when the crops'
          ``center`` / ``scale`` (and optional ``rotation``) are given as keyword tensors/arrays [N,2]
          or in ``img_metas`` (list of dicts) — ``'keypoints'``: float32 [N,K,3] in image pixels.
        """
        if img is None:
            img = kwargs.pop('inputs', None)
        if not isinstance(img, torch.Tensor):
            raise TypeError('HandKeypointsModel.forward expects img: a float tensor [N, 3, H, W] of normalised '
                            f'RGB crops, got {type(img).__name__}; for images use the pipeline: '
                            'pipeline(Tasks.hand_2d_keypoints, model=DIR)(image).')
        train = self.training if return_loss is None else bool(return_loss)
        if train:
            if target is None or target_weight is None:
                raise ValueError('training forward needs target [N, K, h, w] and target_weight [N, K, 1] '
                                 '(the heatmap targets of the batch); call model.eval() for inference.')
            self._check_crops(img)
            return self.hand_model.forward_train(img.to(self.device), target.to(self.device),
                                                 target_weight.to(self.device))
        heatmaps = self.forward_heatmaps(img)
        out: dict[str, Any] = {'heatmaps': heatmaps}
        centers, scales, rotations = _crop_params(img_metas, kwargs)
        if centers is not None:
            out['keypoints'] = self.decode(heatmaps, centers, scales, rotations)
        if img_metas is not None:
            out['img_metas'] = img_metas
        return out


def _as_array(x):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _crop_params(img_metas, kwargs):
    centers, scales = kwargs.get('center', kwargs.get('centers')), kwargs.get('scale', kwargs.get('scales'))
    rotations = kwargs.get('rotation', kwargs.get('rotations'))
    if centers is None and img_metas:
        metas = img_metas.data if hasattr(img_metas, 'data') else img_metas
        if isinstance(metas, dict):
            metas = [metas]
        metas = list(metas)
        if metas and isinstance(metas[0], dict) and 'center' in metas[0] and 'scale' in metas[0]:
            centers = [m['center'] for m in metas]
            scales = [m['scale'] for m in metas]
            rotations = [m.get('rotation', 0.0) for m in metas]
    if centers is None or scales is None:
        return None, None, None
    centers = _as_array(centers).reshape(-1, 2)
    scales = _as_array(scales).reshape(-1, 2)
    rotations = None if rotations is None else _as_array(rotations).reshape(-1)
    return centers, scales, rotations
