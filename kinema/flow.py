"""Rectified flow: the path, the target, the time sampling, the sampler and guidance, in one place.

Convention (SD3, Open-Sora 2.0): t = 0 is data, t = 1 is noise, and the path between them is a
straight line (rectified flow, Liu et al. 2022; flow matching, Lipman et al. 2022):

    x_t = (1 - t) * x0 + t * noise          d x_t / d t = noise - x0 = v

The network learns v(x_t, t, text) with a plain MSE; sampling integrates dx/dt = v from t = 1
(pure noise) down to t = 0 with Euler steps, or, with eta > 0, steps that draw a share of the
noise afresh (`sampler_step`). The layout follows minRF (cloneofsimo/minRF).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x_t, t of shape (B,)) -> v, same shape as x_t


def _expand(t: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, ...) so a per-sample time broadcasts over a sample of any rank."""
    return t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)  # (B, 1, ..., 1)


def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) * x0 + t * noise, with t of shape (B,)."""
    t = _expand(t, x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """d x_t / d t along the straight path: constant in t."""
    return noise - x0


def timestep_shift_for(num_tokens: int, base_tokens: int = 256, max_shift: float = 12.0) -> float:
    """The shift alpha for a sample of `num_tokens` transformer tokens (frames included).

    More tokens carry more redundant signal, so at a given t the image is less destroyed; shifting
    t towards 1 (more noise) restores the signal-to-noise balance the model saw at the base size.
    SD3 (Esser et al. 2024, sec. 5.3.2) derives alpha = sqrt(m / n) for m tokens against a base
    of n. Open-Sora 2.0 (`get_schedule`) applies the same idea to video: a spatial factor times
    sqrt(latent frames), so a longer clip gets a larger shift; at 256 px both rules agree
    (alpha = sqrt(frames)). max_shift = 12 is about Open-Sora 2.0's largest setting
    (768 px, 129 frames -> 2.07 * sqrt(33) = 11.9).
    """
    if num_tokens < 1 or base_tokens < 1:
        raise ValueError(f"num_tokens and base_tokens must be >= 1, got {num_tokens} and {base_tokens}")
    return float(min(max(math.sqrt(num_tokens / base_tokens), 1.0), max_shift))


def shift_time(t: Tensor, alpha: float) -> Tensor:
    """t -> alpha t / (1 + (alpha - 1) t): a monotone map of [0, 1] onto itself, t=0 and 1 fixed."""
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


def unshift_time(t: Tensor, alpha: float) -> Tensor:
    """The inverse of shift_time: t -> t / (alpha - (alpha - 1) t)."""
    if alpha == 1.0:
        return t
    return t / (alpha - (alpha - 1) * t)


def sample_timesteps(batch: int, generator: torch.Generator | None = None, shift: float = 1.0,
                     mean: float = 0.0, std: float = 1.0, device: torch.device | str | None = None,
                     t_range: tuple[float, float] | None = None) -> Tensor:
    """(B,) training times: logit-normal (SD3 sec. 3.1, 'rf/lognorm(0.00, 1.00)'), then shifted.

    The logit-normal puts most samples at mid t, where the velocity is hardest to predict, and few
    at the ends, where it is nearly x0 or the noise. Drawn on the generator's device from the
    given generator, so a seeded training run sees the same times.

    t_range = (lo, hi): the same distribution truncated to lo <= t <= hi, drawn exactly by inverting
    its CDF (a noise-level expert trains on its own range only: eDiff-I, Wan 2.2's high- and low-noise
    experts). None draws as before, number for number.
    """
    gen_device = generator.device if generator is not None else "cpu"
    if t_range is None:
        u = torch.randn(batch, generator=generator, device=gen_device) * std + mean
    else:
        lo, hi = check_time_range(t_range)
        ends = unshift_time(torch.tensor([lo, hi], dtype=torch.float64), shift)
        p_lo, p_hi = torch.special.ndtr((torch.logit(ends) - mean) / std).tolist()  # logit(0) = -inf: p = 0
        p = p_lo + (p_hi - p_lo) * torch.rand(batch, generator=generator, device=gen_device, dtype=torch.float64)
        u = (torch.special.ndtri(p) * std + mean).float()
    t = shift_time(torch.sigmoid(u), shift)
    if t_range is not None:
        t = t.clamp(*t_range)  # float rounding at the ends
    return t.to(device) if device is not None else t


def check_time_range(t_range) -> tuple[float, float]:
    """(lo, hi) with 0 <= lo < hi <= 1, or a ValueError that says what is wrong."""
    try:
        lo, hi = (float(v) for v in t_range)
    except (TypeError, ValueError):
        raise ValueError(f"a time range is two numbers [lo, hi], got {t_range!r}") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"a time range needs 0 <= lo < hi <= 1, got [{lo}, {hi}]")
    return lo, hi


def flow_loss(pred: Tensor, x0: Tensor, noise: Tensor) -> Tensor:
    """MSE to the velocity target, mean over every element; in fp32 so a bf16 prediction's loss
    is not rounded to 8 bits of mantissa."""
    return F.mse_loss(pred.float(), velocity_target(x0, noise).float())


def squared_errors(pred: Tensor, x0: Tensor, noise: Tensor) -> Tensor:
    """Each element's squared error to the velocity target, in fp32 (the latent's shape)."""
    return (pred.float() - velocity_target(x0, noise).float()) ** 2


def weighted_flow_loss(pred: Tensor, x0: Tensor, noise: Tensor, weight: Tensor) -> Tensor:
    """flow_loss with each element's squared error weighted: sum(w e^2) / sum(w), w broadcast to
    the latent's shape (e.g. (B, 1, T', H', W') to weigh spacetime cells). Uniform weights give
    flow_loss; in fp32."""
    err = squared_errors(pred, x0, noise)
    w = weight.float().expand_as(err)
    return (w * err).sum() / w.sum().clamp_min(1e-12)


def flow_errors(pred: Tensor, x0: Tensor, noise: Tensor) -> Tensor:
    """(B,) each sample's mean squared velocity error (flow_loss per sample, in fp32)."""
    return squared_errors(pred, x0, noise).flatten(1).mean(1)


