"""Keypoint models: ``build_hand_model(cfg)`` builds the top-down HRNet hand model."""
from __future__ import annotations

import copy

from .hrnet import HRNET_W18_EXTRA, HRNet, hrnet_extra
from .topdown import TopDownHandModel, as_hand_network, flip_back_heatmaps

__all__ = ['build_hand_model', 'default_model_cfg', 'hrnet_model_cfg', 'HRNet', 'TopDownHandModel',
           'flip_back_heatmaps', 'as_hand_network', 'hrnet_extra', 'HRNET_W18_EXTRA']


def hrnet_model_cfg(extra: dict | None = None, num_keypoints: int = 21, image_size=(256, 256)) -> dict:
    """An EasyCV-style TopDown model dict for an HRNet backbone and the resize-concat head."""
    extra = copy.deepcopy(extra or HRNET_W18_EXTRA)
    channels = list(extra['stage4']['num_channels'])
    return dict(
        type='TopDown',
        backbone=dict(type='HRNet', in_channels=3, extra=extra),
        keypoint_head=dict(
            type='TopdownHeatmapSimpleHead',
            in_channels=channels,
            in_index=tuple(range(len(channels))),
            input_transform='resize_concat',
            out_channels=num_keypoints,
            num_deconv_layers=0,
            extra=dict(final_conv_kernel=1, num_conv_layers=1, num_conv_kernels=(1, )),
            loss_keypoint=dict(type='JointsMSELoss', use_target_weight=True)),
        train_cfg=dict(),
        test_cfg=dict(flip_test=True, post_process='unbiased', shift_heatmap=True, modulate_kernel=11),
        image_size=list(image_size),
        heatmap_size=[image_size[0] // 4, image_size[1] // 4])


def default_model_cfg() -> dict:
    """The published HRNet-w18 256x256 hand model."""
    return hrnet_model_cfg()


def build_hand_model(cfg: dict | None = None) -> TopDownHandModel:
    """Build the top-down hand model from an EasyCV/ModelScope model dict (w18 256x256 by default).

    ``cfg`` may carry ``image_size``/``heatmap_size`` (our configuration.json puts them there;
    EasyCV keeps them in ``data_cfg``); they default to 256x256 / 64x64.
    """
    return TopDownHandModel(default_model_cfg() if cfg is None else cfg)
