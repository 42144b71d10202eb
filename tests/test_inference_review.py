"""Defects found by reviewing the inference path as a user (pipeline, tracking, drawing, video)."""
import numpy as np
import pytest

from modelscope_handkp.tracking import HandTracker


def _hand(cx, cy, size=100.0):
    base = np.stack(np.meshgrid(np.linspace(-0.4, 0.4, 7), np.linspace(-0.4, 0.4, 3)), -1).reshape(21, 2)
    kps = np.concatenate([np.array([cx, cy]) + base * size, np.full((21, 1), 0.9)], -1)
    return kps, [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


@pytest.mark.parametrize('smoothing', [True, False])
@pytest.mark.parametrize('speed', [6.0, 10.0, 20.0])
def test_ids_do_not_swap_when_two_hands_cross_at_the_same_height(speed, smoothing):
    # two alike hands, one moving right and one moving left along the same line: they pass through each
    # other between two frames.  Matched against their last positions, each track would take the other
    # hand right after the crossing (and the smoothed keypoints, which lag, made it worse).
    tr = HandTracker(smoothing=smoothing)
    ids_a, ids_b = [], []
    for f in range(40):
        ka, ba = _hand(100 + speed * f, 300)
        kb, bb = _hand(100 + speed * 39.5 - speed * f, 300)
        flip = f % 2 == 1
        kps = np.stack([kb, ka] if flip else [ka, kb])
        boxes = np.array([bb, ba] if flip else [ba, bb])
        ids = tr.update({'keypoints': kps, 'boxes': boxes, 'scores': np.ones(2)})['track_ids'].tolist()
        ids_a.append(ids[1] if flip else ids[0])
        ids_b.append(ids[0] if flip else ids[1])
    assert set(ids_a) == {0} and set(ids_b) == {1}, (ids_a, ids_b)


def test_a_track_missed_for_frames_is_found_again_where_it_went():
    # a hand moving steadily, not detected for 3 frames, is continued (the prediction is capped at one
    # hand size, so a hand that stopped while unseen is found too)
    for v in (8.0, 0.0):
        tr = HandTracker(max_missed=5)
        for f in range(10):
            k, b = _hand(100 + v * f, 200)
            assert tr.update({'keypoints': k[None], 'boxes': np.array([b])})['track_ids'].tolist() == [0]
        for f in range(3):
            tr.update({'keypoints': np.zeros((0, 21, 3)), 'boxes': np.zeros((0, 4))})
        k, b = _hand(100 + v * 13, 200)
        assert tr.update({'keypoints': k[None], 'boxes': np.array([b])})['track_ids'].tolist() == [0]


# ----------------------------------------------------------------------------- video + pipeline colours
@pytest.fixture(scope='module')
def starter_pipe():
    import modelscope_handkp
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    return pipeline(Tasks.hand_2d_keypoints, model=modelscope_handkp.starter_model_dir())  # input_color 'bgr'


def test_process_video_with_a_default_pipeline_sees_the_right_colours(starter_pipe, data_dir, tmp_path):
    # process_video hands RGB frames to predict_fn; the pipeline's default reads arrays as BGR, so passing
    # the pipeline as documented in the README gave the results of a colour-swapped video (an extra false
    # hand and lower scores on this picture: 3 hands 0.83 / 0.54 / 0.53 instead of 2 hands 0.94 / 0.74).
    import json

    import cv2

    from modelscope_handkp.video import process_video
    img = cv2.imread(str(data_dir / 'hands' / 'panoptic' / 'ex2_2.flv_000040_l.jpg'))
    src = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*'MJPG'), 10, (img.shape[1], img.shape[0]))
    for _ in range(2):
        writer.write(img)
    writer.release()
    cap = cv2.VideoCapture(str(src))
    ok, frame_bgr = cap.read()
    cap.release()
    assert ok
    expected = starter_pipe(frame_bgr)  # the decoded frame, read the right way round
    assert len(expected['scores']) == 2
    jsonl = tmp_path / 'clip.jsonl'
    process_video(str(src), starter_pipe, str(tmp_path / 'out.avi'), jsonl_path=str(jsonl), progress=False,
                  smoothing=False)
    first = json.loads(jsonl.read_text().splitlines()[0])
    scores = [h['score'] for h in first['hands']]
    np.testing.assert_allclose(scores, expected['scores'], atol=1e-3)
    kps = np.array([h['keypoints'] for h in first['hands']])
    np.testing.assert_allclose(kps[..., :2], expected['keypoints'][..., :2], atol=0.01)
    assert starter_pipe.input_color == 'bgr'  # the pipeline itself is left as it was


# ----------------------------------------------------------------------------- palm tiles: one hand, one result
def test_tile_hands_covering_the_same_hand_are_one_hand():
    from modelscope_handkp.detection.tiling import TiledDetections, distinct_tile_hands
    # three palm hits on one 60 px hand (upright, upside down: palm boxes IoU < 0.3, hand squares 0.6+),
    # a fourth hand elsewhere, and a whole-image hand overlapping it (never dropped; the tile hand goes even
    # though it scores higher: it was reported beside the whole-image hand, one hand twice)
    boxes = [[146, 410, 206, 470], [142, 422, 202, 482], [149, 418, 209, 478], [600, 400, 660, 460],
             [590, 395, 650, 455]]
    dets = TiledDetections(boxes, [0.64, 0.57, 0.57, 0.6, 0.55], [174, -172, -16, 0, 0],
                           from_tiles=[True, True, True, True, False], min_keypoint_score=0.22)
    assert distinct_tile_hands(dets).tolist() == [0, 4]
    dets.from_tiles[:] = False
    assert distinct_tile_hands(dets).tolist() == [0, 1, 2, 3, 4]  # whole-image hands: as the detector gave


def test_small_hand_found_on_tiles_is_reported_once(starter_pipe, data_dir):
    import cv2
    img = cv2.imread(str(data_dir / 'hands' / 'onehand10k' / '33.jpg'))
    hand = cv2.resize(img, None, fx=0.25, fy=0.25)
    canvas = np.full((900, 1600, 3), 90, np.uint8)
    canvas[400:400 + hand.shape[0], 148:148 + hand.shape[1]] = hand
    out = starter_pipe(canvas)
    assert len(out['scores']) == 1, out['boxes']  # was 3 overlapping hands (scores 0.64, 0.57, 0.57)
    c = out['keypoints'][0, :, :2].mean(0)
    assert 148 < c[0] < 148 + hand.shape[1] and 400 < c[1] < 400 + hand.shape[0]