def flow_dpo_loss(err_w: Tensor, err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor,
                  beta: float) -> tuple[Tensor, Tensor]:
    """Diffusion-DPO (Wallace et al. 2023) on the flow's velocity errors (Flow-DPO: Liu et al. 2025,
    "Improving Video Generation with Human Feedback"): for a preferred sample w and a rejected one l of
    one prompt, noised with the same noise to the same t,

        loss = -log sigmoid(-beta / 2 * ((err_w - ref_err_w) - (err_l - ref_err_l)))

    where err is the model's flow error (`flow_errors`) and ref_err a frozen reference model's. It
    lowers the model's error on w relative to the reference's more than on l: the implicit reward
    of w over l grows, while whatever both share (how the model draws) gives no gradient. Returns
    (the mean loss, (B,) the implicit margins -((err_w - ref_err_w) - (err_l - ref_err_l)), > 0 when
    w is already the likelier)."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    margin = -((err_w - ref_err_w) - (err_l - ref_err_l))  # (B,)
    return -F.logsigmoid(0.5 * beta * margin).mean(), margin.detach()


def sampling_timesteps(steps: int, shift: float = 1.0) -> Tensor:
    """(steps + 1,) times from 1 (noise) to 0 (data), uniform then shifted (more steps at high noise)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, guidance_scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) on the velocity:
    v_uncond + s (v_cond - v_uncond), written around v_cond so that s = 1 gives v_cond bit for bit."""
    return v_cond + (guidance_scale - 1.0) * (v_cond - v_uncond)


def _cat(a: Any, b: Any) -> Any:
    """Concatenate two conditionings along the batch: tensors, or dicts / tuples of tensors."""
    if isinstance(a, Tensor):
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"cond and uncond must match past the batch dim to be batched together, "
                             f"got {tuple(a.shape)} and {tuple(b.shape)} (pad both prompts to one length)")
        return torch.cat([a, b])
    if isinstance(a, dict):
        return {k: _cat(a[k], b[k]) for k in a}
    if isinstance(a, (tuple, list)):
        return type(a)(_cat(x, y) for x, y in zip(a, b))
    if a is None:
        return None
    raise TypeError(f"cannot batch a conditioning of type {type(a).__name__}")


def _call(model_fn: Callable, x: Tensor, t: Tensor, cond: Any) -> Tensor:
    if isinstance(cond, dict):
        return model_fn(x, t, **cond)
    if isinstance(cond, (tuple, list)):
        return model_fn(x, t, *cond)
    return model_fn(x, t, cond)


def guided_velocity_fn(model_fn: Callable, cond: Any, uncond: Any, guidance_scale: float) -> VelocityFn:
    """A velocity_fn(x, t) for `euler_sample` that applies classifier-free guidance.

    model_fn(x, t, *cond) (tuple), model_fn(x, t, **cond) (dict) or model_fn(x, t, cond) (tensor).
    With guidance_scale != 1, cond and uncond run in ONE forward pass of batch 2B (as diffusers
    does): one launch of the big matmuls instead of two. With guidance_scale == 1 the uncond pass
    is skipped, since it would be multiplied by zero.
    """
    if guidance_scale == 1.0:
        return lambda x, t: _call(model_fn, x, t, cond)
    both = _cat(cond, uncond)

    def velocity_fn(x: Tensor, t: Tensor) -> Tensor:
        v = _call(model_fn, torch.cat([x, x]), torch.cat([t, t]), both)  # (2B, ...)
        v_cond, v_uncond = v.chunk(2)  # (B, ...) each
        return cfg_combine(v_cond, v_uncond, guidance_scale)

    return velocity_fn


GUIDANCE_MODES = ("clean", "noisy", "through")  # what a guiding classifier reads: see classifier_guided_velocity_fn


def classifier_guided_velocity_fn(velocity_fn: VelocityFn, log_prob: Callable[[Tensor, Tensor], Tensor],
                                  scale: float, t_range: tuple[float, float] = (0.0, 1.0),
                                  mode: str = "clean") -> VelocityFn:
    """Classifier guidance (Dhariwal & Nichol 2021) on the velocity, at noise levels t in `t_range`.

    `log_prob(sample, t)` maps (B, ...) samples and (B,) times to (B,) log p(claims | sample), with
    a gradient in the sample. v = eps - x0 with x0 = (x - t eps) / (1 - t) is v = (eps - x) / (1 - t),
    and eps = -t * score, so adding d log p / d x_t to the score gives v' = v - t / (1 - t) d log p / d x_t.
    - "noisy": a classifier of x_t itself, trained along the path:
      v' = v - scale * t / (1 - t) * d log p(claims | x_t) / d x_t.
    - "through": a classifier of clean samples read on the clean estimate x0(x_t) = x_t - t v(x_t),
      its gradient taken through the denoiser (universal guidance, Bansal et al. 2023; DPS):
      v' = v - scale * t / (1 - t) * d log p(claims | x0(x_t)) / d x_t. One backward pass of the
      denoiser a guided step (velocity_fn must be differentiable).
    - "clean": the same classifier on the clean estimate, the gradient stopped at x0 (no backward
      through the denoiser): v' = v - scale * d log p(claims | x0) / d x0, moving x0 by scale * t.
    The t / (1 - t) modes need a range that ends below t = 1. Outside `t_range`, at scale 0, and where
    log_prob has no gradient (nothing to read), velocity_fn's v is returned unchanged."""
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"classifier guidance mode must be one of {GUIDANCE_MODES}, got {mode!r}")
    lo, hi = check_time_range(t_range)
    if mode != "clean" and hi >= 1.0:
        raise ValueError(f"{mode} classifier guidance weighs the gradient by t / (1 - t): its range must end "
                         "below t = 1")

    def guided(x: Tensor, t: Tensor) -> Tensor:
        tt = float(t[0])
        if scale == 0.0 or not lo <= tt <= hi:
            return velocity_fn(x, t)
        if mode == "through":  # the denoiser's pass is part of the graph
            with torch.enable_grad():
                at = x.detach().requires_grad_(True)
                v = velocity_fn(at, t)
                lp = log_prob(at - _expand(t, at) * v, t)
        else:  # the denoiser runs as usual; only the classifier's pass is differentiated
            v = velocity_fn(x, t)
            with torch.enable_grad():
                at = (x if mode == "noisy" else x - _expand(t, x) * v).detach().requires_grad_(True)
                lp = log_prob(at, t)
        v = v.detach()
        if not lp.requires_grad:  # nothing to read (no claims): no push
            return v
        with torch.enable_grad():
            grad, = torch.autograd.grad(lp.sum(), at)
        weight = scale if mode == "clean" else scale * tt / (1.0 - tt)
        return v - weight * grad.to(v.dtype)

    return guided


