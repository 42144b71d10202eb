"""DARK codec: parity with EasyCV's keypoints_from_heatmaps, encoding, round trip."""
import warnings

import numpy as np
import pytest
import torch

from modelscope_handkp.codec import HeatmapCodec, decode_heatmaps


@pytest.mark.parametrize('mode,key', [('unbiased', 'unbiased'), ('default', 'default'), (None, 'none')])
def test_decode_parity(decode_ref, mode, key):
    coords, scores = decode_heatmaps(decode_ref['heatmaps'], decode_ref['centers'], decode_ref['scales'], mode, 11)
    assert coords.dtype == np.float32 and scores.dtype == np.float32
    assert np.abs(coords - decode_ref[f'preds_{key}']).max() <= 1e-3
    assert np.abs(scores - decode_ref[f'maxvals_{key}']).max() <= 1e-6


def test_dark_beats_argmax(decode_ref):
    codec = HeatmapCodec(post_process='unbiased')
    hm = decode_ref['heatmaps']
    n = len(hm)
    true = decode_ref['true_peaks_heatmap_xy']

    def err(mode):
        c = HeatmapCodec(post_process=mode).decode_to_input(hm)[0] / 4.0  # crop px -> heatmap px
        return np.linalg.norm(c - true, axis=-1).mean()

    e_dark, e_argmax, e_default = err('unbiased'), err(None), err('default')
    assert n == 6 and codec.kernel == 11
    # measured mean errors in heatmap pixels: argmax 0.408, quarter shift 0.241, DARK 0.021
    assert e_argmax == pytest.approx(0.408, abs=0.005)
    assert e_default == pytest.approx(0.241, abs=0.005)
    assert e_dark == pytest.approx(0.021, abs=0.003)
    assert e_dark < 0.1 * e_argmax


def test_topdown_keypoints_from_flip_averaged_heatmaps(topdown_ref):
    coords, scores = decode_heatmaps(topdown_ref['heatmaps_flip_avg'], topdown_ref['centers'],
                                     topdown_ref['scales'], 'unbiased', 11)
    ref = topdown_ref['keypoints']
    assert np.abs(coords - ref[..., :2]).max() <= 1e-3
    assert np.abs(scores[..., 0] - ref[..., 2]).max() <= 1e-6


def test_decode_accepts_tensor_and_empty():
    codec = HeatmapCodec()
    hm = torch.zeros(0, 21, 64, 64)
    c, s = codec.decode(hm, np.zeros((0, 2)), np.zeros((0, 2)))
    assert c.shape == (0, 21, 2) and s.shape == (0, 21, 1)


