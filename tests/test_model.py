"""HRNet-w18 model: key layout of the published checkpoint and heatmap parity with EasyCV."""
import json

import numpy as np
import pytest
import torch

from modelscope_handkp.checkpoint import load_checkpoint
from modelscope_handkp.models import build_hand_model, flip_back_heatmaps, hrnet_extra, hrnet_model_cfg


@pytest.fixture(scope='module')
def model(hrnet_synth_state_dict):
    m = build_hand_model()
    load_checkpoint(m, hrnet_synth_state_dict)
    return m.eval()


def test_state_dict_matches_manifest(reference_dir):
    manifest = json.loads((reference_dir / 'hrnet_w18_hand_manifest.json').read_text())
    sd = build_hand_model().state_dict()
    assert len(manifest) == 1839
    assert {k: (tuple(s), d) for k, s, d in manifest} == {
        k: (tuple(v.shape), str(v.dtype).replace('torch.', '')) for k, v in sd.items()}


def test_heatmaps_plain(model, topdown_ref):
    with torch.no_grad():
        out = model.forward_heatmaps(torch.from_numpy(topdown_ref['input_tensor'])).numpy()
    ref = topdown_ref['heatmaps_plain']
    assert out.shape == (4, 21, 64, 64)
    assert np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max()


def test_heatmaps_flip_test_one_forward(model, topdown_ref):
    x = torch.from_numpy(topdown_ref['input_tensor'])
    calls = []
    handle = model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        with torch.no_grad():
            out = model.forward_heatmaps(x, flip_test=True).numpy()
    finally:
        handle.remove()
    assert calls == [8]  # the batch and its mirror in ONE forward
    ref = topdown_ref['heatmaps_flip_avg']
    assert np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max()
    # and it is not the plain output (flip test changed something)
    assert np.abs(out - topdown_ref['heatmaps_plain']).max() > 1e-2 * np.abs(ref).max()


def test_flip_back_shift_reads_unshifted_values():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    out = flip_back_heatmaps(x, shift=True)
    flipped = x.flip(-1)
    assert torch.equal(out[..., 0], flipped[..., 0])
    assert torch.equal(out[..., 1:], flipped[..., :-1])  # no smearing of column 0
    assert torch.equal(flip_back_heatmaps(x, shift=False), flipped)


def test_narrow_config_builds_and_trains():
    cfg = hrnet_model_cfg(hrnet_extra(width=8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1), image_size=(64, 64))
    m = build_hand_model(cfg)
    x = torch.randn(2, 3, 64, 64)
    h = m(x)
    assert h.shape == (2, 21, 16, 16)
    target = torch.zeros_like(h)
    weight = torch.ones(2, 21, 1)
    loss = m.forward_train(x, target, weight)['loss']
    assert torch.allclose(loss, (h**2).mean())
    weight[:, 5:] = 0
    assert torch.allclose(m.loss(h, target, weight), (h[:, :5]**2).sum() / h.numel())


def test_unsupported_architecture_is_named():
    cfg = hrnet_model_cfg()
    cfg['backbone']['type'] = 'ResNet'
    with pytest.raises(ValueError, match="'ResNet'"):
        build_hand_model(cfg)


def _tiny_model():
    torch.manual_seed(0)
    m = build_hand_model(hrnet_model_cfg(hrnet_extra(width=8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1),
                                         image_size=(64, 64)))
    with torch.no_grad():  # non-trivial BN statistics, so folding changes every weight
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return m.eval()


def test_fold_batchnorm_keeps_dtype_and_device():
    """Folded convs were made as CPU float32: a float64 (or CUDA / half) model failed after folding with
    'Input type (double) and bias type (float) should be the same'."""
    from modelscope_handkp.models.fuse import fold_batchnorm, fold_conv_bn
    m = _tiny_model().double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    folded = fold_batchnorm(m)
    assert folded.num_folded_bn > 0 and not m.training and not folded.training
    with torch.no_grad():
        ref, out = m(x), folded(x)
    assert out.dtype == torch.float64
    assert (out - ref).abs().max().item() <= 1e-9 * max(1.0, ref.abs().max().item())
    conv = torch.nn.Conv2d(3, 4, 3, bias=False, device='meta', dtype=torch.float16)
    bn = torch.nn.BatchNorm2d(4, device='meta', dtype=torch.float16)
    fused = fold_conv_bn(conv, bn)
    assert fused.weight.device.type == 'meta' and fused.weight.dtype == torch.float16
    assert fused.bias.device.type == 'meta' and fused.bias.dtype == torch.float16


def test_crop_and_heatmap_sizes_are_checked_when_the_model_is_built():
    """A crop side that is not a multiple of 32 failed deep inside the HRNet fuse layers at the first
    forward ('size of tensor a (13) must match ...'); a heatmap_size other than a quarter of the crop
    gave wrong-sized training targets.  Both are refused when the model is built, saying what to set."""
    from modelscope_handkp.models import build_hand_model, hrnet_extra, hrnet_model_cfg
    extra = hrnet_extra(8, blocks=1, modules=(1, 1, 1, 1), stem_blocks=1)
    with pytest.raises(ValueError, match=r'image_size \[200, 200\].*positive multiple of 32'):
        build_hand_model(hrnet_model_cfg(extra, image_size=(200, 200)))
    cfg = hrnet_model_cfg(extra, image_size=(128, 128))
    cfg['heatmap_size'] = [64, 64]
    with pytest.raises(ValueError, match=r'heatmap_size \[64, 64\].*quarter of the crop, \[32, 32\]'):
        build_hand_model(cfg)
    net = build_hand_model(hrnet_model_cfg(extra, image_size=(96, 160))).eval()  # non-square is fine
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 160, 96)).shape == (1, 21, 40, 24)
