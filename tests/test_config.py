"""Typed configs: unknown keys and bad values are errors that say which; presets + file + overrides."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from kinema.config import ConfigError, apply_overrides, from_dict, load_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class Cfg:
    name: str = "dit-t"
    steps: int = 10
    precision: Literal["fp32", "bf16"] = "fp32"
    ema: float | None = None
    optim: Optim = field(default_factory=Optim)


def test_builds_nested_and_coerces():
    cfg = from_dict(Cfg, {"steps": 5, "optim": {"lr": 3, "betas": [0.8, 0.9]}, "ema": 0.99})
    assert cfg.optim == Optim(3.0, (0.8, 0.9)) and cfg.steps == 5 and cfg.ema == 0.99
    assert to_dict(cfg)["optim"]["betas"] == [0.8, 0.9]


@pytest.mark.parametrize("data,message", [
    ({"stepz": 1}, r"unknown config key\(s\) \['stepz'\]; known: \['ema', 'name', 'optim', 'precision', 'steps'\]"),
    ({"optim": {"lrr": 1}}, r"unknown config key\(s\) \['lrr'\] in \[optim\]"),
    ({"precision": "fp16"}, r"precision='fp16': expected one of \['fp32', 'bf16'\]"),
    ({"steps": 1.5}, "steps=1.5 is not an integer"),
    ({"steps": True}, "not a number"),
    ({"optim": {"betas": [1]}}, "must have 2 items"),
    ({"name": 3}, "not a string"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Cfg, data)


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('steps = 200\n[optim]\nlr = 3e-4\n')
    cfg = load_config(Cfg, f, overrides=["optim.lr=1e-3", "name=dit-s", "ema=0.999"], base={"precision": "bf16"})
    assert (cfg.steps, cfg.optim.lr, cfg.name, cfg.ema, cfg.precision) == (200, 1e-3, "dit-s", 0.999, "bf16")
    with pytest.raises(ConfigError, match="no config file"):
        load_config(Cfg, tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("steps = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Cfg, tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["steps"])
    with pytest.raises(ConfigError, match="unknown"):
        load_config(Cfg, overrides=["optim.momentum=0.9"])


def test_one_lr_schedule_for_both_trainers():
    from kinema.autoencoder.train import VAEOptimConfig
    from kinema.train.optim import OptimConfig, lr_at
    dit = OptimConfig(lr=1e-3, warmup_steps=10)  # the DiT's default: warmup, then constant
    assert [lr_at(s, dit, 100) for s in (0, 9, 10, 99)] == [1e-4, 1e-3, 1e-3, 1e-3]
    vae = VAEOptimConfig()  # the autoencoder's default: warmup, then cosine to min_lr_ratio
    assert vae.schedule == "cosine" and vae.lr == 1e-3 and vae.betas == (0.9, 0.99)
    assert lr_at(vae.warmup_steps, vae, 1000) == vae.lr
    assert abs(lr_at(1000, vae, 1000) - vae.lr * vae.min_lr_ratio) < 1e-12
    assert lr_at(550, vae, 1000) < lr_at(300, vae, 1000)


@pytest.mark.parametrize("path", sorted(Path("configs").rglob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_config_loads(path):
    """A typo in a recipe (an unknown key, a bad value) fails here, not an hour into a run."""
    from kinema.autoencoder.train import VAETrainConfig
    from kinema.train.config import load_dit_train_config

    cfg = load_config(VAETrainConfig, str(path)) if path.name.startswith("vae-") else load_dit_train_config(str(path))
    assert cfg.steps > 0 and cfg.out_dir.startswith("runs/")


def test_time_range_is_checked_when_the_config_loads():
    """A noise-level expert's time_range: [lo, hi] with 0 <= lo < hi <= 1, else an error naming the key."""
    from kinema.train.config import load_dit_train_config

    assert load_dit_train_config(overrides=["time_range=[0.75, 1]"]).time_range == [0.75, 1.0]
    assert load_dit_train_config().time_range is None
    for bad in ("[0.8, 0.2]", "[0.5]", "[0, 2]"):
        with pytest.raises(ConfigError, match="time_range"):
            load_dit_train_config(overrides=[f"time_range={bad}"])
