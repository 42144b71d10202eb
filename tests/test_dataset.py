"""COCO-WholeBody hand reader and training-time augmentation (issue 5)."""
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from modelscope_handkp.datasets import (CocoWholeBodyHandDataset, DatasetError, TopDownAugmentation,
                                        load_coco_wholebody_hands, resolve_split_folder, substitute_data_root)
from modelscope_handkp.transforms import IMAGENET_MEAN, IMAGENET_STD, box_to_center_scale, crop_to_tensor, \
    get_affine_matrix, transform_points

K = 21


# ----------------------------------------------------------------------------- synthetic data
def _colour(k):
    return (40 + 10 * k, 250 - 10 * k, 60 + 7 * (k % 5))  # RGB, distinct per keypoint


def _hand(cx, cy, size, rng):
    """21 keypoints on a jittered 5 x 5 grid (12 px apart: their 7 x 7 squares never overlap)."""
    cells = rng.permutation(25)[:K]
    grid = np.stack([cells % 5, cells // 5], 1) * 12.0 - 24.0
    kp = grid + rng.uniform(-2, 2, (K, 2)) + [cx, cy]
    box = [float(kp[:, 0].min() - 6), float(kp[:, 1].min() - 6), float(np.ptp(kp[:, 0]) + 12),
           float(np.ptp(kp[:, 1]) + 12)]
    return kp, box


def _draw(kp, w=200, h=160):
    img = np.zeros((h, w, 3), np.uint8)
    for k, (x, y) in enumerate(np.round(kp).astype(int)):
        img[max(0, y - 3):y + 4, max(0, x - 3):x + 4] = _colour(k)
    return img


def make_dataset(root, n=4, seed=0, split='train', width=200, height=160):
    """A COCO-WholeBody folder: annotations/<split>.json + images/, one right hand per image, each
    keypoint painted as a 7x7 square of its own colour."""
    rng = np.random.default_rng(seed)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(exist_ok=True)
    images, anns = [], []
    for i in range(n):
        kp, box = _hand(width / 2 + rng.uniform(-20, 20), height / 2 + rng.uniform(-15, 15), 50, rng)
        name = f'img_{i}.png'
        cv2.imwrite(str(root / 'images' / name), cv2.cvtColor(_draw(kp, width, height), cv2.COLOR_RGB2BGR))
        kpts = np.concatenate([kp, np.full((K, 1), 2.0)], 1)
        kpts[3, 2] = 0  # one labelled-but-invisible keypoint
        images.append({'id': 100 + i, 'file_name': name, 'width': width, 'height': height})
        anns.append({'id': 500 + i, 'image_id': 100 + i, 'righthand_valid': True,
                     'righthand_kpts': kpts.reshape(-1).round(3).tolist(), 'righthand_box': box,
                     'lefthand_valid': False, 'lefthand_kpts': [0] * 63, 'lefthand_box': [0, 0, 0, 0]})
    ann_file = root / 'annotations' / f'{split}.json'
    ann_file.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': [{'id': 1}]}))
    return root, ann_file


def _edit(ann_file, fn):
    data = json.loads(ann_file.read_text())
    fn(data)
    ann_file.write_text(json.dumps(data))


# ----------------------------------------------------------------------------- reading
def test_open_hands_val_records(data_dir):
    ann = data_dir / 'open_hands' / 'annotations' / 'val.json'
    rec = load_coco_wholebody_hands(str(ann), str(data_dir / 'open_hands' / 'images'))
    assert len(rec) == 531  # README: val 531 hands
    assert rec.joints.shape == (531, K, 2) and rec.joints.dtype == np.float32
    assert int((rec.visible == 0).sum()) == 32  # README: 32 of 11,151 points with v = 0
    assert set(np.unique(rec.visible)) <= {0.0, 1.0}
    c, s = box_to_center_scale(rec.boxes, 'xywh', image_size=(256, 256), padding=1.25)
    np.testing.assert_array_equal(rec.centers, c)
    np.testing.assert_array_equal(rec.scales, s)
    # first annotation: righthand_box [33.39, 18.65, 27.48, 61.75] -> square of 61.75 px, x 1.25 / 200
    assert rec.image_files[0].endswith('sign_digits/0_IMG_1138.jpg') and rec.sides[0] == 'right'
    np.testing.assert_allclose(rec.centers[0], [33.39 + 27.48 / 2, 18.65 + 61.75 / 2], rtol=1e-6)
    np.testing.assert_allclose(rec.scales[0], [61.75 / 200 * 1.25] * 2, rtol=1e-6)
    raw = json.loads(ann.read_text())['annotations'][0]['righthand_kpts']
    np.testing.assert_allclose(rec.joints[0], np.asarray(raw, np.float32).reshape(K, 3)[:, :2])


def test_open_hands_train_count_and_folder_resolution(data_dir):
    root = data_dir / 'open_hands'
    ann, prefix, hints = resolve_split_folder(str(root), None, train=True)
    assert ann.endswith('annotations/train.json') and prefix is None
    ds = CocoWholeBodyHandDataset(ann, prefix, prefix_hints=hints)
    assert len(ds) == 4910 and int((ds.records.visible == 0).sum()) == 351  # README numbers
    assert ds.img_prefix == str(root / 'images')
    assert resolve_split_folder(str(root), None, train=False)[0].endswith('annotations/val.json')
    assert resolve_split_folder(str(root), 'validation', train=False)[0].endswith('annotations/val.json')
    assert resolve_split_folder(str(data_dir / 'eval_hgc'), None, train=False)[0].endswith('test.json')
    assert resolve_split_folder(str(data_dir / 'hands' / 'coco'), None, train=False)[0].endswith(
        'test_coco_wholebody.json')


def test_eval_sample_is_the_rgb_crop(data_dir):
    root = data_dir / 'open_hands'
    ds = CocoWholeBodyHandDataset(str(root / 'annotations' / 'val.json'), str(root / 'images'), test_mode=True)
    for i in (0, 200):
        s = ds[i]
        rgb = cv2.cvtColor(cv2.imread(ds.records.image_files[i]), cv2.COLOR_BGR2RGB)
        ref = crop_to_tensor(rgb, ds.records.centers[i][None], ds.records.scales[i][None], (256, 256))[0]
        assert torch.equal(s['img'], ref)
        assert s['index'] == i
        np.testing.assert_array_equal(s['bbox'].numpy(), ds.records.boxes[i])


def test_data_root_substitution(tmp_path):
    root, ann = make_dataset(tmp_path / 'ds', n=2)
    assert substitute_data_root({'a': '${data_root}/x', 'b': {'c': '${data_root}'}}, '/r/') == {
        'a': '/r/x', 'b': {'c': '/r'}}
    with pytest.raises(DatasetError, match='data root'):
        substitute_data_root('${data_root}/a.json', None)
    ds = CocoWholeBodyHandDataset('${data_root}/annotations/train.json', '${data_root}/images', data_root=str(root))
    assert len(ds) == 2 and ds.img_prefix == str(root / 'images')
    ds = CocoWholeBodyHandDataset('annotations/train.json', 'images', data_root=str(root))  # relative to data_root
    assert len(ds) == 2


def test_left_and_right_hands_and_validity_rules(tmp_path):
    root, ann = make_dataset(tmp_path / 'ds', n=3)

    def edit(d):
        a = d['annotations']
        a[0]['lefthand_valid'] = True  # a second hand in image 0
        a[0]['lefthand_kpts'] = [5.0, 6.0, 1.0] * K
        a[0]['lefthand_box'] = [1, 2, 30, 40]
        a[1]['righthand_kpts'] = [0.0] * 63  # valid flag but all zeros: not a hand (EasyCV rule)
        a[2]['righthand_valid'] = False

    _edit(ann, edit)
    rec = load_coco_wholebody_hands(str(ann), str(root / 'images'))
    assert rec.sides == ['left', 'right'] and list(rec.ann_ids) == [500, 500]
    np.testing.assert_array_equal(rec.boxes[0], [1, 2, 30, 40])
    assert float(rec.visible[1, 3]) == 0.0 and float(rec.visible[1, 0]) == 1.0  # min(1, v)


# ----------------------------------------------------------------------------- bad data
@pytest.mark.parametrize('case, message', [
    ('missing_image', r"image file .*nothere\.png.* id=100.* does not exist"),
    ('short_kpts', r'annotations\[1\] \(id=501\): righthand_kpts must be a list of 63 numbers, got 60 values'),
    ('long_kpts', r'annotations\[1\] \(id=501\): righthand_kpts must be a list of 63 numbers, got 66 values'),
    ('nan_kpts', r'annotations\[1\] \(id=501\): righthand_kpts holds NaN'),
    ('text_kpts', r'annotations\[1\] \(id=501\): righthand_kpts holds non-numeric'),
    ('empty_box', r'annotations\[1\] \(id=501\): righthand_box .* has no area'),
    ('unknown_image', r'annotations\[1\] \(id=501\): image_id 999 is not in "images"'),
    ('image_entry', r'images\[0\] needs an "id" and a non-empty "file_name"'),
])
def test_malformed_entries_name_file_and_entry(tmp_path, case, message):
    root, ann = make_dataset(tmp_path / 'ds', n=3)

    def edit(d):
        a = d['annotations'][1]
        if case == 'missing_image':
            d['images'][0]['file_name'] = 'nothere.png'
        elif case == 'short_kpts':
            a['righthand_kpts'] = a['righthand_kpts'][:60]
        elif case == 'long_kpts':
            a['righthand_kpts'] = a['righthand_kpts'] + [1.0, 2.0, 1.0]
        elif case == 'nan_kpts':
            a['righthand_kpts'][4] = float('nan')
        elif case == 'text_kpts':
            a['righthand_kpts'][4] = 'x'
        elif case == 'empty_box':
            a['righthand_box'] = [3, 4, 0, 10]
        elif case == 'unknown_image':
            a['image_id'] = 999
        elif case == 'image_entry':
            del d['images'][0]['file_name']

    _edit(ann, edit)
    with pytest.raises(DatasetError, match=message) as e:
        CocoWholeBodyHandDataset(str(ann), str(root / 'images'))
    assert str(ann) in str(e.value) and 'skip_invalid=True' in str(e.value)


def test_skip_invalid_logs_and_counts(tmp_path, caplog):
    root, ann = make_dataset(tmp_path / 'ds', n=5)

    def edit(d):
        d['images'][0]['file_name'] = 'gone.png'
        d['annotations'][3]['righthand_kpts'] = [1, 2]

    _edit(ann, edit)
    with caplog.at_level(logging.WARNING, logger='modelscope_handkp.datasets'):
        ds = CocoWholeBodyHandDataset(str(ann), str(root / 'images'), skip_invalid=True)
    assert len(ds) == 3 and ds.skipped == 2
    assert list(ds.records.ann_ids) == [501, 502, 504]
    assert 'skipped 2 invalid entries' in caplog.text and 'gone.png' in caplog.text


def test_unusable_annotation_files(tmp_path):
    with pytest.raises(DatasetError, match='does not exist'):
        CocoWholeBodyHandDataset(str(tmp_path / 'none.json'), str(tmp_path))
    bad = tmp_path / 'bad.json'
    bad.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r'bad\.json.* is not valid JSON'):
        CocoWholeBodyHandDataset(str(bad), str(tmp_path))
    bad.write_text('[1, 2]')
    with pytest.raises(DatasetError, match='is not COCO-WholeBody JSON'):
        CocoWholeBodyHandDataset(str(bad), str(tmp_path))
    empty = tmp_path / 'emptyfolder'
    empty.mkdir()
    with pytest.raises(DatasetError, match='no annotation file'):
        resolve_split_folder(str(empty))


def test_dataset_without_hands_is_an_error(tmp_path):
    root, ann = make_dataset(tmp_path / 'ds', n=2)
    _edit(ann, lambda d: [a.update(righthand_valid=False) for a in d['annotations']])
    with pytest.raises(DatasetError, match='holds no usable hand'):
        CocoWholeBodyHandDataset(str(ann), str(root / 'images'))


def test_folder_with_only_the_other_split(tmp_path):
    root, ann = make_dataset(tmp_path / 'ds', n=2)
    assert ann.name == 'train.json'
    assert resolve_split_folder(str(root), None, train=True)[0] == str(ann)
    with pytest.raises(DatasetError, match=r'holds only annotations/train\.json, which is named for the training split'):
        resolve_split_folder(str(root), None, train=False)  # no silent evaluation on the training data
    ann.rename(ann.with_name('hands.json'))  # a neutral name serves both
    assert resolve_split_folder(str(root), None, train=False)[0].endswith('hands.json')


def test_undecodable_image_names_the_file(tmp_path):
    root, ann = make_dataset(tmp_path / 'ds', n=2)
    (root / 'images' / 'img_1.png').write_text('not an image')
    ds = CocoWholeBodyHandDataset(str(ann), str(root / 'images'))
    ds[0]
    with pytest.raises(DatasetError, match=r'img_1\.png.*annotation id=501.*cannot be decoded'):
        ds[1]


def test_truncated_jpeg_is_an_error_not_a_grey_image(tmp_path):
    """OpenCV decodes a truncated JPEG with grey rows and a stderr warning only: evaluation scored such an
    image silently (PCK 0.998 -> 0.971 in a review); the dataset refuses it as the pipeline does."""
    root, ann = make_dataset(tmp_path / 'ds', n=2)
    img = cv2.imread(str(root / 'images' / 'img_1.png'))
    data = cv2.imencode('.jpg', img)[1].tobytes()
    (root / 'images' / 'img_1.png').write_bytes(data[:len(data) // 3])  # the name does not matter to OpenCV
    ds = CocoWholeBodyHandDataset(str(ann), str(root / 'images'), test_mode=True)
    ds[0]
    with pytest.raises(DatasetError, match=r'img_1\.png.*is a truncated JPEG.*get the complete file'):
        ds[1]


def test_skip_invalid_skips_corrupt_and_truncated_images_when_loading(tmp_path, caplog):
    """--skip-invalid skipped missing images only: a corrupt or truncated one stopped the run in __getitem__,
    possibly hours into an epoch."""
    root, ann = make_dataset(tmp_path / 'ds', n=4)
    (root / 'images' / 'img_1.png').write_text('not an image')
    data = cv2.imencode('.jpg', cv2.imread(str(root / 'images' / 'img_2.png')))[1].tobytes()
    (root / 'images' / 'img_2.png').write_bytes(data[:len(data) // 3])
    with caplog.at_level(logging.WARNING, logger='modelscope_handkp.datasets'):
        ds = CocoWholeBodyHandDataset(str(ann), str(root / 'images'), skip_invalid=True, test_mode=True)
    assert len(ds) == 2 and ds.skipped == 2 and list(ds.records.ann_ids) == [500, 503]
    assert 'img_1.png' in ds.records.skipped[0] and 'cannot be decoded' in ds.records.skipped[0]
    assert 'img_2.png' in ds.records.skipped[1] and 'is a truncated JPEG' in ds.records.skipped[1]
    assert 'skipped 2 invalid entries' in caplog.text
    np.testing.assert_array_equal(ds[1]['joints'], ds.records.joints[1])  # the kept samples load
    # without skip_invalid the error, when it comes, names the way out
    ds = CocoWholeBodyHandDataset(str(ann), str(root / 'images'))
    assert len(ds) == 4
    with pytest.raises(DatasetError, match=r'img_1\.png.*cannot be decoded.*or pass skip_invalid=True \(CLI: '
                                           r'--skip-invalid\), which checks every image when the annotations'):
        ds[1]


# ----------------------------------------------------------------------------- augmentation
def test_random_parameters_follow_easycv():
    aug = TopDownAugmentation(flip_prob=0.5, scale_factor=0.25, rot_factor=30, rot_prob=0.6)
    flip, s, r = aug.random_params(np.random.default_rng(0), 40000)
    assert s.min() >= 0.75 and s.max() <= 1.25 and r.min() >= -60 and r.max() <= 60
    assert abs(flip.mean() - 0.5) < 0.01
    assert abs((r == 0).mean() - 0.4) < 0.01  # rotation applied with probability 0.6
    # clipping at +-1 sigma for the scale (2 x 15.9 %) and +-2 sigma for the rotation (0.6 x 4.6 %)
    assert abs(np.isclose(s, 0.75).mean() + np.isclose(s, 1.25).mean() - 0.3173) < 0.01
    assert abs((np.abs(r) == 60).mean() - 0.6 * 0.0455) < 0.005
    assert abs(np.std(r[(r != 0) & (np.abs(r) < 60)]) - 26.39) < 0.8  # normal(0, 30) truncated at 2 sigma
    ev = TopDownAugmentation(train=False)
    f, s0, r0 = ev.random_params(None, 3)
    assert not f.any() and (s0 == 1).all() and (r0 == 0).all()


def _mmpose_reference(img, joints, center, scale, flip, sfac, rot, size):
    """EasyCV/mmpose-0.x order: TopDownRandomFlip (image copy, x -> W-1-x, centre), scale/rotation,
    TopDownAffine with get_affine_transform."""
    joints = np.asarray(joints, np.float64).copy()
    c = np.asarray(center, np.float32).copy()
    if flip:
        img = img[:, ::-1].copy()
        joints[:, 0] = img.shape[1] - 1 - joints[:, 0]
        c[0] = img.shape[1] - c[0] - 1
    m = get_affine_matrix(c, np.asarray(scale, np.float32) * np.float32(sfac), rot, size)
    crop = cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR)
    return crop, transform_points(joints, m)


def _denormalize(t):
    x = t.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize('seed', range(6))
def test_train_sample_matches_mmpose_order_and_image_content(tmp_path, seed):
    root, ann = make_dataset(tmp_path / 'ds', n=1, seed=seed)
    pipeline = [dict(type='TopDownRandomFlip', flip_prob=0.5),
                dict(type='TopDownGetRandomScaleRotation', rot_factor=30, scale_factor=0.25),
                dict(type='TopDownAffine'), dict(type='MMToTensor'),
                dict(type='NormalizeTensor', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
                dict(type='TopDownGenerateTarget', sigma=3), dict(type='PoseCollect', keys=['img'])]
    ds = CocoWholeBodyHandDataset(str(ann), str(root / 'images'), pipeline=pipeline, seed=seed)
    rec = ds.records
    img = cv2.cvtColor(cv2.imread(rec.image_files[0]), cv2.COLOR_BGR2RGB)
    out = ds.augment(img, rec.joints[0], rec.visible[0], rec.centers[0], rec.scales[0], ds.rng(0))
    ref_crop, ref_kp = _mmpose_reference(img, rec.joints[0], rec.centers[0], rec.scales[0], out['flip'],
                                         out['scale_factor'], out['rotation'], (256, 256))
    crop = _denormalize(out['img'])
    # same pixels as flipping the image first (the flip is folded into the warp matrix)
    diff = np.abs(crop.astype(int) - ref_crop.astype(int))
    assert diff.mean() < 0.5 and np.mean(diff > 8) < 0.01
    # every visible keypoint lands on its own colour in the crop (geometry of image == keypoints, RGB order)
    vis = rec.visible[0] > 0
    for k in np.flatnonzero(vis):
        u, v = np.round(ref_kp[k]).astype(int)
        if 2 <= u < 254 and 2 <= v < 254:
            assert np.abs(crop[v, u].astype(int) - _colour(k)).max() <= 30, (k, crop[v, u], _colour(k))
    # targets: MSRA Gaussians (sigma 3) at the transformed keypoints, weight 0 for v = 0
    mu = np.trunc(ref_kp / 4.0 + 0.5)
    tw = out['target_weight'].numpy()[:, 0]
    assert tw[3] == 0 and out['target'][3].abs().sum() == 0
    for k in np.flatnonzero(tw):
        t = out['target'][k].numpy()
        y, x = np.unravel_index(np.argmax(t), t.shape)
        assert (x, y) == tuple(mu[k].astype(int)) and t[y, x] == 1.0
    assert out['target'].shape == (K, 64, 64) and out['target'].dtype == torch.float32
    # deterministic per (seed, epoch, index); a new epoch draws again
    s1, s2 = ds[0], ds[0]
    assert torch.equal(s1['img'], s2['img']) and torch.equal(s1['target'], s2['target'])
    assert set(s1) == {'img', 'target', 'target_weight'}
    ds.set_epoch(1)
    assert not torch.equal(ds[0]['img'], s1['img'])


def test_pipeline_parsing():
    aug = TopDownAugmentation.from_pipeline([dict(type='TopDownRandomFlip', flip_prob=0.3),
                                             dict(type='TopDownGenerateTarget', sigma=2, unbiased_encoding=True)],
                                            image_size=(128, 160))
    assert aug.flip_prob == 0.3 and aug.scale_factor == 0 and aug.rot_factor == 0
    assert aug.codec.sigma == 2 and aug.codec.unbiased_encoding and aug.heatmap_size == (32, 40)
    with pytest.raises(ValueError, match="'Albumentation'.*not supported"):
        TopDownAugmentation.from_pipeline([dict(type='Albumentation', transforms=[])])
    shift = TopDownAugmentation.from_pipeline([dict(type='TopDownRandomShiftBboxCenter')])
    assert (shift.shift_factor, shift.shift_prob) == (0.16, 0.3)  # mmpose 0.x defaults
    photo = TopDownAugmentation.from_pipeline([dict(type='PhotometricDistortion', hue_delta=10)])
    assert photo.photometric == {'brightness_delta': 32.0, 'contrast_range': (0.5, 1.5),
                                 'saturation_range': (0.5, 1.5), 'hue_delta': 10.0}
    with pytest.raises(ValueError, match='no parameter.*hue_range'):
        TopDownAugmentation.from_pipeline([dict(type='PhotometricDistortion', hue_range=3)])
    with pytest.raises(ValueError, match='contrast_range must be'):
        TopDownAugmentation.from_pipeline([dict(type='PhotometricDistortion', contrast_range=(1.5, 0.5))])
    with pytest.raises(ValueError, match='shift_factor >= 0'):
        TopDownAugmentation.from_pipeline([dict(type='TopDownRandomShiftBboxCenter', prob=2)])
    with pytest.raises(ValueError, match='use_udp'):
        TopDownAugmentation.from_pipeline([dict(type='TopDownAffine', use_udp=True)])


def _sample_inputs(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
    joints = rng.uniform(60, 140, (K, 2))
    center, scale = box_to_center_scale([60, 50, 90, 100], 'xywh', (128, 128))
    return img, joints, np.ones(K, np.float32), center, scale


def test_box_shift_moves_the_crop_by_the_drawn_offset():
    img, joints, vis, center, scale = _sample_inputs()
    base = dict(image_size=(128, 128), flip_prob=0.5, scale_factor=0.25, rot_factor=30, sigma=2)
    plain = TopDownAugmentation(**base)
    shifted = TopDownAugmentation(**base, shift_factor=0.16, shift_prob=1.0)
    for seed in range(5):
        a = plain(img, joints, vis, center, scale, np.random.default_rng(seed))
        b = shifted(img, joints, vis, center, scale, np.random.default_rng(seed))
        # the flip/scale/rotation draws come first and are unchanged by the new step
        assert (a['flip'], a['scale_factor'], a['rotation']) == (b['flip'], b['scale_factor'], b['rotation'])
        rng = np.random.default_rng(seed)
        rng.random((1, 4)), rng.standard_normal((1, 2))
        u = rng.random(3)
        offset = (u[1:] * 2 - 1) * 0.16 * np.asarray(scale) * 200
        assert np.all(np.abs(offset) <= 0.16 * np.asarray(scale) * 200) and np.abs(offset).max() > 1
        # the shifted sample is the plain sample of the shifted box
        c2 = (np.asarray(center, np.float32) + offset.astype(np.float32))
        ref = plain.crop_matrix(img.shape[1], c2, scale, b['flip'], b['scale_factor'], b['rotation'])
        crop = cv2.warpAffine(img, ref, (128, 128), flags=cv2.INTER_LINEAR)
        torch.testing.assert_close(b['img'], plain.normalize(crop), rtol=0, atol=1e-6)
        kp = (joints @ ref[:, :2].T + ref[:, 2]).astype(np.float32)
        target, _ = plain.codec.encode(kp, vis)
        assert torch.equal(b['target'], torch.from_numpy(target))
        assert not torch.equal(a['target'], b['target'])


def test_photometric_distortion_changes_colours_only():
    img, joints, vis, center, scale = _sample_inputs(1)
    base = dict(image_size=(128, 128), flip_prob=0.5, scale_factor=0.25, rot_factor=30, sigma=2)
    plain = TopDownAugmentation(**base)
    identity = TopDownAugmentation(**base, photometric=dict(brightness_delta=0, contrast_range=(1, 1),
                                                            saturation_range=(1, 1), hue_delta=0))
    bright = TopDownAugmentation(**base, photometric=dict(brightness_delta=40, contrast_range=(1, 1),
                                                          saturation_range=(1, 1), hue_delta=0))
    full = TopDownAugmentation(**base, photometric={})
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    offsets, changed = [], 0
    for seed in range(12):
        a = plain(img, joints, vis, center, scale, np.random.default_rng(seed))
        for aug in (identity, bright, full):
            b = aug(img, joints, vis, center, scale, np.random.default_rng(seed))
            assert torch.equal(a['target'], b['target']) and torch.equal(a['target_weight'], b['target_weight'])
        # neutral settings: the same pixels (up to the float HSV round trip)
        b = identity(img, joints, vis, center, scale, np.random.default_rng(seed))
        torch.testing.assert_close(b['img'], a['img'], rtol=0, atol=1e-4)
        # brightness only: one constant offset in [-40, 40] grey levels wherever nothing clipped
        b = bright(img, joints, vis, center, scale, np.random.default_rng(seed))
        d = ((b['img'] - a['img']) * std * 255).numpy()
        x = (a['img'] * std + torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)).numpy() * 255
        inside = (x > 45) & (x < 210)
        assert np.ptp(d[inside]) < 1e-2 and abs(d[inside].mean()) <= 40 + 1e-3
        offsets.append(d[inside].mean())
        changed += not torch.allclose(full(img, joints, vis, center, scale, np.random.default_rng(seed))['img'],
                                      a['img'], atol=1e-3)
    offsets = np.asarray(offsets)
    assert 3 <= np.sum(np.abs(offsets) > 0.5) <= 10  # applied with probability 0.5
    assert changed >= 10  # four independent changes at p = 0.5: all skipped in 1/16 of the draws


# ------------------------------------------------------------- green background and occlusion steps
def _green_scene(seed=0):
    """A saturated-green image with a skin-coloured 'hand' rectangle and keypoints inside it."""
    rng = np.random.default_rng(seed)
    img = np.empty((180, 240, 3), np.uint8)
    img[:] = (30, 200, 40)  # RGB green screen (OpenCV hue 62, saturation 217)
    img[50:150, 60:150] = (220, 170, 140)  # skin (hue 11)
    joints = rng.uniform(70, 140, (K, 2))
    center, scale = box_to_center_scale([60, 50, 90, 100], 'xywh', (128, 128))
    return img, joints, np.ones(K, np.float32), center, scale


def _crop_uint8(t):
    return _denormalize(t).astype(int)


def test_green_background_replaces_green_only_and_keeps_targets_and_draws():
    img, joints, vis, center, scale = _green_scene()
    base = dict(image_size=(128, 128), flip_prob=0.5, scale_factor=0.25, rot_factor=30, sigma=2,
                shift_factor=0.16, shift_prob=0.5, photometric={})
    plain = TopDownAugmentation(**base)
    keyed = TopDownAugmentation(**base, green_background_prob=1.0)
    blue = np.zeros((40, 50, 3), np.uint8)
    blue[:] = (20, 40, 230)
    neutral = dict(photometric=dict(brightness_delta=0, contrast_range=(1, 1), saturation_range=(1, 1),
                                    hue_delta=0))
    keyed_only = TopDownAugmentation(**{**base, **neutral}, green_background_prob=1.0)
    plain_only = TopDownAugmentation(**{**base, **neutral})
    for seed in range(4):
        a = plain(img, joints, vis, center, scale, np.random.default_rng(seed))
        b = keyed(img, joints, vis, center, scale, np.random.default_rng(seed), donor=lambda rng: blue)
        # geometry and the earlier draws (flip, scale, rotation, shift) are those of the plain pipeline
        assert (a['flip'], a['scale_factor'], a['rotation']) == (b['flip'], b['scale_factor'], b['rotation'])
        assert torch.equal(a['target'], b['target']) and torch.equal(a['target_weight'], b['target_weight'])
        # without colour changes: green -> the donor's blue, skin and black border untouched
        pa = _crop_uint8(plain_only(img, joints, vis, center, scale, np.random.default_rng(seed))['img'])
        pb = _crop_uint8(keyed_only(img, joints, vis, center, scale, np.random.default_rng(seed),
                                    donor=lambda rng: blue)['img'])
        green = (np.abs(pa - (30, 200, 40)).max(-1) <= 2)
        skin = (np.abs(pa - (220, 170, 140)).max(-1) <= 2)
        black = pa.max(-1) <= 2
        core = lambda m: cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # noqa: E731
        assert green.mean() > 0.1 and skin.mean() > 0.1
        assert np.abs(pb[core(green)] - (20, 40, 230)).max() <= 2
        assert np.abs(pb[core(skin)] - pa[core(skin)]).max() == 0
        assert np.array_equal(pb[core(black)], pa[core(black)])  # the warp's border (if any) stays black
    # an image without green is left as it is
    grey = np.full_like(img, 128)
    a = plain_only(grey, joints, vis, center, scale, np.random.default_rng(0))
    b = keyed_only(grey, joints, vis, center, scale, np.random.default_rng(0), donor=lambda rng: blue)
    assert torch.equal(a['img'], b['img'])


def test_occlusion_pastes_donor_rectangles_over_the_middle_of_the_crop():
    img, joints, vis, center, scale = _green_scene(1)
    img[:] = (128, 128, 128)
    base = dict(image_size=(128, 128), flip_prob=0.0, scale_factor=0.0, rot_factor=0, sigma=2)
    plain = TopDownAugmentation(**base)
    occ = TopDownAugmentation(**base, occlusion=dict(prob=1.0, max_patches=2, size_range=(0.15, 0.4)))
    red = np.zeros((10, 10, 3), np.uint8)
    red[:] = (250, 0, 0)
    counts = set()
    for seed in range(20):
        a = plain(img, joints, vis, center, scale, np.random.default_rng(seed))
        b = occ(img, joints, vis, center, scale, np.random.default_rng(seed), donor=lambda rng: red)
        assert torch.equal(a['target'], b['target'])  # occluded joints keep their labels
        crop = _crop_uint8(b['img'])
        mask = np.abs(crop - (250, 0, 0)).max(-1) <= 2
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
        assert mask.any() and (crop[~mask] == 128).all()
        # each rectangle: sides within 15-40 % of 128 px (clipped at the border: smaller), centre in the middle 80 %
        ys, xs = np.nonzero(mask)
        assert 0.15 * 128 - 1 <= max(np.ptp(xs), np.ptp(ys)) + 1
        assert mask.mean() <= 2 * 0.4 ** 2 + 1e-6
        assert (centroids[1:] >= 0.1 * 128 - 0.4 * 64).all() and (centroids[1:] <= 0.9 * 128 + 0.4 * 64).all()
        counts.add(n - 1)
    assert 1 in counts and 2 in counts or max(counts) == 2  # one or two patches (they may touch and merge)
    # prob 0: nothing pasted, and the same draws as a pipeline without the step
    off = TopDownAugmentation(**base, occlusion=dict(prob=0.0))
    for seed in range(3):
        a = plain(img, joints, vis, center, scale, np.random.default_rng(seed))
        b = off(img, joints, vis, center, scale, np.random.default_rng(seed), donor=lambda rng: red)
        assert torch.equal(a['img'], b['img'])


def test_dataset_donor_regions_hold_no_hand_and_are_deterministic(tmp_path):
    root, ann = make_dataset(tmp_path / 'ds', n=3, width=400, height=300)
    pipeline = [dict(type='TopDownRandomOcclusion', prob=1.0), dict(type='TopDownRandomGreenBackground')]
    ds = CocoWholeBodyHandDataset(str(ann), str(root / 'images'), pipeline=pipeline)
    assert ds.augment.occlusion == {'prob': 1.0, 'max_patches': 2, 'size_range': (0.15, 0.4)}
    assert ds.augment.green_background_prob == 0.5
    got = 0
    for seed in range(10):
        r1 = ds.donor_region(np.random.default_rng(seed))
        r2 = ds.donor_region(np.random.default_rng(seed))
        if r1 is None:
            assert r2 is None
            continue
        got += 1
        assert np.array_equal(r1, r2) and r1.dtype == np.uint8 and r1.shape[0] == r1.shape[1] >= 75
        # the synthetic images are black except the painted keypoints (all inside the hand box)
        assert r1.max() == 0
    assert got >= 5
    # images that are all hand give no donor: None, and the sample is still produced
    root2, ann2 = make_dataset(tmp_path / 'small', n=2, width=60, height=60)
    small = CocoWholeBodyHandDataset(str(ann2), str(root2 / 'images'), pipeline=pipeline)
    assert small.donor_region(np.random.default_rng(0)) is None
    assert small[0]['img'].shape == (3, 256, 256)
    with pytest.raises(ValueError, match='TopDownRandomOcclusion needs'):
        TopDownAugmentation.from_pipeline([dict(type='TopDownRandomOcclusion', size_range=(0.5, 0.2))])
    with pytest.raises(ValueError, match='no parameter.*colour'):
        TopDownAugmentation.from_pipeline([dict(type='TopDownRandomOcclusion', colour=3)])
    with pytest.raises(ValueError, match='no parameter.*hue'):
        TopDownAugmentation.from_pipeline([dict(type='TopDownRandomGreenBackground', hue=3)])


def test_view_homography_foreshortens_like_a_turned_plane():
    aug = TopDownAugmentation(image_size=(128, 128), perspective_prob=1.0)
    np.testing.assert_allclose(aug.view_homography(0.0, 0.0), np.eye(3), atol=1e-9)
    corners = np.array([[0.0, 0.0], [127.0, 0.0], [127.0, 127.0], [0.0, 127.0]])

    def project(hm):
        q = np.c_[corners, np.ones(4)] @ hm.T
        return q[:, :2] / q[:, 2:]

    # yaw 40: the plane's right half comes towards the camera (that edge grows), the left goes away;
    # exact pinhole values: an edge at x = +-63.5 from the centre moves to depth f -+ 63.5 sin(40)
    q = project(aug.view_homography(40.0, 0.0))
    left, right = q[3, 1] - q[0, 1], q[2, 1] - q[1, 1]
    f, half = 128.0, 63.5
    np.testing.assert_allclose(right, 127.0 * f / (f - half * np.sin(np.deg2rad(40))), rtol=1e-5)
    np.testing.assert_allclose(left, 127.0 * f / (f + half * np.sin(np.deg2rad(40))), rtol=1e-5)
    # pitch: the same about the horizontal axis, the sign choosing which edge comes closer
    q = project(aug.view_homography(0.0, 40.0))
    top, bottom = q[1, 0] - q[0, 0], q[2, 0] - q[3, 0]
    np.testing.assert_allclose([top, bottom], 127.0 * f / (f + np.array([-1, 1]) * half * np.sin(np.deg2rad(40))),
                               rtol=1e-5)
    # the centre stays where it is
    c = np.array([63.5, 63.5, 1.0]) @ aug.view_homography(35.0, -20.0).T
    np.testing.assert_allclose(c[:2] / c[2], [63.5, 63.5], atol=1e-4)


def test_perspective_step_moves_pixels_and_labels_together():
    """A bright dot at each keypoint lands, after the viewpoint change, where its label says: the
    dot's intensity centroid in the crop is the target's sub-pixel peak, within 0.35 px."""
    base = dict(image_size=(128, 128), heatmap_size=(128, 128), flip_prob=0.5, scale_factor=0.2, rot_factor=30,
                sigma=1.5, unbiased_encoding=True)
    aug = TopDownAugmentation(**base, perspective_prob=1.0, perspective_max_angle=60)
    plain = TopDownAugmentation(**base)
    center, scale = np.array([200.0, 150.0], np.float32), np.array([0.6, 0.6], np.float32)
    checked = moved = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        pt = rng.uniform([170, 125], [230, 175])
        img = np.zeros((300, 400, 3), np.uint8)
        cv2.circle(img, (int(round(pt[0] * 16)), int(round(pt[1] * 16))), 3 * 16, (255, 255, 255), -1,
                   lineType=cv2.LINE_AA, shift=4)
        joints = np.repeat(pt[None], K, 0)
        out = aug(img, joints, np.ones(K, np.float32), center, scale, np.random.default_rng(seed))
        ref = plain(img, joints, np.ones(K, np.float32), center, scale, np.random.default_rng(seed))
        crop = _crop_uint8(out['img'])[..., 0].astype(np.float64)
        crop[crop < 8] = 0
        if out['target_weight'][0, 0] == 0 or crop.sum() == 0:
            continue
        ys, xs = np.mgrid[:128, :128]
        centroid = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
        coords, _ = aug.codec.decode_to_input(out['target'].numpy()[None, :1])
        assert np.abs(coords[0, 0] - centroid).max() < 0.35, (seed, coords[0, 0], centroid)
        coords_ref, _ = plain.codec.decode_to_input(ref['target'].numpy()[None, :1])
        moved += np.abs(coords[0, 0] - coords_ref[0, 0]).max() > 2.0
        checked += 1
    assert checked >= 8 and moved >= checked // 2  # the step does change the geometry


def test_perspective_step_off_or_not_drawn_leaves_samples_unchanged():
    img, joints, vis, center, scale = _sample_inputs(2)
    base = dict(image_size=(128, 128), flip_prob=0.5, scale_factor=0.25, rot_factor=30, sigma=2,
                shift_factor=0.16, shift_prob=0.5)
    plain = TopDownAugmentation(**base)
    never = TopDownAugmentation(**base, perspective_prob=0.0)
    for seed in range(4):
        a = plain(img, joints, vis, center, scale, np.random.default_rng(seed))
        b = never(img, joints, vis, center, scale, np.random.default_rng(seed))
        assert torch.equal(a['img'], b['img']) and torch.equal(a['target'], b['target'])
    view = TopDownAugmentation(**base, perspective_prob=0.5)
    drawn = 0
    for seed in range(12):
        a = plain(img, joints, vis, center, scale, np.random.default_rng(seed))
        b = view(img, joints, vis, center, scale, np.random.default_rng(seed))
        assert (a['flip'], a['scale_factor'], a['rotation']) == (b['flip'], b['scale_factor'], b['rotation'])
        rng = np.random.default_rng(seed)
        rng.random((1, 4)), rng.standard_normal((1, 2)), rng.random(3)
        if rng.random() < 0.5:
            drawn += 1
            assert not torch.equal(a['target'], b['target'])
        else:  # not drawn: the crop of the plain affine warp
            assert torch.equal(a['img'], b['img']) and torch.equal(a['target'], b['target'])
    assert 0 < drawn < 12
    parsed = TopDownAugmentation.from_pipeline([dict(type='TopDownRandomPerspective', prob=0.3, max_angle=40)])
    assert (parsed.perspective_prob, parsed.perspective_max_angle) == (0.3, 40.0)
    assert TopDownAugmentation.from_pipeline([dict(type='TopDownRandomPerspective')]).perspective_prob == 0.5
    with pytest.raises(ValueError, match='TopDownRandomPerspective needs'):
        TopDownAugmentation.from_pipeline([dict(type='TopDownRandomPerspective', max_angle=90)])
    with pytest.raises(ValueError, match='no parameter.*angle'):
        TopDownAugmentation.from_pipeline([dict(type='TopDownRandomPerspective', angle=30)])


def _wall_scene():
    """A white wall (low chroma) with a skin-coloured palm, a white hole enclosed by skin, and a 'finger'
    (keypoints 19-20) that lies over the wall; identity crop geometry."""
    img = np.empty((160, 160, 3), np.uint8)
    img[:] = (232, 230, 226)  # off-white wall: CIELAB chroma ~3, lightness ~233
    img[40:120, 40:100] = (220, 170, 140)  # skin: chroma ~30
    img[76:84, 66:74] = (232, 230, 226)  # a white hole inside the skin, not connected to the border
    palm = np.array([(70, 115), (45, 100), (50, 45), (65, 45), (80, 45), (95, 45)], np.float64)
    joints = np.repeat(palm, [1, 4, 4, 4, 4, 4], axis=0)[:K].astype(np.float32)
    joints[1:5] = np.linspace((45, 100), (42, 60), 4)
    for finger, (x, y) in enumerate(palm[2:]):
        joints[5 + 4 * finger:9 + 4 * finger] = np.linspace((x, y), (x, 42), 4)
    joints[19], joints[20] = (120, 60), (140, 60)  # little finger's last bone over the wall
    center, scale = box_to_center_scale([0, 0, 160, 160], 'xywh', (128, 128), padding=1.0)
    return img, joints, np.ones(K, np.float32), center, scale


def test_plain_background_replaces_the_wall_but_not_the_hand_or_enclosed_holes():
    img, joints, vis, center, scale = _wall_scene()
    neutral = dict(brightness_delta=0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
    base = dict(image_size=(160, 160), flip_prob=0.0, scale_factor=0.0, rot_factor=0, sigma=2, photometric=neutral)
    off = TopDownAugmentation(**base)
    on = TopDownAugmentation(**base, plain_background_prob=1.0)
    blue = np.zeros((30, 30, 3), np.uint8)
    blue[:] = (20, 40, 230)
    a = off(img, joints, vis, center, scale, np.random.default_rng(0))
    b = on(img, joints, vis, center, scale, np.random.default_rng(0), donor=lambda rng: blue)
    assert torch.equal(a['target'], b['target']) and torch.equal(a['target_weight'], b['target_weight'])
    pa, pb = _crop_uint8(a['img']), _crop_uint8(b['img'])
    assert np.abs(pa - img).max() <= 1  # identity crop
    is_blue = np.abs(pb - (20, 40, 230)).max(-1) <= 2
    assert is_blue[5:35, 5:155].all() and is_blue[125:155, 5:155].all()  # the wall far from the hand
    assert np.array_equal(pb[45:115, 45:95], pa[45:115, 45:95])  # skin
    assert np.array_equal(pb[77:83, 67:73], pa[77:83, 67:73])  # enclosed white hole stays
    assert not is_blue[58:63, 118:142].any()  # wall under the bone 19-20 is the hand's, stays
    assert is_blue[75:80, 118:142].all()  # ...but not far below it
    # the draw comes after every other one: targets and earlier draws as without the step
    full = dict(image_size=(128, 128), flip_prob=0.5, scale_factor=0.25, rot_factor=30, sigma=2,
                shift_factor=0.16, shift_prob=0.5, photometric={}, occlusion={'prob': 0.5})
    steps = {p: TopDownAugmentation(**full, plain_background_prob=p) for p in (0.0, 1.0)}
    for seed in range(3):
        a = TopDownAugmentation(**full)(img, joints, vis, center, scale, np.random.default_rng(seed),
                                        donor=lambda rng: blue)
        b, c = (steps[p](img, joints, vis, center, scale, np.random.default_rng(seed), donor=lambda rng: blue)
                for p in (0.0, 1.0))
        assert torch.equal(a['img'], b['img']) and torch.equal(a['target'], c['target'])
        assert (a['flip'], a['rotation']) == (c['flip'], c['rotation']) and not torch.equal(a['img'], c['img'])
    # a rotated crop: the wall is reached through the black border, which itself stays black
    rot = TopDownAugmentation(**{**base, 'rot_factor': 45, 'rot_prob': 1.0}, plain_background_prob=1.0)
    off_rot = TopDownAugmentation(**{**base, 'rot_factor': 45, 'rot_prob': 1.0})
    for seed in range(6):
        a = _crop_uint8(off_rot(img, joints, vis, center, scale, np.random.default_rng(seed))['img'])
        if a.max(-1).min() > 2:
            continue  # this draw has no black border
        b = _crop_uint8(rot(img, joints, vis, center, scale, np.random.default_rng(seed),
                            donor=lambda rng: blue)['img'])
        black = cv2.erode((a.max(-1) <= 2).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert np.array_equal(b[black], a[black])
        wall = cv2.erode((np.abs(a - (232, 230, 226)).max(-1) <= 3).astype(np.uint8), np.ones((5, 5), np.uint8))
        assert (np.abs(b - (20, 40, 230)).max(-1) <= 2)[wall.astype(bool)].mean() > 0.8
        break
    else:
        raise AssertionError('no rotated draw with a black border')
    parsed = TopDownAugmentation.from_pipeline([dict(type='TopDownRandomPlainBackground', prob=0.2)])
    assert parsed.plain_background_prob == 0.2
    default = TopDownAugmentation.from_pipeline([dict(type='TopDownRandomPlainBackground')])
    assert default.plain_background_prob == 0.5
    with pytest.raises(ValueError, match='TopDownRandomPlainBackground needs'):
        TopDownAugmentation(plain_background_prob=1.5)
    with pytest.raises(ValueError, match='no parameter.*chroma'):
        TopDownAugmentation.from_pipeline([dict(type='TopDownRandomPlainBackground', chroma=5)])
    with pytest.raises(ValueError, match='needs the 21 finite hand keypoints'):
        TopDownAugmentation.plain_mask(np.zeros((8, 8, 3), np.uint8), np.zeros((17, 2), np.float32))


def test_plain_background_ignores_unannotated_keypoints():
    """COCO-WholeBody marks unannotated hand keypoints v = 0 at (0, 0): they must not be drawn into the
    hand the plain-background step protects (bones to them crossed the crop and their spread made the
    bones thick enough to cover it, so the step replaced almost nothing)."""
    crop = np.full((64, 64, 3), 235, np.uint8)  # a white wall everywhere
    kp = np.zeros((21, 2), np.float32)
    kp[:, 0] = 8 + (np.arange(21) % 5) * 3.0  # a small hand in the top-left corner
    kp[:, 1] = 8 + (np.arange(21) // 5) * 3.0
    labelled = np.ones(21, bool)
    labelled[13:] = False  # ring and little finger unannotated: (0, 0) in the image, here (60, 60) in the crop
    kp[13:] = 60.0
    old = TopDownAugmentation.plain_mask(crop, kp)  # every point drawn: a thick bone to (60, 60)
    new = TopDownAugmentation.plain_mask(crop, kp, labelled)
    assert old[40, 40] < 0.5 and new[40, 40] == 1.0  # on the diagonal: protected only by the bogus bones
    assert new[10, 10] == 0.0 and new.mean() > 0.85 > old.mean()  # the real hand stays; the wall goes
    assert not TopDownAugmentation.plain_mask(crop, kp, np.eye(21, dtype=bool)[0]).any()  # 1 point: no hand
    # through the augmentation: v = 0 at (0, 0) counts as unannotated, v = 0 elsewhere is a real position
    aug = TopDownAugmentation(image_size=(64, 64), heatmap_size=(16, 16), plain_background_prob=1.0,
                              flip_prob=0.0, rot_prob=0.0, scale_factor=0.0)
    seen = {}
    aug.plain_mask = lambda c, k, lab=None: seen.update(labelled=lab) or np.zeros(c.shape[:2], np.float32)
    joints = np.c_[np.linspace(20, 40, 21), np.linspace(20, 40, 21)].astype(np.float32)
    vis = np.ones(21, np.float32)
    joints[18:] = 0.0
    vis[18:] = 0.0
    vis[2] = 0.0  # outside the image in open_hands' convention: a real position
    aug(np.full((64, 64, 3), 200, np.uint8), joints, vis, np.array([30, 30], np.float32),
        np.array([0.2, 0.2], np.float32), np.random.default_rng(0), donor=lambda rng: crop)
    assert seen['labelled'].tolist() == [True] * 18 + [False] * 3


def test_train_small_pipelines_parse_to_the_documented_settings():
    import importlib.util
    spec = importlib.util.spec_from_file_location('train_small', Path(__file__).parent.parent / 'tools' / 'train_small.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    std = TopDownAugmentation.from_pipeline(mod.train_pipeline(128, 'standard'), (128, 128))
    assert (std.rot_factor, std.scale_factor, std.photometric, std.occlusion) == (30, 0.25, None, None)
    rob = TopDownAugmentation.from_pipeline(mod.train_pipeline(128, 'robust'), (128, 128))
    assert (rob.rot_factor, rob.rot_prob, rob.scale_factor, rob.shift_factor) == (90, 0.6, 0.3, 0.16)
    assert rob.green_background_prob == 0.5 and rob.occlusion == {'prob': 0.4, 'max_patches': 2,
                                                                   'size_range': (0.15, 0.4)}
    assert rob.photometric['hue_delta'] == 10 and rob.codec.sigma == 2 and rob.perspective_prob == 0
    view = TopDownAugmentation.from_pipeline(mod.train_pipeline(128, 'viewpoint'), (128, 128))
    assert (view.perspective_prob, view.perspective_max_angle) == (0.5, 50.0)
    assert repr(view).replace('perspective_prob=0.5, perspective_max_angle=50.0',
                              'perspective_prob=0.0, perspective_max_angle=45.0') == repr(rob)
    clutter = TopDownAugmentation.from_pipeline(mod.train_pipeline(128, 'clutter'), (128, 128))
    assert clutter.plain_background_prob == 0.5 and rob.plain_background_prob == 0
    assert repr(clutter).replace('plain_background_prob=0.5', 'plain_background_prob=0.0') == repr(rob)
    with pytest.raises(ValueError, match="'standard', 'strong', 'robust', 'viewpoint' or 'clutter'"):
        mod.train_pipeline(128, 'wild')
