"""A scene reader: which objects does a latent clip show? (the verifier's second opinion)

A small transformer over the autoencoder's latents of a 64x64x17 shapes-world clip that reads,
for each of the world's eight object colours, whether an object of that colour is there and, if
so, its shape, size, motion and speed; and the background and the object count. It is trained on
the world's own clips, whose scenes are known exactly (the latents the DiT's recipe cached while
training: `scripts/train_verifier.py reader`), never on the model's samples or the judge.

Colours are unique within a world scene, so reading attributes *per colour* keeps binding: "a red
square and a blue circle" and "a blue square and a red circle" are different readings.

    tokens = patchify(z) + pos      (B, T' h/2 w/2, D)   one token a 1x2x2 latent patch
    h      = transformer(tokens)
    slots  = queries + attn(queries, h)                  (B, 8 colours + 1 scene, D)
    logits = per colour: present (1), shape (3), size (2), motion (13; 14 with "unclear"), speed (3: none, slow, quick)
             scene slot: background (3), count (2)

`claim_features` scores a prompt's claims under a reading: log p of each attribute the prompt
names, as the judge checks only those (an object without a named colour takes its best colour),
summed and the worst one; a prompt the world's parser does not read gets zeros (no opinion: every candidate of it ties). The verifier adds those two numbers
to the DiT's features (kinema/models/verifier.py); its head fits how much to trust them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .. import flow
from ..autoencoder.vae import CONFIG_NAME, WEIGHTS_NAME
from ..config import from_dict, to_dict
from ..world import vocab
from ..world.parse import PromptError, parse_prompt
from .dit import TimestepEmbedder

COLOURS = list(vocab.OBJECT_COLOURS)
BACKGROUNDS = list(vocab.BACKGROUNDS)
SPEEDS = [None, *vocab.SPEED_WORDS]  # an axis motion's speed word; None: not said
ATTRIBUTES = {"shape": list(vocab.SHAPE_WORDS), "size": list(vocab.SIZE_WORDS),
              "motion": list(vocab.MOTIONS), "speed": SPEEDS}  # the per-colour readings, in order
UNCLEAR = "unclear"  # the judge's reading of a motion that is none of the world's (kinema.world.nearmiss)
NUM_COUNTS = 2  # shapes world v1: one or two objects
IGNORE = -100  # cross_entropy's ignore_index: a colour not in the scene has no shape


def reader_attributes(unclear: bool = False) -> dict[str, list]:
    """The per-colour readings of a reader, in order: ATTRIBUTES, with "unclear" as a 14th motion
    when the reader is trained on near misses (ReaderConfig.unclear)."""
    return {**ATTRIBUTES, "motion": [*ATTRIBUTES["motion"], UNCLEAR]} if unclear else ATTRIBUTES


@dataclass
class ReaderConfig:
    latent_channels: int = 16
    grid: tuple[int, int, int] = (5, 8, 8)  # latent (T', h, w) it is trained on; others interpolate pos
    patch: int = 2  # spatial patch of a token
    dim: int = 128
    layers: int = 3
    heads: int = 4
    noisy: bool = False  # reads x_t at a noise level t of the flow's path (a guide for sampling), not only clean z
    # Reads motion and speed as the judge measures them, with "unclear" for a motion that is none of
    # the world's: trained on world clips with near misses among them (kinema.world.nearmiss).
    unclear: bool = False

    def __post_init__(self):
        self.grid = tuple(self.grid)
        if len(self.grid) != 3 or any(g % (self.patch if i else 1) for i, g in enumerate(self.grid)):
            raise ValueError(f"reader grid {self.grid} must be (T', h, w) with h, w divisible by patch {self.patch}")
        if self.dim % self.heads:
            raise ValueError(f"reader dim {self.dim} must be divisible by heads {self.heads}")


class SceneReader(nn.Module):
    def __init__(self, cfg: ReaderConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.dim, cfg.patch
        T, h, w = cfg.grid
        self.embed = nn.Conv3d(cfg.latent_channels, d, (1, p, p), stride=(1, p, p))
        self.pos = nn.Parameter(torch.randn(1, d, T, h // p, w // p) * 0.02)
        self.time = TimestepEmbedder(d) if cfg.noisy else None
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, 0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(len(COLOURS) + 1, d) * 0.02)  # 8 colours + the scene
        self.norm_q, self.norm_h = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.attributes = reader_attributes(cfg.unclear)
        self.object_head = nn.Linear(d, 1 + sum(len(v) for v in self.attributes.values()))
        self.scene_head = nn.Linear(d, len(BACKGROUNDS) + NUM_COUNTS)

    def forward(self, z: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z (B, C, T', h, w) normalised latents -> (B, 8, 1 + 21) per-colour and (B, 5) scene logits.
        A noisy reader also takes t (B,): z is then x_t = (1 - t) z0 + t noise (t None: 0, clean)."""
        x = self.embed(z.float())  # (B, D, T', h/p, w/p)
        pos = self.pos if self.pos.shape[2:] == x.shape[2:] else F.interpolate(self.pos, x.shape[2:], mode="trilinear")
        x = (x + pos).flatten(2).transpose(1, 2)  # (B, N, D)
        if self.time is not None:
            x = x + self.time(torch.zeros(len(z), device=z.device) if t is None else t)[:, None]
        elif t is not None:
            raise ValueError("this reader reads clean latents only (ReaderConfig.noisy is false): no t")
        h = self.norm_h(self.blocks(x))  # (B, N, D)
        q = self.norm_q(self.queries).expand(len(z), -1, -1)
        slots = q + self.attn(q, h, h, need_weights=False)[0]
        slots = slots + self.mlp(slots)  # (B, 9, D)
        return self.object_head(slots[:, :-1]), self.scene_head(slots[:, -1])


