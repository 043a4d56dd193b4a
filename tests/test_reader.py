"""The scene reader (kinema/models/reader.py) and the verifier's reader features."""
import dataclasses

import pytest
import torch

from kinema.models.dit import DiT, DiTConfig
from kinema.models.reader import (ATTRIBUTES, BACKGROUNDS, CLAIMS, COLOURS, IGNORE, ReaderConfig, SceneReader,
                                  attribute_features, claim_features, claim_log_prob, load_reader, reader_accuracy,
                                  save_reader, scene_targets, split_logits, train_reader)
from kinema.models.verifier import (NUM_READER, Verifier, VerifierConfig, fit_verifier, load_verifier,
                                    num_features, save_verifier, verifier_features)
from kinema.world.scene import sample_scene

SMALL = ReaderConfig(latent_channels=24, grid=(2, 4, 4), dim=32, layers=1, heads=2)


def test_targets_name_each_object_by_its_colour():
    scene = next(s for s in (sample_scene(i) for i in range(50)) if len(s.objects) == 2)
    present, labels, background, count = scene_targets(scene)
    assert present.sum() == 2 and count == 1 and BACKGROUNDS[background] == scene.background
    for o in scene.objects:
        k = COLOURS.index(o.colour)
        assert present[k] == 1
        assert [ATTRIBUTES[n][i] for n, i in zip(ATTRIBUTES, labels[k].tolist())] == [o.shape, o.size, o.motion, o.speed]
    assert (labels[present == 0] == IGNORE).all()


class FixedReader(SceneReader):
    """Reads every clip as: a red square moving left and a blue circle, on black."""

    def forward(self, z, t=None):
        obj = torch.full((len(z), len(COLOURS), 1 + sum(map(len, ATTRIBUTES.values()))), -4.0)
        parts = split_logits(obj)  # views into obj
        for colour, shape, motion in (("red", "square", "left"), ("blue", "circle", "still")):
            k = COLOURS.index(colour)
            parts["present"][:, k] = 4.0
            parts["shape"][:, k, ATTRIBUTES["shape"].index(shape)] = 4.0
            parts["motion"][:, k, ATTRIBUTES["motion"].index(motion)] = 4.0
        scene = torch.full((len(z), len(BACKGROUNDS) + 2), -4.0)
        scene[:, BACKGROUNDS.index("black")] = 4.0
        scene[:, len(BACKGROUNDS) + 1] = 4.0  # two objects
        return obj, scene


def test_claims_score_the_reading_with_binding_and_colourless_objects():
    reader = FixedReader(SMALL)
    prompts = ["a red square and a blue circle", "a red circle and a blue square", "a square and a circle",
               "a red square moving left and a blue circle", "a red square moving right and a blue circle",
               "a red square and a blue circle on a gray background", "a red square", "hello there"]
    f = claim_features(reader, torch.zeros(len(prompts), 24, 2, 4, 4), prompts)
    total = dict(zip(prompts, f[:, 0].tolist()))
    assert total["a red square and a blue circle"] > total["a red circle and a blue square"] + 10  # binding
    assert total["a square and a circle"] == pytest.approx(total["a red square and a blue circle"], abs=1e-4)
    assert total["a red square moving left and a blue circle"] > total["a red square moving right and a blue circle"] + 5
    assert total["a red square and a blue circle on a gray background"] < total["a red square and a blue circle"] - 5
    assert total["a red square"] < total["a red square and a blue circle"] - 5  # the count
    assert f[-1].tolist() == [0.0, 0.0]  # the world's parser does not read it: no opinion
    assert (f[:-1, 1] <= 0).all() and (f[:-1, 1] >= f[:-1, 0] - 1e-6).all()  # the worst term: in [sum, 0]


