"""The judge: round trips on real clips, and constructed videos whose answer is known."""
import numpy as np
import pytest

from kinema.data.video_io import read_video, write_video
from kinema.eval.judge import judge, judge_observation, observe_ground_truth
from kinema.eval.measure import measure_video
from kinema.world import PromptError, make_clip, render, vocab
from kinema.world.scene import Scene, Track


def mp4_round_trip(tmp_path, frames):
    return read_video(write_video(tmp_path / "clip.mp4", frames, fps=8))


@pytest.mark.parametrize("size", [(64, 64), (96, 64)])
def test_own_captions_pass_after_mp4(tmp_path, size):
    for seed in range(40):
        clip = make_clip(10_000 + seed, *size)
        obs = measure_video(mp4_round_trip(tmp_path, clip.frames))
        for caption in (clip.text, clip.short_text):
            v = judge_observation(obs, caption)
            assert v.passed, (seed, caption, [(c.check, c.measured, c.value) for c in v.failed()])


def test_a_second_bounce_on_the_last_frame_is_still_bouncing(tmp_path):
    clip = make_clip(1_000_000_134)  # the ball lands a second time exactly on the last frame
    assert "bouncing" in clip.text
    assert judge(mp4_round_trip(tmp_path, clip.frames), clip.text).passed


def test_other_clips_false_captions_fail_and_name_what_differs(tmp_path):
    clips = [make_clip(20_000 + s) for s in range(30)]
    for i, clip in enumerate(clips):
        other = clips[(i + 1) % len(clips)]
        truth = judge_observation(observe_ground_truth(clip.ground_truth), other.text)
        if truth.passed:
            continue
        v = judge(mp4_round_trip(tmp_path, clip.frames), other.text)
        assert not v.passed
        assert {c.attribute for c in v.failed()} & {c.attribute for c in truth.failed()}


def one_object(motion, shape="square", colour="red", T=17, speed=None, **geom):
    W = H = 64
    e = geom.get("extent", 14.0)
    c0 = geom.get("start", (32.0, 32.0))
    step = geom.get("step", (0.0, 0.0))
    cents = tuple((c0[0] + step[0] * t, c0[1] + step[1] * t) for t in range(T))
    ext = tuple(geom.get("extents", [e] * T))
    ang = tuple(geom.get("angles", [0.0] * T))
    track = Track(colour, shape, "small", motion, speed, cents, ext, ang)
    return render(Scene(0, W, H, T, 8.0, "gray", (track,)))


def test_static_video_is_still_not_moving():
    frames = one_object("still")
    assert judge(frames, "a red square stays still on a gray background").passed
    v = judge(frames, "a red square moving right")
    assert not v.passed and [c.attribute for c in v.failed()] == ["motion"]


def test_reversed_clip_swaps_direction():
    frames = one_object("right", step=(1.5, 0.0), start=(12.0, 32.0))
    assert judge(frames, "a red square moving right").passed
    assert judge(frames[::-1], "a red square moving left").passed
    assert not judge(frames[::-1], "a red square moving right").passed


def test_colour_swapped_video_fails_on_colour():
    frames = one_object("still", colour="red")
    swapped = frames.copy()
    red = np.all(frames == vocab.OBJECT_COLOURS["red"], axis=-1)
    swapped[red] = vocab.OBJECT_COLOURS["green"]
    v = judge(swapped, "a red square stays still")
    assert not v.passed
    colour = next(c for c in v.checks if c.attribute == "colour")
    assert (colour.expected, colour.measured, colour.passed) == ("red", "green", False)


def test_shuffled_frames_are_not_linear_motion():
    frames = one_object("right", step=(1.5, 0.0), start=(12.0, 32.0))
    order = np.random.default_rng(0).permutation(len(frames))
    order[0], order[-1] = 0, len(frames) - 1  # same start and end: only the path differs
    assert not judge(frames[order], "a red square moving right").passed


def test_speed_words_use_worlds_thresholds():
    slow = one_object("right", step=(26 / 16, 0.0), start=(10.0, 32.0))  # 0.41 of the width
    assert judge(slow, "a red square moving slowly to the right").passed
    assert not judge(slow, "a red square moving quickly to the right").passed


def test_spin_grow_shrink_are_told_apart():
    spin = one_object("spinning", angles=[10.0 * t for t in range(17)])
    grow = one_object("growing", shape="circle", extents=[10 + t for t in range(17)])
    assert judge(spin, "a red square spinning").passed
    assert not judge(spin, "a red square stays still").passed
    assert judge(grow, "a red ball growing").passed
    assert not judge(grow, "a red ball shrinking").passed
    assert judge(grow[::-1], "a red ball shrinking").passed


def test_missing_and_extra_objects_fail_count():
    frames = one_object("still")
    v = judge(frames, "a red square stays still and a blue ball stays still")
    failed = {c.attribute for c in v.failed()}
    assert "count" in failed and "present" in failed


def test_background_check():
    frames = one_object("still")
    assert not judge(frames, "a red square on a navy background").passed


def test_report_json_has_values_behind_checks():
    clip = make_clip(1)
    report = judge(clip.frames, clip.text).to_json()
    assert report["pass"] is True and report["spec"] == "shapes-v1"
    motion = next(c for c in report["checks"] if c["attribute"] == "motion")
    assert {"dx", "dy", "rotation_deg", "area_ratio"} <= set(motion["value"])


def test_out_of_vocabulary_prompt_is_an_error():
    with pytest.raises(PromptError, match="'unicorn'"):
        judge(make_clip(1).frames, "a unicorn galloping")