def split_logits(obj: Tensor, attributes: dict[str, list] = ATTRIBUTES) -> dict[str, Tensor]:
    """(..., 1 + 21) per-colour logits (1 + 22 with "unclear") -> {"present": (...), "shape": (..., 3), ...}."""
    out, i = {"present": obj[..., 0]}, 1
    for name, values in attributes.items():
        out[name] = obj[..., i:i + len(values)]
        i += len(values)
    return out


def scene_targets(scene, attributes: dict[str, list] = ATTRIBUTES) -> tuple[Tensor, Tensor, int, int]:
    """A world Scene -> (present (8,), attribute labels (8, 4) with IGNORE for absent colours,
    background index, count index). With "unclear" among the motions, motion and speed are what the
    judge reads from the scene's ground truth, not the words its objects were drawn with."""
    present, labels = torch.zeros(len(COLOURS)), torch.full((len(COLOURS), len(attributes)), IGNORE)
    measured = [None] * len(scene.objects)
    if UNCLEAR in attributes["motion"]:
        from ..eval.judge import ground_truth_motions  # here: the judge is needed only for these labels
        from ..world import ground_truth

        measured = ground_truth_motions(ground_truth(scene))
    for o, reading in zip(scene.objects, measured):
        k = COLOURS.index(o.colour)
        present[k] = 1
        said = {name: getattr(o, name) for name in attributes}
        if reading is not None:  # "right (slow)" -> motion right, speed slow
            motion, _, speed = reading.partition(" (")
            said["motion"], said["speed"] = motion, speed.rstrip(")") or None
        labels[k] = torch.tensor([values.index(said[name]) for name, values in attributes.items()])
    return present, labels, BACKGROUNDS.index(scene.background), len(scene.objects) - 1


def reader_loss(reader: SceneReader, z: Tensor, targets, t: Tensor | None = None) -> Tensor:
    present, labels, background, count = targets
    obj, scene = reader(z, t)
    parts = split_logits(obj, reader.attributes)
    loss = F.binary_cross_entropy_with_logits(parts["present"], present) * len(COLOURS)
    for k, name in enumerate(reader.attributes):
        loss = loss + F.cross_entropy(parts[name].flatten(0, 1), labels[..., k].flatten(), ignore_index=IGNORE)
    return (loss + F.cross_entropy(scene[:, :len(BACKGROUNDS)], background)
            + F.cross_entropy(scene[:, len(BACKGROUNDS):], count))