def test_claim_log_prob_is_the_summed_claims_with_a_gradient_in_the_latent():
    torch.manual_seed(0)
    reader = SceneReader(SMALL).eval()
    for p in reader.parameters():
        p.requires_grad_(False)  # as in a loaded verifier: the fused inference path must not be taken
    prompts = ["a red square and a blue circle moving left", "hello there"]
    z = torch.randn(2, 24, 2, 4, 4, requires_grad=True)
    lp = claim_log_prob(reader, z, prompts)
    assert torch.allclose(lp.detach(), claim_features(reader, z.detach(), prompts)[:, 0], atol=1e-5)
    grad, = torch.autograd.grad(lp.sum(), z)
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() == 0  # an unread prompt: no push
    step = z.detach() + 1e-2 * grad  # up the gradient: the claims get likelier
    assert claim_log_prob(reader, step, prompts)[0] > lp[0]
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_attribute_features_are_the_worst_claim_of_each_kind():
    reader = FixedReader(SMALL)
    prompts = ["a red square moving left and a blue circle", "a red circle and a blue square on a gray background",
               "a square", "hello there"]
    z = torch.zeros(len(prompts), 24, 2, 4, 4)
    a, f = attribute_features(reader, z, prompts), claim_features(reader, z, prompts)
    assert a.shape == (4, len(CLAIMS))
    assert torch.allclose(a[:-1].min(1).values, f[:-1, 1], atol=1e-5)  # the worst kind holds the worst claim
    assert a[-1].tolist() == [0.0] * len(CLAIMS)  # not read: no opinion
    col = dict(zip(CLAIMS, a.T))
    assert col["motion"][0] < 0 and col["motion"][1] == 0  # only the first prompt says a motion
    assert col["background"][1] < -5 and col["background"][0] == 0  # the reading's background is not gray
    assert col["shape"][1] < col["shape"][0] - 5  # shapes bound to the wrong colours
    assert col["count"][2] < col["count"][0] - 5  # one object claimed, two read


def planted(scenes):
    """Latents that show each scene: object n's colour and shape one-hot in channels, in half n."""
    z = torch.zeros(len(scenes), 24, 2, 4, 4)
    for b, s in enumerate(scenes):
        for n, o in enumerate(s.objects):
            z[b, COLOURS.index(o.colour), :, :, 2 * n:2 * n + 2] = 2.0
            z[b, 8 + ATTRIBUTES["shape"].index(o.shape), :, :, 2 * n:2 * n + 2] = 2.0
            z[b, 11 + ATTRIBUTES["size"].index(o.size), :, :, 2 * n:2 * n + 2] = 2.0
        z[b, 13 + BACKGROUNDS.index(s.background)] = 2.0
    return z


def test_training_learns_to_read_planted_scenes_and_saves(tmp_path):
    scenes = [sample_scene(i, 32, 32, 5) for i in range(1200)]
    z = planted(scenes)
    reader = train_reader(z[200:], scenes[200:], SMALL, epochs=12, lr=3e-3, batch=64, progress=False)
    acc = reader_accuracy(reader, z[:200], scenes[:200])
    # shape and size are read per colour: right only if the reader binds them (chance: 1/3, 1/2)
    assert acc["shape"] > 0.9 and acc["size"] > 0.9 and acc["background"] > 0.95 and acc["count"] > 0.95
    assert acc["colours"] > 0.4  # all 8 present/absent right (chance ~0; it gets there with more epochs)
    again = load_reader(save_reader(reader, tmp_path / "r"))
    assert again.cfg == reader.cfg and torch.equal(again(z[:3])[0], reader(z[:3])[0])
    with pytest.raises(ValueError, match="as many scenes"):
        train_reader(z[:100], scenes[:99], SMALL)


def test_a_noisy_reader_reads_clean_and_lightly_noised_clips_and_not_pure_noise(tmp_path):
    scenes = [sample_scene(i, 32, 32, 5) for i in range(1200)]
    z = planted(scenes)
    noisy = dataclasses.replace(SMALL, noisy=True)
    reader = train_reader(z[200:], scenes[200:], noisy, epochs=12, lr=3e-3, batch=64, progress=False)
    clean, light, pure = (reader_accuracy(reader, z[:200], scenes[:200], t=t) for t in (0.0, 0.3, 1.0))
    assert clean["shape"] > 0.85 and light["shape"] > 0.8 and clean["background"] > 0.9
    assert pure["shape"] < 0.6  # pure noise holds nothing to read: near chance (1/3)
    again = load_reader(save_reader(reader, tmp_path / "r"))
    t = torch.full((3,), 0.5)
    assert again.cfg.noisy and torch.equal(again(z[:3], t)[0], reader(z[:3], t)[0])
    with pytest.raises(ValueError, match="clean latents only"):
        SceneReader(SMALL)(z[:3], t)


