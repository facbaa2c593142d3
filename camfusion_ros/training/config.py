"""``TrainConfig``: the training run's settings, loaded from YAML (unknown keys are an error)."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from camfusion_ros.core.camfusion.model import CamFusionConfig, ModelBuildError
from camfusion_ros.training.baselines import ARCHS
from camfusion_ros.training.losses import LossConfig
from camfusion_ros.training.sampler import SamplerConfig
from camfusion_ros.training.synthetic import SyntheticConfig


class ConfigError(ValueError):
    """A training config that cannot be used as written."""


@dataclass
class DataConfig:
    root: str = "out/descriptors"  # holds <split>/*.safetensors and text_embeddings.safetensors
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = None  # set: the run ends with top-1/top-5 on it (the benchmark's held-out scenes)
    synthetic: SyntheticConfig | None = None  # set: generate the synthetic benchmark into root first


@dataclass
class TrainConfig:
    arch: str = "camfusion"  # or a learned baseline trained the same way: "linear", "deepsets" (training/baselines.py)
    model: CamFusionConfig = field(default_factory=CamFusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 512  # global: split across DDP ranks
    epochs: int = 100  # one epoch = len(train) / batch_size steps
    max_steps: int | None = None  # overrides epochs when set
    lr_max: float = 1e-4
    lr_min: float = 5e-7
    lr_period: int = 7200
    lr_cycle_decay: float = 0.5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    eval_views: int = 5  # validation input: the best-visibility views
    val_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0
    num_threads: int | None = None  # torch CPU threads per process


def _convert(tp, value, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, d, where: str = "config"):
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(map(str, unknown))}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (ModelBuildError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def load_config(path: str | Path) -> TrainConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML in {p}: {str(e).splitlines()[0]}") from None
    cfg = from_dict(TrainConfig, doc, "config")
    if cfg.arch not in ARCHS:
        raise ConfigError(f"config.arch must be one of {', '.join(ARCHS)}, got {cfg.arch!r}")
    for name in ("batch_size", "epochs", "lr_period", "val_every", "checkpoint_every", "log_every", "eval_views"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"config.{name} must be positive")
    return cfg