def test_encode_matches_original_msra_target():
    codec = HeatmapCodec(sigma=3, zero_outside=False)
    kp = np.array([[100.3, 60.9], [2.0, 250.0], [-30.0, 10.0], [300.0, 300.0]], np.float32)
    target, weight = codec.encode(kp, np.array([1, 1, 1, 0]))
    assert target.shape == (4, 64, 64) and weight.shape == (4, 1)
    # keypoint 0: stride 4 -> (25.075, 15.225) -> integer centre (25, 15)
    assert target[0, 15, 25] == 1.0
    assert target[0, 15, 25 + 9] == pytest.approx(np.exp(-81 / 18), rel=1e-6)
    assert target[0, 15, 25 + 10] == 0.0  # outside the 19x19 patch
    # keypoint 2 at heatmap x=-7.5: trunc(-7.5+0.5) = -7, window reaches x=2 -> weight kept (original rule)
    assert weight[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert target[2].max() == pytest.approx(np.exp(-(7**2) / 18), rel=1e-6)  # nearest column x=0 is 7 px away
    assert target[3].max() == 0.0
    # the documented default: keypoints outside the heatmap get weight 0
    _, w2 = HeatmapCodec(sigma=3).encode(kp, np.array([1, 1, 1, 0]))
    assert w2[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_encode_batch_equals_single():
    codec = HeatmapCodec()
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 250, (3, 21, 2)).astype(np.float32)  # all centres inside the heatmap
    vis = rng.integers(0, 2, (3, 21))
    t, w = codec.encode(kp, vis)
    for i in range(3):
        ti, wi = codec.encode(kp[i], vis[i])
        assert np.array_equal(t[i], ti) and np.array_equal(w[i], wi)
    assert np.array_equal(w[..., 0], (vis > 0).astype(np.float32))


def test_fractional_visibility_is_the_weight_and_gates_the_gaussian():
    """COCO-WholeBody hand visibilities are confidences: EasyCV's target generator uses v (clipped to 1)
    as the weight and draws the Gaussian only where v > 0.5."""
    kp = np.array([[100.0, 100.0], [120.0, 90.0], [60.0, 150.0], [30.0, 40.0], [200.0, 200.0]], np.float32)
    vis = np.array([1.0, 0.041, 0.7, 2.0, 0.0], np.float32)
    for unbiased in (False, True):
        t, w = HeatmapCodec(unbiased_encoding=unbiased).encode(kp, vis)
        np.testing.assert_array_equal(w[:, 0], np.array([1.0, 0.041, 0.7, 1.0, 0.0], np.float32))
        np.testing.assert_array_equal(t.reshape(5, -1).max(axis=1) > 0.5, [True, False, True, True, False])
        assert (t[[1, 4]] == 0).all()


def test_small_heatmaps_decode_without_refinement():
    """Maps smaller than the refinement window (DARK 5x5, quarter offset 3x3) decode to the plain argmax
    instead of reading outside the map."""
    from modelscope_handkp.decode_torch import decode_heatmaps as decode_t
    for size in ((4, 4), (3, 8), (2, 2)):
        codec = HeatmapCodec(input_size=(size[0] * 4, size[1] * 4), heatmap_size=size, sigma=1.0)
        hm = np.zeros((1, 1, size[1], size[0]), np.float32)
        hm[0, 0, size[1] // 2, size[0] // 2] = 1.0
        center, scale = np.array([[50.0, 60.0]], np.float32), np.array([[0.5, 0.5]], np.float32)
        for post in ('unbiased', 'default', None):
            c = HeatmapCodec(input_size=codec.input_size, heatmap_size=size, post_process=post)
            coords, _ = c.decode(hm, center, scale)
            want, _ = HeatmapCodec(input_size=codec.input_size, heatmap_size=size, post_process=None).decode(
                hm, center, scale)
            np.testing.assert_allclose(coords, want, atol=1e-4)
        for blur in ('full', 'local'):
            ct, _ = decode_t(torch.from_numpy(hm), torch.from_numpy(center), torch.from_numpy(scale), blur=blur)
            np.testing.assert_allclose(ct.numpy(), want, atol=1e-4)


def test_unbiased_round_trip_subpixel():
    codec = HeatmapCodec(unbiased_encoding=True, post_process='unbiased', sigma=2.0)
    rng = np.random.default_rng(1)
    kp = rng.uniform(40, 216, (8, 21, 2)).astype(np.float32)
    target, weight = codec.encode(kp, np.ones((8, 21)))
    assert weight.min() == 1.0
    decoded, scores = codec.decode_to_input(target)
    err_hm = np.abs(decoded - kp).max() / 4.0
    assert err_hm < 0.002  # measured 0.00034 heatmap px (issue: < 0.05)
    # the integer-centred (MSRA) encoding cannot carry sub-pixel positions: error ~0.25+ px
    msra = HeatmapCodec(unbiased_encoding=False, sigma=2.0)
    d2, _ = msra.decode_to_input(msra.encode(kp, np.ones((8, 21)))[0])
    assert np.abs(d2 - kp).max() / 4.0 > 0.3  # measured 0.499


def _unbiased_maps(n=4, seed=3):
    codec = HeatmapCodec(unbiased_encoding=True, sigma=2.0)
    kp = np.random.default_rng(seed).uniform(40, 216, (n, 21, 2)).astype(np.float32)
    return kp, codec.encode(kp, np.ones((n, 21)))[0]


@pytest.mark.parametrize('dtype,tol', [(torch.float16, 0.005), (torch.bfloat16, 0.03)])
@pytest.mark.parametrize('blur', ['full', 'local'])
def test_decode_torch_low_precision_heatmaps_decode_in_float32(dtype, tol, blur):
    """float16/bfloat16 heatmaps (autocast, .half() models) used to be decoded in their own dtype: the
    log/Newton step lost ~0.5 px and the image coordinates (here ~1500 px) were rounded to 1 px steps."""
    from modelscope_handkp import decode_torch as D
    _, maps = _unbiased_maps()
    hm = torch.from_numpy(maps)
    centers = torch.tensor([[1500.0, 900.0]] * 4)
    scales = torch.full((4, 2), 256 / 200.0)
    ref, ref_scores = D.decode_heatmaps(hm, centers, scales, blur=blur)
    coords, scores = D.decode_heatmaps(hm.to(dtype), centers, scales, blur=blur)
    assert (coords.float() - ref).abs().max().item() <= tol  # measured 0.001 (float16), 0.0076 (bfloat16)
    assert coords.dtype == torch.float32 and scores.dtype == torch.float32
    assert (scores - ref_scores).abs().max().item() <= 4e-3


def test_numpy_decode_accepts_bfloat16_tensor():
    kp, maps = _unbiased_maps(n=2)
    codec = HeatmapCodec(input_size=(256, 256), heatmap_size=(64, 64))
    ref, _ = codec.decode_to_input(maps)
    coords, scores = codec.decode_to_input(torch.from_numpy(maps).to(torch.bfloat16))  # was TypeError
    assert coords.dtype == np.float32 and scores.dtype == np.float32
    assert np.abs(coords - ref).max() <= 0.03 and np.abs(coords - kp).max() <= 0.03
    # tensor geometry that NumPy cannot read directly (requires grad; CUDA tensors alike)
    centers = torch.full((2, 2), 128.0, requires_grad=True)
    scales = torch.full((2, 2), 1.28, dtype=torch.float64, requires_grad=True)
    coords2, _ = decode_heatmaps(maps, centers, scales, rotations=torch.zeros(2, requires_grad=True))
    assert np.abs(coords2 - ref).max() <= 1e-4


def test_decode_torch_builds_its_constants_on_the_heatmaps_device(monkeypatch):
    """CUDA heatmaps failed with 'Expected all tensors to be on the same device': index offsets, blur
    matrices, kernels and the heatmap size were made on the CPU.  The meta device shows the same."""
    from modelscope_handkp import decode_torch as D
    monkeypatch.setattr(D, '_warn_non_finite', lambda *a: None, raising=False)  # meta tensors have no values to check
    hm = torch.empty(2, 21, 64, 48, device='meta')
    centers, scales = torch.empty(2, 2, device='meta'), torch.empty(2, 2, device='meta')
    for mode in ('unbiased', 'default', None):
        coords, scores = D.decode_heatmaps(hm, centers, scales, mode, blur='full',
                                           rotations=torch.empty(2, device='meta'))
        assert coords.device.type == 'meta' and tuple(coords.shape) == (2, 21, 2)
        assert tuple(scores.shape) == (2, 21, 1)
    px = torch.empty(2, 21, dtype=torch.int64, device='meta')
    assert D._local_log_blur(hm, px, px, 11).device.type == 'meta'


def test_decode_torch_geometry_single_center_or_arrays():
    """One [2] center/scale for all hands (as the NumPy decoder takes) broadcast wrongly ([2, 1] against
    [N, K, 2]); NumPy centers raised AttributeError."""
    from modelscope_handkp import decode_torch as D
    kp, maps = _unbiased_maps(n=3)
    hm = torch.from_numpy(maps)
    one_c, one_s = torch.tensor([128.0, 128.0]), torch.tensor([1.28, 1.28])
    coords, _ = D.decode_heatmaps(hm, one_c, one_s)
    assert tuple(coords.shape) == (3, 21, 2)
    assert np.abs(coords.numpy() - kp).max() <= 0.01
    coords2, _ = D.decode_heatmaps(hm, np.tile([[128.0, 128.0]], (3, 1)), np.full((3, 2), 1.28), rotations=np.zeros(3))
    assert np.abs(coords2.numpy() - coords.numpy()).max() <= 1e-4


def test_decode_warns_on_non_finite_heatmaps():
    from modelscope_handkp import decode_torch as D
    _, maps = _unbiased_maps(n=1)
    maps = maps.copy()
    maps[0, 3, 5, 5] = np.nan  # a NaN pixel hides the real peak: score NaN, point "no peak"
    maps[0, 7, 30, 30] = np.inf  # an inf peak: NaN coordinates after DARK
    centers, scales = np.array([[128.0, 128.0]], np.float32), np.array([[1.28, 1.28]], np.float32)
    with pytest.warns(RuntimeWarning, match='2 of 21 heatmaps contain NaN or infinite'):
        coords, scores = decode_heatmaps(maps, centers, scales)
    assert np.isnan(scores[0, 3, 0]) and np.isnan(coords[0, 7]).all() and np.isfinite(coords[0, 0]).all()
    with pytest.warns(RuntimeWarning, match='2 of 21 heatmaps contain NaN or infinite'):
        D.decode_heatmaps(torch.from_numpy(maps), torch.from_numpy(centers), torch.from_numpy(scales))
    # finite maps, also degenerate ones (all zero, constant), decode silently as before
    flat = np.zeros((1, 2, 64, 64), np.float32)
    flat[0, 1] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        c, s = decode_heatmaps(flat, centers, scales)
        ct, st = D.decode_heatmaps(torch.from_numpy(flat), torch.from_numpy(centers), torch.from_numpy(scales))
    assert c.tolist() == [[[-4.0, -4.0], [0.0, 0.0]]] and s[..., 0].tolist() == [[0.0, 0.5]]
    assert np.array_equal(ct.numpy(), c)


@pytest.mark.parametrize('input_size,heatmap_size', [((256, 256), (64, 64)), ((192, 256), (48, 64)),
                                                     ((256, 192), (64, 48)), ((256, 256), (32, 64))])
@pytest.mark.parametrize('unbiased', [True, False])
def test_encode_decode_round_trip_non_square_and_rotated(input_size, heatmap_size, unbiased):
    """Encode keypoints in crop pixels, decode them back to the image through rotated crops: the
    heatmap and image conventions agree (MSRA encoding: integer heatmap positions)."""
    from modelscope_handkp import decode_torch as D
    from modelscope_handkp import transforms as T
    codec = HeatmapCodec(input_size, heatmap_size, sigma=2.0, unbiased_encoding=unbiased)
    stride = np.array(input_size, np.float32) / np.array(heatmap_size, np.float32)
    rng = np.random.default_rng(5)
    hm_size = np.array(heatmap_size)
    kp_hm = rng.uniform(6, hm_size - 7, (3, 21, 2)) if unbiased else rng.integers(6, hm_size - 7, (3, 21, 2))
    kp = (kp_hm * stride).astype(np.float32)
    target, weight = codec.encode(kp, np.ones((3, 21)))
    assert weight.min() == 1.0
    back, _ = codec.decode_to_input(target)
    assert (np.abs(back - kp) / stride).max() <= 1e-2
    centers = np.array([[300.0, 200.0]] * 3, np.float32)
    _, scales = T.box_to_center_scale(np.array([[250, 150, 100, 100]] * 3, np.float32), 'xywh', image_size=input_size)
    rotations = np.array([30.0, -90.0, 170.0], np.float32)
    truth = T.transform_points(kp, T.get_affine_matrices(centers, scales, rotations, input_size, inv=True))
    hm_px = scales[0] * 200 / hm_size  # image pixels per heatmap pixel
    coords, _ = codec.decode(target, centers, scales, rotations)
    assert (np.abs(coords - truth) / hm_px).max() <= 1e-2
    coords_t, _ = D.decode_heatmaps(torch.from_numpy(target), torch.from_numpy(centers), torch.from_numpy(scales),
                                    rotations=torch.from_numpy(rotations))
    assert (np.abs(coords_t.numpy() - truth) / hm_px).max() <= 1e-2