def stack_targets(scenes, attributes: dict[str, list] = ATTRIBUTES) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    rows = [scene_targets(s, attributes) for s in scenes]
    return (torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]),
            torch.tensor([r[2] for r in rows]), torch.tensor([r[3] for r in rows]))


def train_reader(z: Tensor, scenes: list, cfg: ReaderConfig | None = None, epochs: int = 16, lr: float = 2e-3,
                 batch: int = 128, noise: float = 0.1, seed: int = 0, progress: bool = True) -> SceneReader:
    """Fit a reader on (N, C, T', h, w) latents of world clips and their Scenes: AdamW, warm-up and
    cosine decay, each batch's latents jittered by up to `noise` std (a sampler's latents are not an
    encoder's); a noisy reader (cfg.noisy) reads each clip at a noise level t ~ U(0, 1) of the flow's
    path instead, x_t = (1 - t) z + t noise. Deterministic for a seed."""
    from tqdm import tqdm

    if len(z) != len(scenes) or len(z) < batch:
        raise ValueError(f"need as many scenes as latents and at least one batch ({batch}), got {len(z)} and {len(scenes)}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reader = SceneReader(cfg or ReaderConfig(latent_channels=z.shape[1], grid=tuple(z.shape[2:])))
    targets = stack_targets(scenes, reader.attributes)
    opt = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=0.05)
    per_epoch = len(z) // batch
    total = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    reader.train()
    with tqdm(total=total, desc="reader", unit="step", disable=not progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(z), generator=g)
            for k in range(per_epoch):
                b = order[k * batch:(k + 1) * batch]
                x, t = z[b].float(), None
                if reader.cfg.noisy:
                    t = torch.rand(len(b), generator=g)
                    x = flow.interpolate(x, torch.randn(x.shape, generator=g), t)
                else:
                    x = x + noise * torch.randn(x.shape, generator=g) * torch.rand(len(b), 1, 1, 1, 1, generator=g)
                loss = reader_loss(reader, x, [y[b] for y in targets], t)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
                opt.step()
                sched.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return reader.eval()


@torch.no_grad()
def reader_accuracy(reader: SceneReader, z: Tensor, scenes: list, batch: int = 256, t: float | None = None,
                    seed: int = 0) -> dict[str, float]:
    """Share of clips read right: which colours are present (all 8 right), and each present
    object's shape, size, motion and speed; background; count. `t`: a noisy reader reads the clips
    at that noise level (noise drawn from `seed`)."""
    present, labels, background, count = stack_targets(scenes, reader.attributes)
    times = None if t is None else torch.full((len(z),), float(t))
    if times is not None:
        z = flow.interpolate(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)), times)
    obj, scene = zip(*(reader(z[i:i + batch], None if times is None else times[i:i + batch])
                       for i in range(0, len(z), batch)))
    parts, scene = split_logits(torch.cat(obj), reader.attributes), torch.cat(scene)
    there = labels[..., 0] != IGNORE
    out = {"colours": ((parts["present"] > 0).float() == present).all(-1).float().mean().item()}
    for k, name in enumerate(reader.attributes):
        out[name] = (parts[name].argmax(-1)[there] == labels[..., k][there]).float().mean().item()
    out["background"] = (scene[:, :len(BACKGROUNDS)].argmax(-1) == background).float().mean().item()
    out["count"] = (scene[:, len(BACKGROUNDS):].argmax(-1) == count).float().mean().item()
    return out


CLAIMS = ["present", *ATTRIBUTES, "background", "count"]  # what a prompt's claims are about


@torch.no_grad()
def claim_terms(reader: SceneReader, z: Tensor, prompts: list[str]) -> list[dict[str, list[Tensor]] | None]:
    """Per prompt, log p of each of its claims under the reading of z, by what the claim is about
    (CLAIMS: an object's presence, shape, size, motion, speed; the background; the count); None for
    a prompt the world's parser does not read. An object without a named colour takes the colour
    whose claims are likeliest."""
    return _claim_terms(reader, z, prompts)


