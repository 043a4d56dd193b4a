"""kinema.flow: the path, the target, time sampling and shift, the Euler sampler, guidance."""
import pytest
import torch

from kinema import flow


def _pair(seed=0, shape=(3, 4, 2, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_interpolate_endpoints_and_midpoint():
    x0, noise = _pair()
    B = x0.shape[0]
    assert torch.equal(flow.interpolate(x0, noise, torch.zeros(B)), x0)
    assert torch.equal(flow.interpolate(x0, noise, torch.ones(B)), noise)
    mid = flow.interpolate(x0, noise, torch.full((B,), 0.5))
    assert torch.allclose(mid, (x0 + noise) / 2)
    t = torch.tensor([0.0, 0.3, 1.0])  # per-sample times broadcast over the sample
    xt = flow.interpolate(x0, noise, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], noise[2])


def test_velocity_target_is_the_time_derivative():
    x0, noise = _pair(1)
    B = x0.shape[0]
    t = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64)
    x0, noise = x0.double(), noise.double()
    h = 1e-6
    deriv = (flow.interpolate(x0, noise, t + h) - flow.interpolate(x0, noise, t - h)) / (2 * h)
    assert torch.allclose(deriv, flow.velocity_target(x0, noise), atol=1e-8)
    # and the path is straight: x_t + (1 - t) v lands on the noise exactly
    xt = flow.interpolate(x0, noise, t)
    assert torch.allclose(xt + (1 - t).view(B, 1, 1, 1, 1) * flow.velocity_target(x0, noise), noise)


def test_shift_time_identity_monotone_and_endpoints():
    t = torch.linspace(0, 1, 101)
    assert torch.equal(flow.shift_time(t, 1.0), t)
    for alpha in (0.5, 2.0, 3.0, 8.0):
        s = flow.shift_time(t, alpha)
        assert (s.diff() > 0).all()
        assert s[0] == 0 and torch.isclose(s[-1], torch.tensor(1.0))
        if alpha > 1:
            assert (s[1:-1] > t[1:-1]).all()  # a shift > 1 spends more time at high noise


def test_timestep_shift_for_tokens_and_frames():
    assert flow.timestep_shift_for(256) == 1.0
    assert flow.timestep_shift_for(64) == 1.0  # clamped below at 1
    assert flow.timestep_shift_for(256 * 9) == pytest.approx(3.0)
    one_frame = flow.timestep_shift_for(16 * 16)
    many_frames = flow.timestep_shift_for(16 * 16 * 33)  # longer video, same size: larger shift
    assert many_frames > one_frame
    assert flow.timestep_shift_for(10**9, max_shift=5.0) == 5.0
    with pytest.raises(ValueError):
        flow.timestep_shift_for(0)


def test_sample_timesteps_logit_normal_median_shift_and_determinism():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_timesteps(20000, g)
    assert t.shape == (20000,) and (t > 0).all() and (t < 1).all()
    assert abs(t.median().item() - 0.5) < 0.02
    t3 = flow.sample_timesteps(20000, torch.Generator().manual_seed(0), shift=3.0)
    assert t3.median().item() > 0.7  # shift_time(0.5, 3) = 0.75
    a = flow.sample_timesteps(16, torch.Generator().manual_seed(7))
    b = flow.sample_timesteps(16, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, flow.sample_timesteps(16, torch.Generator().manual_seed(8)))


def test_flow_loss_zero_at_target():
    x0, noise = _pair(2)
    assert flow.flow_loss(noise - x0, x0, noise).item() == 0.0
    assert flow.flow_loss(torch.zeros_like(x0), x0, noise).item() == pytest.approx(((noise - x0) ** 2).mean().item())


