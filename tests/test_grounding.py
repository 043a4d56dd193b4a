"""Grounded cross-attention (kinema/train/grounding.py): which words describe which object, where
each object is on the token grid, the attention maps the DiT keeps, and the loss."""
import json

import pytest
import torch

from kinema.config import ConfigError
from kinema.models.dit import DiT, dit_config
from kinema.train.config import load_dit_train_config
from kinema.train.dit import train_dit
from kinema.train.grounding import (AttentionMaps, SceneRegions, grounding_loss, latent_frames,
                                    object_token_masks, scene_regions, word_shares)
from kinema.world import make_clip, parse_prompt
from kinema.world.parse import PromptError, object_word_spans
from kinema.world.vocab import HELD_OUT_WORDS

from test_train_dit import losses, vae_dir, write_config  # noqa: F401  (vae_dir is a fixture)


def words_of(text, spans):
    return [[text[a:b] for a, b in obj] for obj in spans]


def test_object_word_spans_follow_the_parser():
    text = "Against a black background, a spinning red square and one tiny blue disc moving left quickly."
    assert words_of(text, object_word_spans(text)) == [["spinning", "red", "square"],
                                                      ["tiny", "blue", "disc", "moving", "left", "quickly"]]
    text = "A big green triangle rises slowly, while a yellow circle stays still; the background is navy"
    assert words_of(text, object_word_spans(text)) == [["big", "green", "triangle", "rises", "slowly"],
                                                      ["yellow", "circle", "stays still"]]
    with pytest.raises(PromptError):
        object_word_spans("a purple elephant")
    for seed in range(60):  # every world caption, both kinds, trained and held-out wording
        for clip in (make_clip(seed), make_clip(seed, prefer_words=HELD_OUT_WORDS)):
            for text in (clip.text, clip.short_text):
                spans = object_word_spans(text)
                assert len(spans) == len(parse_prompt(text).objects) == len(clip.scene.objects)
                for obj, track in zip(words_of(text, spans), clip.scene.objects):
                    assert track.colour in obj  # each object's words hold its own colour, not the other's
                    assert not {o.colour for o in clip.scene.objects if o is not track} & set(obj)


def test_object_token_masks_mark_each_objects_subword_tokens():
    from kinema.text import load_text_encoder

    tok = load_text_encoder("minilm", max_length=16).tokenizer
    texts = ["A small red circle moving right and a blue box spinning.", "", "a purple elephant", "a red circle"]
    m = object_token_masks(tok, texts, 16)
    assert m.shape == (4, 2, 16)
    ids = tok(texts[:1])["input_ids"][0]
    pieces = tok.backend.encode(texts[0]).tokens
    assert [pieces[j] for j in m[0, 0].nonzero().flatten()] == ["small", "red", "circle", "moving", "right"]
    assert [pieces[j] for j in m[0, 1].nonzero().flatten()] == ["blue", "box", "spinning"]
    assert len(ids) == len(pieces)
    assert not m[1].any() and not m[2].any()  # empty and unreadable captions ground nothing
    assert m[3, 0].sum() == 2 and not m[3, 1].any()
    short = object_token_masks(tok, texts[:1], 6)  # truncated as the encoder truncates: [CLS] + 4 + [SEP]
    assert short[0, 0].nonzero().flatten().tolist() == [2, 3, 4] and not short[0, 1].any()


def test_latent_frames_of_a_causal_autoencoder():
    assert latent_frames(17, 4) == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    assert latent_frames(5, 4) == [[0], [1, 2, 3, 4]]


