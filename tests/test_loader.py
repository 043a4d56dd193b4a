"""The training loader: one path for the world and for CSV data sets, bucketing, determinism."""
import numpy as np
import pytest
import torch

from kinema.data.loader import DataConfig, VideoBatches, fit_to_bucket, from_model_range, to_model_range
from kinema.data.video_io import write_video


def test_world_batches_are_a_function_of_the_step():
    cfg = DataConfig(buckets=[(17, 64, 64), (9, 64, 96), (5, 96, 64)], seed=3)
    a, b = VideoBatches(cfg, 4), VideoBatches(cfg, 4)
    shapes = set()
    for step in range(12):
        x, y = a.batch(step), b.batch(step)
        assert torch.equal(x["video"], y["video"]) and x["text"] == y["text"]
        f, h, w = x["bucket"]
        assert x["video"].shape == (4, 3, f, h, w) and x["video"].min() >= -1 and x["video"].max() <= 1
        shapes.add(x["bucket"])
    assert len(shapes) == 3  # durations, sizes and aspect ratios all train, one bucket a batch
    assert a.batch(0)["text"] != a.batch(1)["text"]  # fresh clips every step (no fixed pool)


def test_ranks_split_the_global_batch_exactly():
    cfg = DataConfig(num_clips=8)
    full = VideoBatches(cfg, 4).batch(7)
    parts = [VideoBatches(cfg, 4, rank=r, world_size=2).batch(7) for r in range(2)]
    assert torch.equal(full["video"][0::2], parts[0]["video"]) and torch.equal(full["video"][1::2], parts[1]["video"])
    assert full["text"][1::2] == parts[1]["text"]
    with pytest.raises(ValueError, match="divide"):
        VideoBatches(cfg, 3, world_size=2)


def test_fixed_pool_repeats_its_clips_every_epoch():
    cfg = DataConfig(num_clips=4, caption="text")
    b = VideoBatches(cfg, 2)
    texts = [t for s in range(6) for t in b.batch(s)["text"]]  # 3 epochs of 4 clips
    assert len(set(texts)) == 4 and sorted(texts[:4]) == sorted(texts[4:8]) == sorted(texts[8:])


def test_caption_choice_and_held_out_words():
    short = VideoBatches(DataConfig(caption="short_text", exclude_words=["ball", "disc", "dot"]), 8)
    texts = [t for s in range(10) for t in short.batch(s)["text"]]
    assert not any(w in t.lower().split() for t in texts for w in ("ball", "disc", "dot"))
    from kinema.world.vocab import HELD_OUT_WORDS
    held = VideoBatches(DataConfig(caption="both", hold_out_wording=True, exclude_words=["ball"]), 8)
    assert set(held.excluded_words) == {"ball", *HELD_OUT_WORDS}
    words = {w for s in range(10) for t in held.batch(s)["text"] for w in t.lower().replace(".", "").split()}
    assert not words & {"ball", *HELD_OUT_WORDS}
    both = VideoBatches(DataConfig(caption="both"), 8)
    lengths = [len(t) for s in range(5) for t in both.batch(s)["text"]]
    assert min(lengths) < 45 < max(lengths)  # short and detailed captions both appear


@pytest.mark.parametrize("bad,message", [
    (dict(buckets=[(16, 64, 64)]), "4k\\+1"), (dict(buckets=[(17, 16, 64)]), ">= 32"),
    (dict(buckets=[]), "empty"), (dict(bucket_weights=[1, 2]), "one weight per bucket"),
    (dict(source="csv"), "needs data.csv"), (dict(workers=-1), "workers"),
])
def test_config_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**bad)


