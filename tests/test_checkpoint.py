"""Checkpoint layouts and loading errors."""
import pytest
import torch

from modelscope_handkp.checkpoint import CheckpointError, load_checkpoint, read_state_dict
from modelscope_handkp.models import build_hand_model, hrnet_extra, hrnet_model_cfg


def tiny_model():
    return build_hand_model(hrnet_model_cfg(hrnet_extra(8, 1, (1, 1, 1, 1), 1), image_size=(64, 64)))


@pytest.fixture()
def weights():
    torch.manual_seed(0)
    m = tiny_model()
    for p in m.parameters():
        torch.nn.init.normal_(p)
    return m.state_dict()


@pytest.mark.parametrize('layout', ['bare', 'state_dict', 'model', 'module', 'easycv'])
def test_layouts_load_exactly(tmp_path, weights, layout):
    sd = dict(weights)
    if layout == 'module':
        obj = {'module.' + k: v for k, v in sd.items()}
    elif layout == 'easycv':
        obj = {'state_dict': sd, 'meta': {'epoch': 3, 'config': 'x'}}
    elif layout == 'bare':
        obj = sd
    else:
        obj = {layout: sd}
    path = tmp_path / 'ckpt.pth'
    torch.save(obj, path)
    m = load_checkpoint(tiny_model(), path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_truncated_file(tmp_path, weights):
    path = tmp_path / 'ckpt.pth'
    torch.save(weights, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='cannot be read'):
        read_state_dict(path)


def test_empty_and_missing_file(tmp_path):
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match='empty'):
        read_state_dict(tmp_path / 'empty.pth')
    with pytest.raises(CheckpointError, match='does not exist'):
        read_state_dict(tmp_path / 'nope.pth')


def test_unsafe_pickle_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ('pwned', ))
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'a': torch.zeros(1)}, 'obj': Evil()}, path)
    with pytest.raises(CheckpointError, match='weights_only'):
        read_state_dict(path)


def test_wrong_architecture_lists_keys_and_loads_nothing(weights):
    target = build_hand_model()  # w18 vs the w8 checkpoint
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(target, weights)
    msg = str(err.value)
    assert 'wrong shape' in msg and 'backbone.transition1.0.0.weight' in msg
    assert 'missing keys' in msg
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_missing_and_unexpected_keys(weights):
    sd = dict(weights)
    sd.pop('keypoint_head.final_layer.3.bias')
    sd['foo.bar'] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r'1 missing keys: keypoint_head.final_layer.3.bias.*1 unexpected keys: foo.bar'):
        load_checkpoint(tiny_model(), sd)


def test_numpy_values_in_the_meta_are_data(tmp_path, weights):
    """mmcv / mmdet checkpoints keep numpy scalars (and arrays) in meta['hook_msgs']: they load, safely."""
    import numpy as np
    meta = {'hook_msgs': {'best_score': np.float64(0.91), 'last_epoch': np.int64(24), 'hist': np.arange(3.0)}}
    torch.save({'state_dict': weights, 'meta': meta}, tmp_path / 'mmdet.pth')
    sd = read_state_dict(tmp_path / 'mmdet.pth')
    assert sorted(sd) == sorted(weights) and all(torch.equal(sd[k], weights[k]) for k in weights)


def test_numpy_values_saved_by_numpy_1_load_under_numpy_2_and_back(tmp_path, weights):
    """Checkpoints name numpy's reconstructors by the module they had when saved: numpy.core.multiarray
    (numpy 1.x: every published mmcv / mmdet / EasyCV checkpoint) or numpy._core.multiarray (numpy 2).
    Both load, safely, whichever numpy is installed."""
    import zipfile

    import numpy as np
    meta = {'hook_msgs': {'best_score': np.float64(0.91), 'hist': np.arange(3.0)}}
    torch.save({'state_dict': weights, 'meta': meta}, tmp_path / 'now.pth')
    names = (b'numpy.core.multiarray\n', b'numpy._core.multiarray\n')  # protocol-2 GLOBAL: "module\nname\n"
    with zipfile.ZipFile(tmp_path / 'now.pth') as src:
        pkl = [n for n in src.namelist() if n.endswith('/data.pkl')][0]
        saved = src.read(pkl)
        have = [n for n in names if n in saved]
        assert len(have) == 1 and saved.count(have[0]) >= 2  # scalar and _reconstruct
        for name in names:  # the file as numpy 1.x and as numpy 2 write it
            out = tmp_path / f'{name.decode().strip()}.pth'
            with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
                for info in src.infolist():
                    data = src.read(info)
                    dst.writestr(info.filename, data.replace(have[0], name) if info.filename == pkl else data)
            sd = read_state_dict(out)
            assert sorted(sd) == sorted(weights) and all(torch.equal(sd[k], weights[k]) for k in weights), out.name


def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path):
    """A text file gave the bare message '101' (torch.load's KeyError); a Git LFS pointer or a saved error
    page got advice about weights_only=False, which would not help and is unsafe."""
    text = tmp_path / 'text.pt'
    text.write_text('hello\n')
    with pytest.raises(CheckpointError, match='cannot be read .*not a PyTorch file'):
        read_state_dict(text)
    lfs = tmp_path / 'lfs.pt'
    lfs.write_text('version https://git-lfs.github.com/spec/v1\noid sha256:' + '0' * 64 + '\nsize 5527793\n')
    with pytest.raises(CheckpointError, match='Git LFS pointer.*git lfs pull') as err:
        read_state_dict(lfs)
    assert 'weights_only' not in str(err.value)
    html = tmp_path / 'page.pt'
    html.write_text('\n<!DOCTYPE html><html><body>404</body></html>')
    with pytest.raises(CheckpointError, match='HTML.*download the file again'):
        read_state_dict(html)