def test_scene_regions_hold_each_object_where_it_is():
    for seed in range(20):
        scene = make_clip(seed).scene
        r = scene_regions(scene, (5, 4, 4), 4).view(2, 5, 4, 4)
        for k, track in enumerate(scene.objects):
            for lt, frames in enumerate(latent_frames(17, 4)):
                for t in frames:
                    x, y = track.centroid[t]
                    assert r[k, lt, min(int(y // 16), 3), min(int(x // 16), 3)] == 1  # the cell of its centre
            assert 0 < r[k].mean() < 0.6
        if len(scene.objects) == 1:
            assert not r[1].any()
    with pytest.raises(ValueError, match="latent frames"):
        scene_regions(scene, (4, 4, 4), 4)


def tiny_dit():
    torch.manual_seed(0)
    dit = DiT(dit_config("dit-t", depth=2, in_channels=4, text_dim=8)).eval()
    for b in dit.blocks:  # zero-initialised: make the cross-attention count
        torch.nn.init.normal_(b.cross.proj.weight, std=0.1)
    return dit


def test_attention_maps_are_kept_without_changing_the_output():
    dit = tiny_dit()
    x, t, y = torch.randn(2, 4, 3, 4, 4), torch.rand(2), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    plain = dit(x, t, y, mask)
    with AttentionMaps(dit) as maps:
        kept = dit(x, t, y, mask)
    assert torch.allclose(plain, kept, atol=1e-5)
    assert len(maps.list) == 2 and maps.list[0].shape == (2, 3, 3 * 2 * 2, 5)
    assert torch.allclose(maps.list[0].sum(-1), torch.ones(2, 3, 12), atol=1e-5)
    assert not maps.list[0][0, :, :, 3:].any()  # padding is never read
    assert all(b.cross.keep_maps is None for b in dit.blocks)  # off again after the block
    with pytest.raises(ValueError, match="cross-attention"):
        AttentionMaps(DiT(dit_config("dit-t", depth=2, in_channels=4, text_dim=8, conditioning="joint")))


def test_grounding_loss_is_zero_when_words_read_inside_their_object():
    B, N, L = 1, 4, 3
    regions = torch.tensor([[[1.0, 1, 0, 0], [0, 0, 1, 0]]])  # object 0 on tokens 0-1, object 1 on token 2
    words = torch.tensor([[[False, True, False], [False, False, True]]])  # word 1 is object 0's, word 2 object 1's
    inside = torch.zeros(B, 1, N, L)
    inside[0, 0, :2, 1] = 0.5  # word 1 read only by tokens 0-1
    inside[0, 0, 2, 2] = 1.0  # word 2 read only by token 2
    inside[..., 0] = 1 - inside.sum(-1)  # the rest of each token's attention on word 0
    assert grounding_loss([inside], words, regions, torch.zeros(1)).item() == pytest.approx(0.0)
    uniform = torch.full((B, 1, N, L), 1 / L, requires_grad=True)
    share = word_shares([uniform], regions)
    assert share[0, 0, 1].item() == pytest.approx(0.5) and share[0, 1, 2].item() == pytest.approx(0.25)
    loss = grounding_loss([uniform], words, regions, torch.zeros(1))
    assert loss.item() == pytest.approx(((1 - 0.5) ** 2 + (1 - 0.25) ** 2) / 2)
    loss.backward()
    assert uniform.grad.abs().sum() > 0
    assert grounding_loss([uniform], words, regions, torch.ones(1)).item() == 0  # t = 1: pure noise, no layout
    assert grounding_loss([uniform], words & False, regions, torch.zeros(1)).item() == 0


def test_scene_regions_of_a_batch_come_from_pool_keys_and_fresh_seeds():
    from kinema.data.loader import DataConfig, VideoBatches

    pool = DataConfig(buckets=[[17, 64, 64]], num_clips=4)
    batch = VideoBatches(pool, 4).batch(0)
    regions = SceneRegions(pool, 4, (1, 2, 2))(batch, (5, 8, 8))
    assert regions.shape == (4, 2, 80)
    for row, key in zip(regions, batch["keys"]):
        assert torch.equal(row, scene_regions(make_clip(key[1]).scene, (5, 4, 4), 4))
    fresh = DataConfig(buckets=[[17, 64, 64]])
    assert SceneRegions(fresh, 4, (1, 2, 2))(VideoBatches(fresh, 2).batch(0), (5, 8, 8)).any()


def test_scene_regions_follow_the_spins_the_loader_renders():
    from kinema.data.loader import DataConfig
    from kinema.world import sample_scene
    from kinema.world.scene import respin

    one_way = DataConfig(buckets=[[5, 32, 32]], num_clips=4, spin_direction="counterclockwise")
    batch = {"index": [0], "keys": [("world", 37, 5, 32, 32)], "bucket": (5, 32, 32)}  # seed 37: a spinning square
    regions = SceneRegions(one_way, 4, (1, 1, 1))(batch, (2, 4, 4))[0]
    scene = sample_scene(37, 32, 32, 5)
    assert torch.equal(regions, scene_regions(respin(scene, None, "counterclockwise"), (2, 4, 4), 4))
    assert not torch.equal(regions, scene_regions(scene, (2, 4, 4), 4))  # the world's own turn covers other cells


def test_an_object_weighted_run_logs_both_losses_and_checks_its_config(tmp_path, vae_dir):  # noqa: F811
    train_dit(load_dit_train_config(write_config(tmp_path, vae_dir, "p", steps=2), []), progress=False)
    train_dit(load_dit_train_config(write_config(tmp_path, vae_dir, "o", steps=2), ["object_loss_weight=3"]),
              progress=False)
    rows = [json.loads(line) for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    plain, weighted = losses(tmp_path / "p"), losses(tmp_path / "o")
    assert weighted[1] == pytest.approx(plain[1], rel=1e-5)  # "loss" stays the plain flow loss of the same forward
    assert rows[0]["weighted_loss"] != pytest.approx(rows[0]["loss"], rel=1e-3)  # the objects' cells weigh more
    assert weighted[2] != pytest.approx(plain[2], rel=1e-6)  # and so the first step moved the weights otherwise
    both = load_dit_train_config(write_config(tmp_path, vae_dir, "og", steps=1),
                                 ["object_loss_weight=3", "grounding_weight=0.5"])
    train_dit(both, progress=False)  # with grounding too, each column keeps its own loss
    row = json.loads((tmp_path / "og" / "log.jsonl").read_text().splitlines()[0])
    assert row["weighted_loss"] == pytest.approx(rows[0]["weighted_loss"], rel=1e-5) and row["grounding"] > 0
    for bad, why in [(["object_loss_weight=-1"], ">= 0"),
                     (["object_loss_weight=1", "data.source='csv'", "data.csv='x.csv'"], "world"),
                     (["object_loss_weight=1", "mix_latents='m'"], "mix_latents")]:
        with pytest.raises(ConfigError, match=why):
            load_dit_train_config(write_config(tmp_path, vae_dir, "bad"), bad)


def test_a_grounded_run_logs_its_loss_and_checks_its_config(tmp_path, vae_dir):  # noqa: F811
    cfg = load_dit_train_config(write_config(tmp_path, vae_dir, "g", steps=3), ["grounding_weight=0.5"])
    train_dit(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "g" / "log.jsonl").read_text().splitlines()]
    assert all(0 <= r["grounding"] < 1 for r in rows)
    plain = load_dit_train_config(write_config(tmp_path, vae_dir, "p", steps=1), [])
    train_dit(plain, progress=False)
    # the first step's flow loss ("loss") is the plain run's: the maps change nothing in the forward pass
    assert losses(tmp_path / "g")[1] == pytest.approx(losses(tmp_path / "p")[1], rel=1e-4)
    for bad, why in [(["grounding_weight=-1"], ">= 0"),
                     (["grounding_weight=1", "dit.conditioning='joint'"], "cross"),
                     (["grounding_weight=1", "data.source='csv'", "data.csv='x.csv'"], "world"),
                     (["grounding_weight=1", "mix_latents='m'"], "mix_latents")]:
        with pytest.raises(ConfigError, match=why):
            load_dit_train_config(write_config(tmp_path, vae_dir, "bad"), bad)
