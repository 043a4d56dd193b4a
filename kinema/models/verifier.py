"""A verifier: which of the sampler's candidate videos follows its prompt? (best-of-N)

The sampler often holds a passing video when its first one fails: on 100 two-object tuning
prompts, 68 of the pipeline's videos pass but at least one of four seeds passes for 92
(docs/default-model.md, session 29). The verifier picks among candidates with what the DiT itself
knows, read at a few fixed noise levels t_k with fixed noises e_k (the same for every candidate):

    x_k = (1 - t_k) z + t_k e_k                        (kinema/flow.py's path)
    L_c, L_u, L_s = |v(x_k, t_k, c) - (e_k - z)|^2    with c = the prompt, the empty prompt, and
                                                       the prompt with its two objects swapped
    h_k = the DiT's last hidden states under the prompt (the tokens the output layer reads),
          pooled over tokens: mean, max and standard deviation of each channel

Features: L_c, L_u, L_s and L_s - L_c per level, and the pooled h_k: (4 + 3 D) x levels numbers;
with `reader = true`, 2 more from a scene reader trained on the world's clips (kinema/models/
reader.py): log p of the prompt's claims under its reading of z, summed and the lowest. The DiT
scores how its own prediction fits the prompt; the reader reads the clip as a captioner would, and
each catches failures the other misses (docs/default-model.md, session 30).
Head: standardised features, then one linear layer, a logistic regression fitted on the model's
own samples labelled by the shapes world's judge (scripts/train_verifier.py); the ridge applies to
the DiT's many features, not to the reader's two. The judge is the labeller, as human raters are
for a reward model; the verifier sees latents and prompts only.

The head is tied to the DiT it was fitted on (its features are that DiT's): `VerifierConfig`
keeps the DiT weights' SHA-256 (`dit_fingerprint`), and a pipeline ignores, with a warning, a
verifier fitted on another DiT.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .. import flow
from ..autoencoder.vae import CONFIG_NAME, WEIGHTS_NAME  # every part folder's file names
from ..config import from_dict, to_dict
from .loading import skip_init
from .reader import ReaderConfig, SceneReader, claim_features


@dataclass
class VerifierConfig:
    levels: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])  # noise levels t_k
    noise_seed: int = 0  # the fixed noises e_k
    hidden: bool = True  # the pooled hidden states; False: the 4 losses per level alone
    l2: float = 0.3  # ridge on the head's DiT weights (standardised features), mean log-loss + l2/2 |w|^2
    reader: bool = False  # 2 more features from a scene reader (kept in the verifier's weights file)
    dit_sha256: str = ""  # dit_fingerprint() of the DiT the features were read from

    def __post_init__(self):
        if not self.levels or any(not 0.0 < t < 1.0 for t in self.levels):
            raise ValueError(f"verifier levels are noise levels in (0, 1), got {self.levels}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")


NUM_READER = 2  # claim_features: summed and lowest log p


def num_features(cfg: VerifierConfig, hidden_size: int) -> int:
    return len(cfg.levels) * (4 + (3 * hidden_size if cfg.hidden else 0)) + (NUM_READER if cfg.reader else 0)



def dit_fingerprint(dit: nn.Module) -> str:
    """SHA-256 of a DiT's weights as loaded (fp32 values, in name order): the same for the fp16
    file and the fp32 module it loads into, different for any other weights."""
    h = hashlib.sha256()
    for name, v in sorted(dit.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def verifier_features(dit: nn.Module, encode, z: Tensor, prompts: list[str], swapped: list[str],
                      cfg: VerifierConfig, reader: SceneReader | None = None) -> Tensor:
    """(B, F) features of latents z (B, C, T, h, w) under their prompts. `encode(texts)` returns the
    text encoder's (states, mask); `swapped[i]` is prompt i with its objects swapped (the prompt
    itself where there is no swap). One batched DiT pass of 3 x B x levels samples (2 x when no
    prompt has a swap: L_s is then L_c), and with
    `cfg.reader` one pass of the reader (then needed)."""
    if cfg.reader and reader is None:
        raise ValueError("this verifier's features include a scene reader's: pass reader=")
    B, K = z.shape[0], len(cfg.levels)
    dtype = next(dit.parameters()).dtype
    t = torch.tensor(cfg.levels, dtype=torch.float32, device=z.device)
    noise = torch.randn((K, *z.shape[1:]), generator=torch.Generator().manual_seed(cfg.noise_seed)).to(z.device)
    zk = z.float().unsqueeze(1).expand(B, K, *z.shape[1:]).reshape(B * K, *z.shape[1:])  # (B K, C, T, h, w)
    ek = noise.repeat(B, *[1] * (noise.ndim - 1))
    tk = t.repeat(B)
    x, target = flow.interpolate(zk, ek, tk), flow.velocity_target(zk, ek)
    # with no prompt to swap, L_s is L_c (the same pass): the DiT runs the prompt and the empty one
    branches = [prompts, [""] * B] + ([swapped] if list(swapped) != list(prompts) else [])
    n = len(branches)
    states, mask = encode([p for texts in branches for p in texts for _ in range(K)])  # (n B K, L, D)
    kept = {}
    hook = dit.final.register_forward_pre_hook(lambda m, a: kept.__setitem__("h", a[0]))
    try:
        v = dit(torch.cat([x] * n).to(dtype), torch.cat([tk] * n), states.to(z.device), mask.to(z.device))
    finally:
        hook.remove()
    err = ((v.float() - torch.cat([target] * n)) ** 2).flatten(1).mean(1).view(n, B, K)  # L_c, L_u (, L_s)
    loss_s = err[2] if n == 3 else err[0]
    parts = [err[0], err[1], loss_s, loss_s - err[0]]  # 4 x (B, K)
    if cfg.hidden:
        h = kept["h"][: B * K].float().view(B, K, -1, kept["h"].shape[-1])  # (B, K, N, D), the prompt's
        parts += [h.mean(2).flatten(1), h.amax(2).flatten(1), h.std(2).flatten(1)]  # 3 x (B, K D)
    if cfg.reader:
        parts.append(claim_features(reader, z, prompts).to(z.device))  # (B, 2)
    return torch.cat(parts, dim=1)  # (B, F)


class Verifier(nn.Module):
    """Logistic regression over standardised features: a higher score, a likelier pass."""

    def __init__(self, cfg: VerifierConfig, num_inputs: int, reader: SceneReader | None = None):
        super().__init__()
        if cfg.reader != (reader is not None):
            raise ValueError(f"VerifierConfig.reader is {cfg.reader} but a reader was{'' if reader else ' not'} given")
        self.cfg = cfg
        self.reader = reader  # its weights are saved with the head's, as reader.*
        self.register_buffer("mean", torch.zeros(num_inputs))
        self.register_buffer("std", torch.ones(num_inputs))
        self.head = nn.Linear(num_inputs, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.head((features.float() - self.mean) / self.std).squeeze(-1)  # (B,) logits

    def fits(self, dit: nn.Module) -> bool:
        """Was this head fitted on `dit`'s features (the same weights, by fingerprint)?"""
        return self.cfg.dit_sha256 == dit_fingerprint(dit)