def test_config_checks():
    with pytest.raises(ValueError, match="divisible by patch"):
        ReaderConfig(grid=(5, 7, 8))
    with pytest.raises(ValueError, match="heads"):
        ReaderConfig(dim=30, heads=4)


def test_the_verifier_carries_its_reader(tmp_path):
    torch.manual_seed(0)
    dit = DiT(DiTConfig(in_channels=24, patch_size=(1, 2, 2), hidden_size=32, depth=1, num_heads=2, text_dim=16))
    reader = SceneReader(SMALL)
    cfg = VerifierConfig(levels=[0.5], reader=True)

    def encode(texts):
        return torch.randn(len(texts), 3, 16), torch.ones(len(texts), 3, dtype=torch.bool)

    z = torch.randn(6, 24, 2, 4, 4)
    prompts = ["a red square", "a blue circle moving left"] * 3
    with pytest.raises(ValueError, match="reader="):
        verifier_features(dit, encode, z, prompts, prompts, cfg)
    f = verifier_features(dit, encode, z, prompts, prompts, cfg, reader)
    assert f.shape == (6, num_features(cfg, 32)) == (6, 4 + 3 * 32 + NUM_READER)
    assert torch.equal(f[:, -NUM_READER:], claim_features(reader, z, prompts))
    model = fit_verifier(f, torch.tensor([True, False] * 3), cfg, reader=reader)
    again = load_verifier(save_verifier(model, tmp_path / "v"))
    assert again.cfg == cfg and torch.equal(again(f), model(f))
    assert torch.allclose(again.reader(z)[0], reader.eval()(z)[0], atol=1e-5)
    with pytest.raises(ValueError, match="reader"):
        Verifier(cfg, f.shape[1])
    with pytest.raises(ValueError, match="reader"):
        Verifier(VerifierConfig(), f.shape[1], reader)


def test_a_reader_of_near_misses_reads_motions_as_the_judge_measures_them(tmp_path):
    from kinema.models.reader import UNCLEAR, reader_attributes
    from kinema.world.nearmiss import near_miss

    unclear = dataclasses.replace(SMALL, unclear=True)
    readings = reader_attributes(True)
    assert readings["motion"] == [*ATTRIBUTES["motion"], UNCLEAR] and reader_attributes(False) is ATTRIBUTES
    # labels: the judge's reading of the ground truth, so a near miss is "unclear" and a plain
    # world clip keeps its words (its speed read from how far it went)
    scenes = [sample_scene(8_000_000 + i) for i in range(60)]
    missed = [near_miss(s, s.seed) for s in scenes]
    said = [[readings["motion"][m] for m in scene_targets(s, readings)[1][:, 2].tolist() if m != IGNORE] for s in missed]
    assert sum(r.count(UNCLEAR) for r in said) > 5
    for s in scenes:
        present, labels, _, _ = scene_targets(s, readings)
        for o in s.objects:
            motion, speed = labels[COLOURS.index(o.colour), 2:].tolist()
            assert readings["motion"][motion] == o.motion and (o.speed is None or readings["speed"][speed] == o.speed)
    # the head has the 14th motion; a prompt's motion claim is scored against it
    reader = SceneReader(unclear)
    obj, _ = reader(torch.zeros(2, 24, 2, 4, 4))
    assert obj.shape[-1] == 1 + sum(map(len, readings.values())) == 1 + 22
    assert split_logits(obj, readings)["motion"].shape[-1] == 14
    f = claim_features(reader, torch.zeros(2, 24, 2, 4, 4), ["a red square moving left", "a blue circle"])
    assert f.shape == (2, 2) and (f < 0).all()
    again = load_reader(save_reader(reader, tmp_path / "r"))
    assert again.cfg.unclear and torch.equal(again(torch.ones(1, 24, 2, 4, 4))[0], reader.eval()(torch.ones(1, 24, 2, 4, 4))[0])
