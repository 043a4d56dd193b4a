"""Cross-attention vs joint (MMDiT) text conditioning, same task, same steps, matched size.

The task is synthetic but shaped like text-to-video latents: a caption names a colour and a
direction ("red ... left", in any order, among filler words, padded to a fixed length); the
latent (C, T, H, W) is a Gaussian blob whose channel vector is the colour's and which moves in
that direction from a random start. Text states are rows of a fixed random embedding table, so
the only way to predict the velocity well is to read the caption.

Three models, all trained on the same batches, noise and times from one seed:
  cross        conditioning="cross", depth D_c
  joint-param  conditioning="joint", depth chosen to match cross's parameter count
  joint-flops  conditioning="joint", depth chosen to match cross's forward FLOPs per sample
(joint blocks carry a second set of weights for the text stream, so at one width they cannot
match both). Reported: training loss (mean of the last 10% of steps), eval loss on a fixed
set (fixed noise and times), the same with every caption swapped for another one (the gap is how
much the model reads the text), and whether 8-step Euler samples show the captioned colour and
direction.

    python benchmarks/conditioning_compare.py --steps 300 --seed 0 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from kinema import flow
from kinema.models.dit import DiT, DiTConfig, forward_flops

COLOURS, DIRECTIONS, FILLERS = 6, 4, 10
DIRS = torch.tensor([[0.0, -1.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])  # (row, col) per frame: left right up down


class Task:
    """Caption -> latent generator; every table is fixed by the seed."""

    def __init__(self, seed: int, channels=4, frames=3, size=12, text_dim=64, max_len=8):
        g = torch.Generator().manual_seed(seed)
        self.C, self.T, self.S, self.max_len = channels, frames, size, max_len
        vocab = COLOURS + DIRECTIONS + FILLERS
        self.embed = torch.randn(vocab, text_dim, generator=g)  # (V, E) text "encoder" states
        colours = torch.randn(COLOURS, channels, generator=g)
        self.colours = colours / colours.norm(dim=1, keepdim=True)  # (K, C)
        self.scale = 1.0
        self.scale = 1.0 / self.batch(256, g)[0].std().item()  # unit std, as SD's latent scale factor

    def batch(self, n: int, g: torch.Generator):
        colour = torch.randint(COLOURS, (n,), generator=g)
        direction = torch.randint(DIRECTIONS, (n,), generator=g)
        # caption: colour and direction words in random order among 0-4 fillers, then padding
        tokens = torch.zeros(n, self.max_len, dtype=torch.long)
        mask = torch.zeros(n, self.max_len, dtype=torch.bool)
        for i in range(n):
            words = [colour[i].item(), COLOURS + direction[i].item()]
            words += (COLOURS + DIRECTIONS + torch.randint(FILLERS, (int(torch.randint(5, (1,), generator=g)),),
                                                         generator=g)).tolist()
            order = torch.randperm(len(words), generator=g).tolist()
            tokens[i, :len(words)] = torch.tensor([words[j] for j in order])
            mask[i, :len(words)] = True
        text = self.embed[tokens] * mask.unsqueeze(-1)  # (n, L, E)
        # latent: a blob moving 2 cells a frame from a random start near the middle
        start = (self.S / 2) + (torch.rand(n, 2, generator=g) - 0.5) * (self.S / 4)  # (n, 2)
        frame = torch.arange(self.T, dtype=torch.float32)
        centre = start[:, None, :] + 2.0 * frame[None, :, None] * DIRS[direction][:, None, :]  # (n, T, 2)
        grid = torch.arange(self.S, dtype=torch.float32)
        d2 = ((grid.view(1, 1, -1, 1) - centre[..., 0, None, None]) ** 2
              + (grid.view(1, 1, 1, -1) - centre[..., 1, None, None]) ** 2)  # (n, T, S, S)
        blob = torch.exp(-d2 / (2 * 1.5 ** 2))  # (n, T, S, S)
        x = self.colours[colour][:, :, None, None, None] * blob[:, None]  # (n, C, T, S, S)
        x = x + 0.02 * torch.randn(x.shape, generator=g)
        return self.scale * x, text, mask, colour, direction

    def read(self, x: torch.Tensor):
        """Colour and direction a latent shows: nearest colour vector; sign of the centroid's path."""
        energy = x.pow(2).sum(1)  # (n, T, S, S)
        w = energy / energy.sum(dim=(2, 3), keepdim=True).clamp_min(1e-8)
        grid = torch.arange(self.S, dtype=torch.float32)
        rows = (w.sum(3) * grid).sum(2)  # (n, T)
        cols = (w.sum(2) * grid).sum(2)  # (n, T)
        motion = torch.stack([rows[:, -1] - rows[:, 0], cols[:, -1] - cols[:, 0]], dim=1)  # (n, 2)
        direction = (motion @ DIRS.T).argmax(1)
        vec = (x * w[:, None]).sum(dim=(2, 3, 4))  # (n, C) blob-weighted channel vector
        colour = (torch.nn.functional.normalize(vec, dim=1) @ self.colours.T).argmax(1)
        return colour, direction