def test_csv_videos_are_bucketed_by_aspect_and_fitted(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["path,text,num_frames,height,width,fps"]
    for i, (t, h, w) in enumerate([(20, 72, 128), (20, 60, 110), (12, 128, 72), (3, 64, 64)]):
        write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8), fps=8)
        rows.append(f"v{i}.mp4,video {i},{t},{h},{w},8")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cfg = DataConfig(source="csv", csv=str(tmp_path / "m.csv"), buckets=[(17, 64, 96), (9, 96, 64)])
    b = VideoBatches(cfg, 2)
    assert [[r.text for r in bucket] for bucket in b.by_bucket] == [["video 0", "video 1"], ["video 2"]]
    seen = set()
    for step in range(8):
        x = b.batch(step)
        f, h, w = x["bucket"]
        assert x["video"].shape == (2, 3, f, h, w)
        seen.update(x["text"])
    assert seen == {"video 0", "video 1", "video 2"}  # the 3-frame video fits no bucket
    keys = {k for step in range(8) for k in b.batch(step)["keys"]}  # every video has been read once now
    lazy = b.batch(3, skip=keys.__contains__)  # a cached clip is not read again
    assert lazy["video"] is None and lazy["keys"] == b.batch(3)["keys"]
    # every caption a model can learn from: the bucketed rows (not the 3-frame video), text and short text
    assert sorted(b.training_captions()) == sorted(["video 0", "video 1", "video 2"] * 2)


def test_training_captions_of_a_world_pool_and_stream():
    from kinema.world.vocab import HELD_OUT_WORDS
    pool = VideoBatches(DataConfig(num_clips=6, caption="short_text", hold_out_wording=True), 2)
    texts = pool.training_captions()
    seen = {t for s in range(6) for t in pool.batch(s)["text"]}  # 2 epochs of the 6 clips
    assert len(texts) == 6 and set(texts) == seen
    stream = VideoBatches(DataConfig(caption="both", hold_out_wording=True), 2).training_captions(fresh_sample=50)
    assert len(stream) == 100 and not {w for t in stream for w in t.lower().replace(".", "").split()} & set(HELD_OUT_WORDS)


def test_csv_without_sizes_asks_for_fill(tmp_path):
    write_video(tmp_path / "a.mp4", np.zeros((9, 64, 64, 3), np.uint8))
    (tmp_path / "m.csv").write_text("path,text\na.mp4,hi\n")
    with pytest.raises(ValueError, match="--fill"):
        VideoBatches(DataConfig(source="csv", csv=str(tmp_path / "m.csv"), buckets=[(9, 64, 64)]), 1)