def resample_particles(x: Tensor, log_weights: Tensor, groups: int, generator: torch.Generator | None = None) -> Tensor:
    """Sequential Monte Carlo's resampling step (as in Feynman-Kac steering, Singhal et al. 2025):
    x (groups * K, ...) holds each group's K particles side by side; each group's particles are
    drawn anew, K times with replacement, with probability softmax(log_weights) within the group
    (multinomial, from `generator` on the CPU). A group whose weights are all equal has nothing to
    tell its particles apart: it keeps them as they are."""
    K = x.shape[0] // groups
    if K * groups != x.shape[0] or log_weights.shape != (x.shape[0],):
        raise ValueError(f"{x.shape[0]} particles and {tuple(log_weights.shape)} weights are not {groups} groups of K")
    lw = log_weights.detach().float().cpu().view(groups, K)
    pick = torch.multinomial(torch.softmax(lw, dim=1), K, replacement=True, generator=generator)  # (groups, K)
    level = (lw == lw[:, :1]).all(1)  # (groups,)
    pick[level] = torch.arange(K)
    index = (pick + K * torch.arange(groups)[:, None]).flatten()
    return x[index.to(x.device)]


def sampler_step(x: Tensor, v: Tensor, t: float, t_next: float, eta: float = 0.0,
                 fresh: Tensor | None = None) -> Tensor:
    """x at t_next < t from x at t and the velocity v there.

    eta = 0: the Euler step x + (t_next - t) * v. eta > 0: DDIM's eta (Song et al. 2021) on the
    straight path. v splits x into a clean part x0 = x - t v and its noise eps = x + (1 - t) v; the
    step lands at noise level t_next with a share of that noise drawn anew (`fresh`, N(0, I)):

        x_next = (1 - t_next) x0 + t_next (sqrt(1 - r^2) eps + r fresh),   r = eta * sigma / t_next

    sigma is the standard deviation of x at t_next given x at t and the clean sample (the path run
    forward from t_next to t is x_t = a x_t' + b z with a = (1 - t) / (1 - t_next), b^2 = t^2 - a^2
    t_next^2, so sigma = t_next b / t). eta = 1 is then DDPM's ancestral step, and, as in DDIM, every
    eta keeps the path's marginals as the steps shrink (tested on Gaussian data). The fresh draws let
    later steps correct what earlier ones got wrong."""
    if eta == 0.0 or t_next <= 0.0:
        return x + (t_next - t) * v
    a = (1.0 - t) / (1.0 - t_next)
    share = eta * math.sqrt(max(t * t - a * a * t_next * t_next, 0.0)) / t  # r = eta * sigma / t_next
    x0, eps = x - t * v, x + (1.0 - t) * v
    return (1.0 - t_next) * x0 + t_next * (math.sqrt(1.0 - share * share) * eps + share * fresh)