def fit_verifier(features: Tensor, passed: Tensor, cfg: VerifierConfig, max_iter: int = 500,
                 reader: SceneReader | None = None) -> Verifier:
    """Fit the head on (N, F) features and N pass labels: L-BFGS on mean log-loss + l2/2 |w|^2
    (the reader's two weights, when cfg.reader, unpenalised: two numbers cannot overfit 1,000s)."""
    if features.ndim != 2 or len(features) != len(passed):
        raise ValueError(f"need (N, F) features and N labels, got {tuple(features.shape)} and {len(passed)}")
    y = passed.float()
    if y.min() == y.max():
        raise ValueError("every sample has the same label: the verifier needs passing and failing videos")
    model = Verifier(cfg, features.shape[1], reader)
    penalised = torch.ones(features.shape[1])
    if cfg.reader:
        penalised[-NUM_READER:] = 0
    model.mean.copy_(features.float().mean(0))
    model.std.copy_(features.float().std(0).clamp_min(1e-6))
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    opt = torch.optim.LBFGS(model.head.parameters(), lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(features), y)
        loss = loss + 0.5 * cfg.l2 * (penalised * model.head.weight.pow(2)).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return model.eval()


def save_verifier(model: Verifier, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"reader_config": to_dict(model.reader.cfg)} if model.reader is not None else {}
    (folder / CONFIG_NAME).write_text(json.dumps({**to_dict(model.cfg), "num_inputs": model.mean.numel(), **extra},
                                                 indent=1))
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS_NAME)
    return folder


def load_verifier(folder: str | Path) -> Verifier:
    folder = Path(folder)
    data = json.loads((folder / CONFIG_NAME).read_text())
    n, reader_cfg = data.pop("num_inputs"), data.pop("reader_config", None)
    with skip_init():  # every tensor comes from the file (strict load)
        reader = SceneReader(from_dict(ReaderConfig, reader_cfg, "verifier.reader_config")) if reader_cfg else None
        model = Verifier(from_dict(VerifierConfig, data, "verifier"), n, reader)
    model.load_state_dict(load_file(folder / WEIGHTS_NAME))
    return model.eval()