def test_fit_to_bucket_covers_and_centre_crops():
    frames = np.zeros((10, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle
    x = fit_to_bucket(frames, (5, 32, 32), start=2)
    assert x.shape == (3, 5, 32, 32)
    assert x[:, :, :, 16].mean() > 0.9 and x[:, :, :, 0].mean() < -0.9  # the centre kept, sides cut


def test_model_range_round_trip():
    frames = np.random.default_rng(1).integers(0, 255, (2, 5, 8, 8, 3), dtype=np.uint8)
    x = torch.stack([to_model_range(f) for f in frames])
    assert x.shape == (2, 3, 5, 8, 8)
    assert np.array_equal(from_model_range(x), frames)


def test_skipped_samples_come_without_video_and_keep_their_captions():
    cfg = DataConfig(num_clips=4, caption="both", seed=1)
    plain, lazy = VideoBatches(cfg, 4), VideoBatches(cfg, 4)
    cold = VideoBatches(cfg, 4).batch(0, skip=lambda k: True)  # latents on disk, clips never made here:
    assert cold["video"] is None and cold["text"] == plain.batch(0)["text"]  # captioned, not rendered
    first = lazy.batch(0)
    assert first["with_video"] == [0, 1, 2, 3] and torch.equal(first["video"], plain.batch(0)["video"])
    seen = set(first["keys"][:2])
    for step in (1, 2):  # the next epochs: the two "cached" clips come without video
        a, b = plain.batch(step), lazy.batch(step, skip=seen.__contains__)
        assert a["text"] == b["text"] and a["keys"] == b["keys"]
        assert b["with_video"] == [i for i, k in enumerate(a["keys"]) if k not in seen]
        assert torch.equal(b["video"], a["video"][b["with_video"]])
    none = lazy.batch(3, skip=lambda k: True)
    assert none["video"] is None and none["with_video"] == [] and none["text"] == plain.batch(3)["text"]
    fresh = VideoBatches(DataConfig(), 2).batch(0, skip=lambda k: True)  # no pool: keys None, always rendered
    assert fresh["with_video"] == [0, 1] and fresh["keys"] == [None, None]


@pytest.mark.parametrize("pool", [None, 6])
def test_render_workers_give_the_same_batches(pool):
    """data.workers renders in other processes; the batches (videos, captions, keys, skips) are
    exactly those of the in-process path, also across an epoch and with clips skipped."""
    cfg = DataConfig(num_clips=pool, caption="both", seed=2)
    serial = VideoBatches(cfg, 4)
    parallel = VideoBatches(DataConfig(num_clips=pool, caption="both", seed=2, workers=2), 4)
    try:
        seen = set()
        for step in range(4):
            skip = seen.__contains__ if step >= 2 else None
            a, b = serial.batch(step, skip=skip), parallel.batch(step, skip=skip)
            assert parallel._workers is not None  # the work did go to the pool
            assert a["text"] == b["text"] and a["keys"] == b["keys"] and a["with_video"] == b["with_video"]
            assert (a["video"] is None and b["video"] is None) or torch.equal(a["video"], b["video"])
            seen.update(k for k in a["keys"][:2] if k is not None)
        cold = VideoBatches(DataConfig(num_clips=pool, seed=2, workers=2), 4)
        assert cold.batch(0, skip=lambda k: True)["text"] == VideoBatches(DataConfig(num_clips=pool, seed=2), 4).batch(
            0, skip=lambda k: True)["text"]
        cold.close()
    finally:
        parallel.close()
    parallel.close()  # twice is fine
    assert parallel._workers is None


def test_num_objects_of_matches_the_sampled_scene():
    from kinema.data.synth import clip_seed
    from kinema.world.scene import num_objects_of, sample_scene
    seeds = [clip_seed(5, i) for i in range(300)]
    counts = [num_objects_of(s) for s in seeds]
    assert counts == [len(sample_scene(s).objects) for s in seeds] and set(counts) == {1, 2}


def test_object_count_repeats_weight_the_pool_by_object_count():
    from kinema.world.scene import num_objects_of
    base = DataConfig(num_clips=12, caption="text", seed=4)
    plain = VideoBatches(base, 4)
    counts = {k: num_objects_of(k[1]) for s in range(3) for k in plain.batch(s)["keys"]}  # one epoch: all 12
    assert len(counts) == 12 and set(counts.values()) == {1, 2}
    n2 = sum(c == 2 for c in counts.values())
    for reps in ([1, 2], [0, 1], [3, 1]):
        b = VideoBatches(DataConfig(num_clips=12, caption="text", seed=4, object_count_repeats=reps), 1)
        epoch = len(b._pool)
        assert epoch == reps[0] * (12 - n2) + reps[1] * n2
        keys = [b.batch(s)["keys"][0] for s in range(2 * epoch)]  # two epochs
        for half in (keys[:epoch], keys[epoch:]):  # every clip exactly its repeats, each epoch
            for k in counts:
                assert half.count(k) == reps[counts[k] - 1]
        assert keys[:epoch] != keys[epoch:]  # reshuffled per epoch
    # None keeps the order the pool always had: each epoch range(n) shuffled by the epoch's rng,
    # so resumed older runs see the same samples
    from kinema.data.loader import _rng
    from kinema.data.synth import clip_seed
    expected = []
    for epoch in range(2):
        order = list(range(12))
        _rng(4, "epoch", epoch).shuffle(order)
        expected += [clip_seed(4, i) for i in order]
    assert [k[1] for s in range(6) for k in plain.batch(s)["keys"]] == expected


def test_motion_repeats_weight_the_pool_by_motion():
    from kinema.data.synth import clip_seed
    from kinema.world.scene import sample_scene
    cfg = dict(num_clips=40, caption="text", seed=4, buckets=[(17, 64, 64)])
    spins = {i for i in range(40)
             if any(o.motion == "spinning" for o in sample_scene(clip_seed(4, i), 64, 64, 17).objects)}
    assert 0 < len(spins) < 40
    b = VideoBatches(DataConfig(**cfg, motion_repeats={"spinning": 3}), 1)
    assert sorted(b._pool) == sorted(i for i in range(40) for _ in range(3 if i in spins else 1))
    # with object_count_repeats the factors multiply
    both = VideoBatches(DataConfig(**cfg, motion_repeats={"spinning": 3}, object_count_repeats=[1, 2]), 1)
    plain2 = VideoBatches(DataConfig(**cfg, object_count_repeats=[1, 2]), 1)
    assert len(both._pool) == len(plain2._pool) + 2 * sum(plain2._pool.count(i) for i in spins)
    keys = [both.batch(s)["keys"][0][1] for s in range(len(both._pool))]  # one epoch: each clip its repeats
    assert sorted(keys) == sorted(clip_seed(4, i) for i in both._pool)


@pytest.mark.parametrize("bad,message", [
    (dict(motion_repeats={"spinning": 2}), "needs source = 'world', num_clips and exactly one bucket"),
    (dict(num_clips=8, buckets=[(17, 64, 64), (9, 64, 64)], motion_repeats={"spinning": 2}), "exactly one bucket"),
    (dict(num_clips=8, motion_repeats={"spin": 2}), "unknown motion 'spin'"),
    (dict(num_clips=8, motion_repeats={"spinning": 0}), "integer >= 1"),
    (dict(source="csv", csv="m.csv", spin_degrees=[110, 160]), "needs source = 'world'"),
    (dict(spin_degrees=[80, 160]), "90 < lo <= hi"),
    (dict(spin_degrees=[110]), "90 < lo <= hi"),
    (dict(spin_degrees={"circle": [110, 160]}), "data.spin_degrees per shape takes square and triangle"),
    (dict(spin_degrees={"square": [110]}), r"data.spin_degrees.square must be \[lo, hi\]"),
    (dict(source="csv", csv="m.csv", spin_direction="clockwise"), "needs source = 'world'"),
    (dict(spin_direction="cw"), "data.spin_direction must be"),
    (dict(min_gap=0.03), "needs source = 'world', num_clips and exactly one bucket"),
    (dict(num_clips=8, buckets=[(17, 64, 64), (9, 64, 64)], min_gap=0.03), "exactly one bucket"),
    (dict(num_clips=8, min_gap=0.6), r"in \[0, 0.5\)"),
])
def test_world_pool_option_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**bad)


def test_spin_degrees_render_slower_spins_under_their_own_keys():
    from kinema.world import make_clip
    cfg = dict(num_clips=40, caption="text", seed=4, buckets=[(17, 64, 64)])
    plain, slow = VideoBatches(DataConfig(**cfg), 1), VideoBatches(DataConfig(**cfg, spin_degrees=[110, 160]), 1)
    differ = 0
    for step in range(12):
        a, b = plain.batch(step), slow.batch(step)
        (ka,), (kb,) = a["keys"], b["keys"]
        i = slow._pool_clip(step)  # the pool index behind sample `step` (batch size 1)
        assert (plain.pool_key(i), slow.pool_key(i)) == (ka, kb)  # what scripts/raft.py reads the cache by
        want = make_clip(ka[1], 64, 64, 17, spin_degrees=(110.0, 160.0)).frames
        assert torch.equal(b["video"][0], to_model_range(want)) and a["text"] == b["text"]
        if torch.equal(a["video"][0], b["video"][0]):  # no spinning object: the same clip, the same latent
            assert kb == ka
        else:  # a spinning object turns less: its own latent
            assert kb == (*ka, "spin", 110.0, 160.0)
            differ += 1
    assert 0 < differ < 12


def test_spin_degrees_per_shape_render_and_key_the_named_shapes_spins():
    from kinema.config import from_dict
    from kinema.world import make_clip
    cfg = dict(num_clips=60, caption="text", seed=4, buckets=[(17, 64, 64)])
    table = from_dict(DataConfig, {**cfg, "spin_degrees": {"square": [110, 160]}})  # as a TOML table reads
    assert table.spin_degrees == {"square": [110.0, 160.0]}
    squares = VideoBatches(table, 1)
    spun = 0
    for step in range(20):
        batch = squares.batch(step)
        (key,), video = batch["keys"], batch["video"][0]
        want = make_clip(key[1], 64, 64, 17, spin_degrees={"square": (110.0, 160.0)})
        assert torch.equal(video, to_model_range(want.frames))
        if any(o.motion == "spinning" for o in want.scene.objects):
            spun += 1
            assert key[5:] == ("spin", "square", 110.0, 160.0)  # its own latent, apart from a range's
    assert 0 < spun < 20


def test_spin_direction_keys_and_renders_spins_one_way():
    from kinema.world import make_clip
    cfg = dict(num_clips=40, caption="text", seed=4, buckets=[(17, 64, 64)])
    plain = VideoBatches(DataConfig(**cfg), 1)
    ccw = VideoBatches(DataConfig(**cfg, spin_direction="counterclockwise"), 1)
    both = VideoBatches(DataConfig(**cfg, spin_degrees=[110, 160], spin_direction="clockwise"), 1)
    spun = 0
    for step in range(12):
        (ka,), (kc,), (kb,) = plain.batch(step)["keys"], ccw.batch(step)["keys"], both.batch(step)["keys"]
        i = ccw._pool_clip(step)
        assert (ccw.pool_key(i), both.pool_key(i)) == (kc, kb)
        if any(o.motion == "spinning" for o in make_clip(ka[1]).scene.objects):
            spun += 1
            assert kc == (*ka, "turning", "counterclockwise")
            assert kb == (*ka, "spin", 110.0, 160.0, "turning", "clockwise")
            want = make_clip(ka[1], spin_degrees=(110.0, 160.0), spin_direction="clockwise").frames
            assert torch.equal(both.batch(step)["video"][0], to_model_range(want))
        else:
            assert ka == kc == kb
    assert 0 < spun < 12


def test_config_tables_are_typed():
    from kinema.config import ConfigError, apply_overrides, from_dict
    data = apply_overrides({"num_clips": 8}, ["motion_repeats={spinning=3}"])
    assert from_dict(DataConfig, data).motion_repeats == {"spinning": 3}
    with pytest.raises(ConfigError, match="motion_repeats"):
        from_dict(DataConfig, {"num_clips": 8, "motion_repeats": {"spinning": "x"}})
    with pytest.raises(ConfigError, match="motion_repeats"):
        from_dict(DataConfig, {"num_clips": 8, "motion_repeats": [3]})


@pytest.mark.parametrize("bad,message", [
    (dict(object_count_repeats=[1, 2]), "needs source = 'world' and num_clips"),
    (dict(num_clips=8, object_count_repeats=[1]), "two counts"),
    (dict(num_clips=8, object_count_repeats=[0, 0]), "not both 0"),
    (dict(num_clips=8, object_count_repeats=[1, -1]), "two counts"),
])
def test_object_count_repeats_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**bad)


