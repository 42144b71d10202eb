"""Crop geometry: center/scale, affine crops equal to the original's input tensors, way back."""
import cv2
import numpy as np
import pytest

from modelscope_handkp import transforms as T


def test_center_scale_from_gt_boxes(topdown_ref):
    c, s = T.box_to_center_scale(topdown_ref['boxes_xywh'], 'xywh')
    assert np.array_equal(c, topdown_ref['centers'])
    assert np.array_equal(s, topdown_ref['scales'])


def test_xyxy_equals_xywh():
    c1, s1 = T.box_to_center_scale([10, 20, 110, 70], 'xyxy')
    c2, s2 = T.box_to_center_scale([10, 20, 100, 50], 'xywh')
    assert np.array_equal(c1, c2) and np.array_equal(s1, s2)
    assert c1.tolist() == [60.0, 45.0]
    assert s1 == pytest.approx([100 / 200 * 1.25] * 2)  # made square, padded
    _, s3 = T.box_to_center_scale([0, 0, 100, 50], 'xywh', image_size=(192, 256))
    assert s3 == pytest.approx([100 / 200 * 1.25, 100 * 256 / 192 / 200 * 1.25])


def test_crop_to_tensor_matches_reference(shared_dir, topdown_ref):
    for i, f in enumerate(topdown_ref['image_files']):
        img = cv2.imread(str(shared_dir / f))[:, :, ::-1]
        t = T.crop_to_tensor(img, topdown_ref['centers'][i:i + 1], topdown_ref['scales'][i:i + 1])
        assert t.dtype.is_floating_point and tuple(t.shape) == (1, 3, 256, 256)
        assert np.abs(t.numpy() - topdown_ref['input_tensor'][i:i + 1]).max() <= 1e-4, f


def test_affine_matches_opencv_three_point_solution():
    c, s = np.array([123.4, 77.7], np.float32), np.array([0.9, 0.9], np.float32)
    for rot in (0.0, 30.0, -75.0):
        m = T.get_affine_matrix(c, s, rot, (256, 256))
        r = np.deg2rad(rot)
        w = s[0] * 200
        src_dir = np.array([w / 2 * np.sin(r), -w / 2 * np.cos(r)], np.float32)
        src = np.float32([c, c + src_dir, c + src_dir + [src_dir[1], -src_dir[0]]])
        dst = np.float32([[128, 128], [128, 0], [0, 0]])
        assert np.abs(m - cv2.getAffineTransform(src, dst)).max() < 1e-4
        inv = T.get_affine_matrix(c, s, rot, (256, 256), inv=True)
        back = T.transform_points(T.transform_points(np.array([[5.0, 9.0]]), m), inv)
        assert np.abs(back - [[5.0, 9.0]]).max() < 1e-6


@pytest.mark.parametrize('rot', [0.0, 25.0, -140.0])
def test_heatmap_to_image_inverts_the_crop(rot):
    rng = np.random.default_rng(3)
    centers = rng.uniform(50, 400, (3, 2)).astype(np.float32)
    scales = rng.uniform(0.3, 2.0, (3, 1)).repeat(2, 1).astype(np.float32)
    pts = rng.uniform(0, 500, (3, 21, 2))
    mats = T.get_affine_matrices(centers, scales, [rot] * 3, (64, 64))
    hm = T.transform_points(pts, mats)
    back = T.heatmap_to_image(hm, centers, scales, (64, 64), rotations=[rot] * 3)
    assert np.abs(back - pts).max() < 2e-3


def test_rotation_sign_convention():
    # a bright dot straight above the centre of an upright window ...
    img = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(img, (100, 40), 4, (255, 255, 255), -1)
    c, s = np.array([[100, 100]], np.float32), np.array([[1.0, 1.0]], np.float32)
    def centroid(a):
        ys, xs = np.nonzero(a > 127)
        return ys.mean(), xs.mean()

    up = T.warp_crops(img, c, s, [0.0], (200, 200))[0, :, :, 0]
    assert centroid(up) == pytest.approx((40, 100), abs=1)
    # ... appears on the left of the crop with rotation +90 (content turned counter-clockwise on screen)
    turned = T.warp_crops(img, c, s, [90.0], (200, 200))[0, :, :, 0]
    assert centroid(turned) == pytest.approx((100, 40), abs=1)


def test_image_kinds_are_normalised():
    gray = np.full((10, 12), 7, np.uint8)
    assert T.ensure_rgb_uint8(gray).shape == (10, 12, 3)
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert T.ensure_rgb_uint8(rgba).shape == (4, 4, 3)
    deep = np.full((4, 4, 3), 65535, np.uint16)
    assert T.ensure_rgb_uint8(deep).max() == 255
    with pytest.raises(ValueError, match='colour channels'):
        T.ensure_rgb_uint8(np.zeros((4, 4, 2), np.uint8))


def test_zero_size_or_nan_crop_is_refused_with_the_reason():
    """A zero-size box made a singular system: numpy's bare 'Singular matrix'; NaN made black crops."""
    img = np.zeros((50, 60, 3), np.uint8)
    c, s = T.box_to_center_scale([[10, 10, 40, 40], [20, 20, 20, 20]], 'xyxy')
    assert s[1].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r'crop 1: .*scale \[0\.0, 0\.0\].*must be positive'):
        T.crop_to_tensor(img, c, s)
    with pytest.raises(ValueError, match=r'crop 0: .*finite'):
        T.get_affine_matrices([[np.nan, 5.0]], [[0.5, 0.5]])
    ok = T.crop_to_tensor(img, c[:1], s[:1])
    assert tuple(ok.shape) == (1, 3, 256, 256)


def test_count_mismatches_name_what_is_wrong():
    with pytest.raises(ValueError, match='2 centers but 3 rotations'):
        T.get_affine_matrices(np.zeros((2, 2)), np.ones((2, 2)), rotations=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match='3 hands of coordinates but 2 centers'):
        T.heatmap_to_image(np.zeros((3, 21, 2)), np.zeros((2, 2)), np.ones((2, 2)))
    # one center/scale (or one rotation) for all hands still broadcasts
    out = T.heatmap_to_image(np.zeros((3, 21, 2)), [10.0, 20.0], [1.0, 1.0], (64, 64), rotations=[0.0])
    assert out.shape == (3, 21, 2) and out[:, :, 0].max() == -90.0 and out[:, :, 1].min() == -80.0


def test_float_images_of_any_precision_and_non_finite():
    half = np.full((4, 4, 3), 0.5, np.float16)  # was TypeError although floats are accepted
    assert T.ensure_rgb_uint8(half).tolist() == np.full((4, 4, 3), 128, np.uint8).tolist()
    bad = np.full((4, 4, 3), 0.5, np.float32)
    bad[1, 1, 1] = np.nan  # was silently black pixels (and a numpy cast warning)
    with pytest.raises(ValueError, match='NaN or infinite'):
        T.ensure_rgb_uint8(bad)