def train_one(name: str, cfg: DiTConfig, task: Task, steps: int, batch: int, seed: int, lr: float) -> dict:
    torch.manual_seed(seed)
    model = DiT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    g = torch.Generator().manual_seed(seed + 1)  # the same batches, noise and times for every model
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        x0, text, mask, _, _ = task.batch(batch, g)
        noise = torch.randn(x0.shape, generator=g)
        t = flow.sample_timesteps(batch, g)
        loss = flow.flow_loss(model(flow.interpolate(x0, noise, t), t, text, mask), x0, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    wall = time.perf_counter() - t0
    model.eval()

    ge = torch.Generator().manual_seed(seed + 2)  # one eval set for every model
    n = 96
    x0, text, mask, colour, direction = task.batch(n, ge)
    noise = torch.randn(x0.shape, generator=ge)
    t = (torch.arange(n) + 0.5) / n  # stratified times cover the whole path
    other = (torch.arange(n) + 1) % n  # the next sample's caption, a wrong one ~5/6 of the time
    with torch.no_grad():
        xt = flow.interpolate(x0, noise, t)
        eval_loss = flow.flow_loss(model(xt, t, text, mask), x0, noise).item()
        swapped = flow.flow_loss(model(xt, t, text[other], mask[other]), x0, noise).item()
        sample = flow.euler_sample(lambda x, tt: model(x, tt, text, mask), noise, steps=8)
    got_colour, got_dir = task.read(sample)
    tail = losses[-max(1, steps // 10):]
    return dict(name=name, conditioning=cfg.conditioning, depth=cfg.depth, params=model.num_params(),
                fwd_mflops_per_sample=forward_flops(cfg, (task.T, task.S, task.S), task.max_len) / 1e6,
                train_loss=sum(tail) / len(tail), eval_loss=eval_loss, eval_loss_swapped_text=swapped,
                colour_acc=(got_colour == colour).float().mean().item(),
                direction_acc=(got_dir == direction).float().mean().item(), wall_s=wall)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--cross-depth", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves a core for others)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    task = Task(args.seed)
    base = dict(in_channels=task.C, patch_size=(1, 2, 2), hidden_size=args.hidden, num_heads=args.hidden // 32,
                text_dim=task.embed.shape[1])
    latent, L = (task.T, task.S, task.S), task.max_len

    def size(mode, depth):
        cfg = DiTConfig(**base, depth=depth, conditioning=mode)
        with torch.device("meta"):
            return DiT(cfg).num_params(), forward_flops(cfg, latent, L)

    cross_params, cross_flops = size("cross", args.cross_depth)
    depths = range(1, 3 * args.cross_depth)
    joint_param_depth = min(depths, key=lambda d: abs(size("joint", d)[0] - cross_params))
    joint_flops_depth = min(depths, key=lambda d: abs(size("joint", d)[1] - cross_flops))
    runs = [("cross", "cross", args.cross_depth), ("joint-param", "joint", joint_param_depth),
            ("joint-flops", "joint", joint_flops_depth)]

    results = []
    for name, mode, depth in runs:
        cfg = DiTConfig(**base, depth=depth, conditioning=mode)
        r = train_one(name, cfg, task, args.steps, args.batch, args.seed, args.lr)
        results.append(r)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True)

    print(f"\nsteps={args.steps} batch={args.batch} seed={args.seed} hidden={args.hidden} "
          f"latent (C,T,H,W)=({task.C}, {task.T}, {task.S}, {task.S}) text_len={L} threads={args.threads}")
    print("| model | depth | params | fwd MFLOPs/sample | train loss | eval loss | eval loss, swapped text "
          "| colour acc | direction acc | wall s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['name']} | {r['depth']} | {r['params'] / 1e6:.2f}M | {r['fwd_mflops_per_sample']:.0f} "
              f"| {r['train_loss']:.4f} | {r['eval_loss']:.4f} | {r['eval_loss_swapped_text']:.4f} "
              f"| {r['colour_acc']:.2f} | {r['direction_acc']:.2f} | {r['wall_s']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(args=vars(args), results=results), fh, indent=2)
    return results


if __name__ == "__main__":
    main()
