"""COCO-WholeBody hand datasets and training-time augmentation."""
from .augment import TopDownAugmentation
from .coco_wholebody_hand import (CocoWholeBodyHandDataset, DatasetError, HandCocoWholeBodyDataset, HandRecords,
                                  load_coco_wholebody_hands, read_image_rgb, resolve_split_folder,
                                  substitute_data_root)

__all__ = [
    'CocoWholeBodyHandDataset', 'DatasetError', 'HandCocoWholeBodyDataset', 'HandRecords', 'TopDownAugmentation',
    'load_coco_wholebody_hands', 'read_image_rgb', 'resolve_split_folder', 'substitute_data_root'
]