@torch.no_grad()
def euler_sample(velocity_fn: VelocityFn, noise: Tensor, steps: int, shift: float = 1.0,
                 progress: Any = None, start: float = 1.0, eta: float = 0.0,
                 generator: torch.Generator | None = None,
                 on_step: Callable[[Tensor, float], Tensor] | None = None) -> Tensor:
    """Integrate dx/dt = v from t=1 (noise) to t=0 with `steps` Euler steps; returns the x0 estimate.

    velocity_fn(x, t) gets t of shape (B,). `progress` is optional: an object with .update(n)
    (a tqdm bar) gets update(1) per step; any other callable gets progress(step, total).
    Exact for a straight path whose velocity is constant, which is what rectified flow learns.
    start < 1 (SDEdit): `noise` is x at t = start, and the steps are the grid's times below it.
    eta > 0: stochastic steps (`sampler_step`), their fresh noise drawn on the CPU from
    `generator` (the same draws on any device), after the draws that made `noise`.
    on_step(x, t_next) -> x, if given, sees each step's result and may replace it (diffusers'
    callback_on_step_end): e.g. resampling particles (`resample_particles`).
    """
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start must lie in [0, 1], got {start}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    ts = sampling_timesteps(steps, shift).tolist()
    if start < 1.0:
        ts = [start] + [t for t in ts if t < start - 1e-6]
    x = noise
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        v = velocity_fn(x, t_batch)
        fresh = None
        if eta > 0.0 and t_next > 0.0:
            fresh = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        x = sampler_step(x, v.to(x.dtype), t, t_next, eta, fresh)
        if on_step is not None:
            x = on_step(x, t_next)
        if hasattr(progress, "update"):
            progress.update(1)
        elif progress is not None:
            progress(i + 1, len(ts) - 1)
    return x