def test_weighted_flow_loss_weighs_cells_and_is_flow_loss_when_uniform():
    x0, noise, pred = torch.randn(3, 2, 4, 5, 6, 6).unbind(0)
    plain = flow.flow_loss(pred, x0, noise).item()
    assert flow.weighted_flow_loss(pred, x0, noise, torch.full((2, 1, 5, 6, 6), 3.0)).item() == pytest.approx(plain, rel=1e-6)
    cell = torch.zeros(2, 1, 5, 6, 6)
    cell[1, 0, 2, 3, 4] = 1.0  # all weight on one spacetime cell: its error over the channels
    want = ((pred - (noise - x0))[1, :, 2, 3, 4] ** 2).mean().item()
    assert flow.weighted_flow_loss(pred, x0, noise, cell).item() == pytest.approx(want, rel=1e-6)
    heavy = 1 + 3 * cell  # weighing a badly predicted cell up raises the loss above the plain mean
    pred_bad = pred.clone()
    pred_bad[1, :, 2, 3, 4] += 10
    assert flow.weighted_flow_loss(pred_bad, x0, noise, heavy).item() > flow.flow_loss(pred_bad, x0, noise).item()


def test_flow_errors_are_the_per_sample_flow_loss():
    x0, noise = _pair(3)
    pred = torch.randn_like(x0)
    err = flow.flow_errors(pred, x0, noise)
    assert err.shape == (3,)
    assert err.mean().item() == pytest.approx(flow.flow_loss(pred, x0, noise).item(), rel=1e-6)
    assert err[1].item() == pytest.approx(flow.flow_loss(pred[1:2], x0[1:2], noise[1:2]).item(), rel=1e-6)


def test_flow_dpo_loss_value_margin_and_direction():
    e = torch.tensor([0.2, 0.5])
    loss, margin = flow.flow_dpo_loss(e, e, e, e, beta=100.0)  # the model is its reference: log 2, no margin
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert margin.tolist() == [0.0, 0.0]
    # w's error down 0.01 against the reference, l's up 0.01: margin 0.02, loss -log sigmoid(beta / 2 * 0.02)
    loss, margin = flow.flow_dpo_loss(e - 0.01, e + 0.01, e, e, beta=100.0)
    assert margin.tolist() == pytest.approx([0.02, 0.02])
    assert loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(1.0)).item(), rel=1e-5)
    # descending it pulls a parameter toward the winner's target and away from the loser's
    p = torch.zeros((), requires_grad=True)
    for _ in range(50):
        err_w, err_l = (p - 1.0) ** 2, (p + 1.0) ** 2
        loss, _ = flow.flow_dpo_loss(err_w[None], err_l[None], torch.ones(1), torch.ones(1), beta=1.0)
        loss.backward()
        with torch.no_grad():
            p -= 0.5 * p.grad
            p.grad = None
    assert p.item() > 0.5
    with pytest.raises(ValueError, match="beta"):
        flow.flow_dpo_loss(e, e, e, e, beta=0.0)


def test_sampling_timesteps():
    ts = flow.sampling_timesteps(10, shift=1.0)
    assert ts.shape == (11,) and ts[0] == 1.0 and ts[-1] == 0.0 and (ts.diff() < 0).all()
    shifted = flow.sampling_timesteps(10, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and (shifted[1:-1] > ts[1:-1]).all()


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (7, 1.0), (25, 3.0)])
def test_euler_recovers_x0_on_a_straight_path(steps, shift):
    x0, noise = _pair(3)
    calls = []

    def velocity_fn(x, t):
        calls.append(t)
        assert t.shape == (x.shape[0],)
        return flow.velocity_target(x0, noise)

    out = flow.euler_sample(velocity_fn, noise, steps, shift=shift)
    assert len(calls) == steps
    assert torch.allclose(out, x0, atol=1e-5)


def test_euler_from_a_later_start_integrates_only_the_grid_below_it():
    """start < 1 (SDEdit): x at t = start in, the grid's times below start stepped, x0 out."""
    x0, noise = _pair(3)
    grid = flow.sampling_timesteps(10, shift=3.0)
    for start in (0.9, 0.5, float(grid[4])):
        calls = []
        x_start = flow.interpolate(x0, noise, torch.full((3,), start))
        out = flow.euler_sample(lambda x, t: (calls.append(float(t[0])), noise - x0)[1], x_start, 10, shift=3.0,
                                start=start)
        expected = torch.tensor([start] + [float(t) for t in grid if t < start - 1e-6][:-1])  # float32, as t is
        assert calls == expected.tolist()
        assert torch.allclose(out, x0, atol=1e-5)
    assert torch.equal(flow.euler_sample(lambda x, t: noise - x0, noise, 5, start=0.0), noise)  # nothing to do
    with pytest.raises(ValueError, match="start"):
        flow.euler_sample(lambda x, t: x, noise, 5, start=1.5)