def test_min_gap_leaves_out_the_two_object_clips_whose_objects_come_close():
    """data.min_gap: the pool keeps the one-object clips and the two-object ones whose objects stay
    that far apart (circumcircles, in every frame); the clips kept, their keys and captions are as before."""
    from kinema.data.loader import clip_seed
    from kinema.world.scene import closest_approach, sample_scene

    cfg = dict(num_clips=60, caption="text", seed=4, buckets=[(17, 64, 64)], object_count_repeats=[1, 2])
    plain, apart = VideoBatches(DataConfig(**cfg), 1), VideoBatches(DataConfig(**cfg, min_gap=0.05), 1)
    near = {i for i in range(60) if closest_approach(sample_scene(clip_seed(4, i), 64, 64, 17)) < 0.05 * 64}
    assert 0 < len(near) < 30  # some two-object clips come that close, not all
    assert sorted(apart._pool) == sorted(i for i in plain._pool if i not in near)
    assert all(len(sample_scene(clip_seed(4, i), 64, 64, 17).objects) == 2 for i in near)  # one object: inf
    i = apart._pool[0]
    assert apart.pool_key(i) == plain.pool_key(i)  # the same clip: its cached latent serves
    seen = {apart.batch(s)["keys"][0][1] for s in range(len(apart._pool))}
    assert seen == {clip_seed(4, i) for i in apart._pool}
    with pytest.raises(ValueError, match="leaves no clip"):
        VideoBatches(DataConfig(**{**cfg, "object_count_repeats": [0, 1]}, min_gap=0.45), 1)