def claim_log_prob(reader: SceneReader, z: Tensor, prompts: list[str], t: Tensor | None = None) -> Tensor:
    """(B,): log p of all the prompt's claims under the reading of z, summed (0 for a prompt the
    world's parser does not read); differentiable in z, for guidance by the reader. A noisy reader
    reads z as x_t at the noise levels t (B,)."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused inference path has no gradient in z
    try:
        terms = _claim_terms(reader, z, prompts, t)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return torch.stack([all_claims(said).sum() if said is not None else z.new_zeros(()) for said in terms])


def all_claims(terms: dict[str, list[Tensor]]) -> Tensor:
    """(n,): one prompt's claim terms (claim_terms' dict), every kind, in CLAIMS order."""
    return torch.stack([v for name in CLAIMS for v in terms[name]])


def _claim_terms(reader: SceneReader, z: Tensor, prompts: list[str],
                 t: Tensor | None = None) -> list[dict[str, list[Tensor]] | None]:
    obj, scene = reader(z, t)
    readings = reader.attributes
    parts = split_logits(obj, readings)
    present = F.logsigmoid(parts["present"])  # (B, 8)
    attr = {name: F.log_softmax(parts[name], -1) for name in readings}  # (B, 8, n)
    background = F.log_softmax(scene[:, :len(BACKGROUNDS)], -1)
    count = F.log_softmax(scene[:, len(BACKGROUNDS):], -1)
    out = []
    for i, text in enumerate(prompts):
        try:
            claims = parse_prompt(text)
        except PromptError:
            out.append(None)
            continue
        if not 1 <= len(claims.objects) <= NUM_COUNTS:
            out.append(None)
            continue
        terms = {name: [] for name in CLAIMS}
        terms["count"].append(count[i, len(claims.objects) - 1])
        if claims.background:
            terms["background"].append(background[i, BACKGROUNDS.index(claims.background)])
        for o in claims.objects:
            said = {name: getattr(o, name) for name in ATTRIBUTES if getattr(o, name) is not None}
            options = []  # per candidate colour: the object's claim terms
            for k in (range(len(COLOURS)) if o.colour is None else [COLOURS.index(o.colour)]):
                options.append({"present": present[i, k],
                                **{name: attr[name][i, k, readings[name].index(v)] for name, v in said.items()}})
            for name, v in max(options, key=lambda t: float(sum(t.values()).detach())).items():
                terms[name].append(v)
        out.append(terms)
    return out


def claim_features(reader: SceneReader, z: Tensor, prompts: list[str]) -> Tensor:
    """(B, 2): log p of the prompt's claims under the reading of z, summed and the lowest one
    (zeros for a prompt the world's parser does not read)."""
    out = torch.zeros(len(prompts), 2)
    for i, terms in enumerate(claim_terms(reader, z, prompts)):
        if terms is not None:
            t = all_claims(terms)
            out[i] = torch.stack([t.sum(), t.min()])
    return out


def attribute_features(reader: SceneReader, z: Tensor, prompts: list[str]) -> Tensor:
    """(B, len(CLAIMS)): per kind of claim, the lowest log p of the prompt's claims of that kind
    (0 where the prompt makes none, or is not read); scripts/picker_probe.py measures these as
    verifier features."""
    out = torch.zeros(len(prompts), len(CLAIMS))
    for i, terms in enumerate(claim_terms(reader, z, prompts)):
        if terms is not None:
            out[i] = torch.tensor([float(min(terms[n])) if terms[n] else 0.0 for n in CLAIMS])
    return out


def save_reader(reader: SceneReader, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(to_dict(reader.cfg), indent=1))
    save_file({k: v.detach().cpu().contiguous() for k, v in reader.state_dict().items()}, folder / WEIGHTS_NAME)
    return folder


def load_reader(folder: str | Path) -> SceneReader:
    folder = Path(folder)
    reader = SceneReader(from_dict(ReaderConfig, json.loads((folder / CONFIG_NAME).read_text()), "reader"))
    reader.load_state_dict(load_file(folder / WEIGHTS_NAME))
    return reader.eval()