def _gaussian_velocity(s):
    """The exact velocity when x0 ~ N(0, s^2): v(x, t) = E[noise - x0 | x_t = x]."""
    def velocity_fn(x, t):
        t = t.view(-1, *[1] * (x.ndim - 1)).double()
        var = (1 - t) ** 2 * s * s + t * t
        return ((t - (1 - t) * s * s) / var * x).to(x.dtype)
    return velocity_fn


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_stochastic_steps_keep_the_paths_marginals(eta):
    """With the exact velocity and small steps, every eta turns N(0, 1) noise into N(0, s^2) data
    (at 30 steps eta = 1 ends 8 % narrow, Euler 4 %: ancestral steps converge more slowly)."""
    s = 0.5
    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = flow.euler_sample(_gaussian_velocity(s), noise, 200, eta=eta, generator=torch.Generator().manual_seed(1))
    assert abs(out.std().item() - s) < 0.015 and abs(out.mean().item()) < 0.015
    if eta == 1.0:  # re-noising all the noise at every step, not DDIM's shrinking share, would not keep them
        x, ts, g = noise.clone(), flow.sampling_timesteps(200).tolist(), torch.Generator().manual_seed(1)
        for t, tn in zip(ts[:-1], ts[1:]):
            v = _gaussian_velocity(s)(x, torch.full((x.shape[0],), t))
            x = (1 - tn) * (x - t * v) + tn * torch.randn(x.shape, generator=g, dtype=x.dtype)
        assert abs(x.std().item() - s) > 0.1


def test_stochastic_steps_are_euler_at_eta_0_land_on_a_known_x0_and_follow_the_generator():
    x0, noise = _pair(5)
    to_x0 = lambda x, t: (x - x0) / t.view(-1, 1, 1, 1, 1)  # noqa: E731  exact velocity for data = x0 alone
    for eta in (0.3, 1.0):  # x - t v is x0 at every step, whatever noise is drawn
        assert torch.allclose(flow.euler_sample(to_x0, noise, 6, eta=eta), x0, atol=1e-5)
    v = torch.randn_like(noise)
    assert torch.equal(flow.sampler_step(noise, v, 0.8, 0.6, 0.0), noise + (0.6 - 0.8) * v)
    field = lambda x, t: torch.sin(x) + t.view(-1, 1, 1, 1, 1)  # noqa: E731  any velocity field
    runs = [flow.euler_sample(field, noise, 8, eta=0.5, generator=torch.Generator().manual_seed(k)) for k in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])
    assert not torch.allclose(runs[0], flow.euler_sample(field, noise, 8))
    with pytest.raises(ValueError, match="eta"):
        flow.euler_sample(field, noise, 8, eta=1.5)


def test_euler_progress_callable_and_tqdm_like():
    x0, noise = _pair(4)
    seen = []
    flow.euler_sample(lambda x, t: noise - x0, noise, 4, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    flow.euler_sample(lambda x, t: noise - x0, noise, 5, progress=bar)
    assert bar.n == 5


def test_cfg_combine():
    c, u = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(flow.cfg_combine(c, u, 1.0), c)
    assert torch.allclose(flow.cfg_combine(c, u, 0.0), u, atol=1e-6)
    assert torch.allclose(flow.cfg_combine(c, u, 4.0), u + 4 * (c - u))


def test_guided_velocity_fn_batches_cond_and_uncond_in_one_call():
    calls = []

    def model_fn(x, t, text, text_mask):
        calls.append((x.shape[0], t.shape[0], text.shape[0], text_mask.shape[0]))
        # a velocity that depends on the text, per sample
        return x * text.mean(dim=(1, 2)).view(-1, 1, 1) + t.view(-1, 1, 1)

    B = 2
    x, t = torch.randn(B, 3, 4), torch.full((B,), 0.5)
    cond = {"text": torch.randn(B, 5, 8), "text_mask": torch.ones(B, 5, dtype=torch.bool)}
    uncond = {"text": torch.randn(B, 5, 8), "text_mask": torch.ones(B, 5, dtype=torch.bool)}
    v = flow.guided_velocity_fn(model_fn, cond, uncond, 5.0)(x, t)
    assert calls == [(2 * B, 2 * B, 2 * B, 2 * B)]
    expected = flow.cfg_combine(model_fn(x, t, **cond), model_fn(x, t, **uncond), 5.0)
    assert torch.allclose(v, expected, atol=1e-6)

    calls.clear()
    v1 = flow.guided_velocity_fn(model_fn, cond, uncond, 1.0)(x, t)
    assert calls == [(B, B, B, B)]  # scale 1: the uncond pass is skipped
    assert torch.allclose(v1, model_fn(x, t, **cond))

    # tuple conditioning works the same way; mismatched lengths are a clear error
    calls.clear()
    flow.guided_velocity_fn(model_fn, (cond["text"], cond["text_mask"]),
                            (uncond["text"], uncond["text_mask"]), 3.0)(x, t)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="pad both prompts"):
        flow.guided_velocity_fn(model_fn, cond, {"text": torch.randn(B, 7, 8), "text_mask": cond["text_mask"]},
                                2.0)(x, t)


def test_sample_timesteps_in_a_range_is_the_truncated_distribution():
    """t_range = (lo, hi) draws the shifted logit-normal conditioned on lo <= t <= hi (a noise-level
    expert's training times): the same quantiles as rejection sampling, inside the range, seeded;
    no range draws exactly as before."""
    lo, hi = 0.75, 1.0
    t = flow.sample_timesteps(100000, torch.Generator().manual_seed(0), shift=3.0, t_range=(lo, hi))
    assert lo <= t.min() and t.max() <= hi
    full = flow.sample_timesteps(400000, torch.Generator().manual_seed(1), shift=3.0)
    kept = full[(full >= lo) & (full <= hi)]
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    torch.testing.assert_close(torch.quantile(t, q), torch.quantile(kept, q), atol=3e-3, rtol=0)
    mid = flow.sample_timesteps(50000, torch.Generator().manual_seed(2), t_range=(0.2, 0.4))
    assert 0.2 <= mid.min() and mid.max() <= 0.4 and 0.3 < mid.median() < 0.32  # the density rises toward 0.5
    a = flow.sample_timesteps(8, torch.Generator().manual_seed(3), shift=3.0, t_range=(lo, hi))
    assert torch.equal(a, flow.sample_timesteps(8, torch.Generator().manual_seed(3), shift=3.0, t_range=(lo, hi)))
    g = torch.Generator().manual_seed(4)
    plain = flow.shift_time(torch.sigmoid(torch.randn(8, generator=g)), 3.0)
    assert torch.equal(plain, flow.sample_timesteps(8, torch.Generator().manual_seed(4), shift=3.0))
    torch.testing.assert_close(flow.unshift_time(flow.shift_time(q, 3.0), 3.0), q)
    for bad in ((0.5, 0.5), (0.9, 0.1), (-0.1, 1.0), (0.0, 1.2), (0.5,), "ab"):
        with pytest.raises(ValueError, match="time range"):
            flow.sample_timesteps(2, t_range=bad)


def test_classifier_guidance_pushes_up_the_log_prob_within_its_range():
    target = torch.tensor([2.0, -1.0, 0.5])

    def log_prob(sample, t):  # a Gaussian around `target`: its gradient is target - sample
        return -0.5 * ((sample - target) ** 2).sum(-1)

    velocity = lambda x, t: 0.3 * x + 0.1  # noqa: E731  any velocity
    x, t = torch.randn(4, 3), torch.full((4,), 0.6)
    v = velocity(x, t)
    x0 = x - 0.6 * v
    clean = flow.classifier_guided_velocity_fn(velocity, log_prob, 0.5, (0.2, 0.8))
    with torch.no_grad():  # the sampler runs without grad; the guidance takes its own
        g = clean(x, t)
    assert torch.allclose(g, v - 0.5 * (target - x0), atol=1e-6)
    assert (log_prob(x - 0.6 * g, t) > log_prob(x0, t)).all()  # the clean estimate it points at is likelier
    assert torch.equal(clean(x, torch.full((4,), 0.9)), v)  # outside the range: untouched
    assert torch.equal(flow.classifier_guided_velocity_fn(velocity, log_prob, 0.0)(x, t), v)
    # noisy: the gradient at x_t itself, weighed t / (1 - t) (the score's share of the velocity)
    noisy = flow.classifier_guided_velocity_fn(velocity, log_prob, 0.5, (0.2, 0.8), mode="noisy")
    assert torch.allclose(noisy(x, t), v - 0.5 * 0.6 / 0.4 * (target - x), atol=1e-5)
    # through: the clean estimate's gradient carried back through the denoiser, d x0 / d x = 1 - 0.6 * 0.3
    through = flow.classifier_guided_velocity_fn(velocity, log_prob, 0.5, (0.2, 0.8), mode="through")
    with torch.no_grad():
        assert torch.allclose(through(x, t), v - 0.5 * 0.6 / 0.4 * (1 - 0.6 * 0.3) * (target - x0), atol=1e-5)
    # a log-prob with no gradient (nothing to read) leaves the velocity as it is
    unread = lambda sample, t: torch.zeros(len(sample))  # noqa: E731
    assert torch.equal(flow.classifier_guided_velocity_fn(velocity, unread, 1.0)(x, t), v)
    with pytest.raises(ValueError, match="lo < hi"):
        flow.classifier_guided_velocity_fn(velocity, log_prob, 1.0, (0.8, 0.2))
    with pytest.raises(ValueError, match="below t = 1"):
        flow.classifier_guided_velocity_fn(velocity, log_prob, 1.0, (0.2, 1.0), mode="through")
    with pytest.raises(ValueError, match="mode"):
        flow.classifier_guided_velocity_fn(velocity, log_prob, 1.0, mode="noise")


def test_noisy_guidance_samples_the_conditional_of_a_gaussian_mixture():
    """Exact check on data at +-1 (half each): the classifier p(+ | x_t) is known in closed form,
    and guidance at scale 1 by it samples the + component alone."""
    def velocity(x, t):  # the exact rectified-flow velocity of the two-point data
        tt = t[:, None]
        w = torch.sigmoid(2 * (1 - tt) * x / tt ** 2)  # p(x0 = +1 | x_t)
        x0 = 2 * w - 1
        return (x - x0) / tt

    def log_p_plus(x, t):
        return torch.nn.functional.logsigmoid(2 * (1 - t[:, None]) * x / t[:, None] ** 2).sum(-1)

    noise = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0))
    plain = flow.euler_sample(velocity, noise, 200, start=0.999)
    guided = flow.euler_sample(flow.classifier_guided_velocity_fn(velocity, log_p_plus, 1.0, (0.0, 0.999), "noisy"),
                               noise, 200, start=0.999)
    assert 0.4 < (plain > 0).float().mean() < 0.6
    assert (guided > 0).float().mean() > 0.99


def test_resample_particles_draws_within_each_group_by_weight():
    x = torch.arange(8.0)[:, None].expand(8, 3)  # 2 groups of 4 particles, particle i holds i
    g = torch.Generator().manual_seed(0)
    lw = torch.tensor([0.0, 50.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # group 0: particle 1 dominates; group 1: level
    out = flow.resample_particles(x, lw, 2, g)
    assert out[:4, 0].tolist() == [1.0] * 4  # all copies of the heavy particle
    assert out[4:, 0].tolist() == [4.0, 5.0, 6.0, 7.0]  # equal weights: kept as they are
    # draws follow the weights, never leave their group, and follow the generator
    lw = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4] * 2))
    draws = torch.stack([flow.resample_particles(x, lw, 2, g)[:, 0] for _ in range(2000)])  # (2000, 8)
    assert (draws[:, :4] < 4).all() and (draws[:, 4:] >= 4).all()
    share = torch.stack([(draws[:, :4] == i).float().mean() for i in range(4)])
    assert torch.allclose(share, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.02)
    a = flow.resample_particles(x, lw, 2, torch.Generator().manual_seed(3))
    assert torch.equal(a, flow.resample_particles(x, lw, 2, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="groups"):
        flow.resample_particles(x, lw, 3)
