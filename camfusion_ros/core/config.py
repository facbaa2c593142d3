"""The mapping configuration: one dataclass per stage, composed here, loaded from YAML.

The dataclass defaults are the only defaults. YAML files may be plain nested
mappings or the ROS parameter form (``mapping_node: ros__parameters: ...``,
nested or with dotted keys); unknown keys are an error, so a typo never
silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from camfusion_ros.core.descriptors.base import DescriptorConfig
from camfusion_ros.core.segmentation import SegmenterConfig
from camfusion_ros.core.tracking import TrackerConfig
from camfusion_ros.core.view_bank import ViewBankConfig
from camfusion_ros.core.vlm import VLMConfig
from camfusion_ros.core.vocabulary import VocabularyConfig


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


@dataclass
class FusionConfig:
    method: str = "avg"                # avg | l1medoid | cosmedoid | camfusion
    checkpoint: str = ""               # CAMFusion checkpoint folder (model.safetensors + config.json)
    device: Optional[str] = None       # None: cuda when available


@dataclass
class MappingConfig:
    segment_every: int = 10            # keyframes: segment + track every n-th frame (OVO's cadence at 30 Hz)
    fuse_every: int = 10               # offline runner: re-fuse dirty instances every n frames (0: at the end only)
    label_threshold: float = -1.0      # instances whose best cosine score is below stay unlabelled ("" ; -1: always label)
    top_k: int = 5                     # labels kept per instance
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    views: ViewBankConfig = field(default_factory=ViewBankConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    descriptor: DescriptorConfig = field(default_factory=DescriptorConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    vocabulary: VocabularyConfig = field(default_factory=VocabularyConfig)


def from_dict(cls, data: dict, where: str = ""):
    """Build a (nested) config dataclass from a mapping, rejecting unknown keys."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"known: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in data.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = from_dict(t, v, f"{where}{k}.")
        else:
            kwargs[k] = _coerce(v, t, where + k)
    return cls(**kwargs)


def _coerce(v: Any, t: Any, key: str) -> Any:
    origin, args = get_origin(t), get_args(t)
    if origin is Union:                       # Optional[X]
        if v is None or v == "":
            return None if type(None) in args else v
        t = next(a for a in args if a is not type(None))
        origin, args = get_origin(t), get_args(t)
    try:
        if t is bool:
            if isinstance(v, str):
                if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(v)
                return v.lower() in ("true", "1", "yes")
            return bool(v)
        if t in (int, float, str):
            if t is int and isinstance(v, float) and not v.is_integer():
                raise ValueError(v)
            return t(v)
        if origin in (list, tuple):
            return list(v) if isinstance(v, (list, tuple)) else [v]
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key}: cannot use {v!r} as {getattr(t, '__name__', t)}") from None
    return v


def unflatten(flat: dict) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}} (ROS parameters are flat with dots); nested parts merge deeply."""
    out: dict = {}
    for k, v in flat.items():
        parts = str(k).split(".")
        node: dict = unflatten(v) if isinstance(v, dict) else v
        for p in reversed(parts):
            node = {p: node}
        out = _merge(out, node)
    return out


def flatten(cfg, prefix: str = "") -> dict[str, Any]:
    """A config as dotted keys (for ROS parameter declaration)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = v
    return out


def ros_parameters(doc: dict, node_name: str | None = None) -> dict:
    """The parameters of one node from a ROS params file (or the doc itself if not in that form)."""
    if not isinstance(doc, dict):
        raise ConfigError("a config file must hold a mapping")
    nodes = {k: v for k, v in doc.items() if isinstance(v, dict) and "ros__parameters" in v}
    if not nodes:
        return doc
    # rcl's own keys for a node, most specific first: plain, absolute, any namespace, every node
    for key in ([node_name, f"/{node_name}", f"/**/{node_name}"] if node_name else []) + ["/**"]:
        if key in nodes:
            return nodes[key]["ros__parameters"]
    named = [k for k in nodes if node_name and k.rsplit("/", 1)[-1] == node_name]    # e.g. /robot/mapping_node
    return nodes[named[0] if named else next(iter(nodes))]["ros__parameters"]


def load_config(source: Union[str, os.PathLike, dict, None] = None, overrides: dict | None = None,
                node_name: str | None = "mapping_node", ignore: tuple[str, ...] = ()) -> MappingConfig:
    """MappingConfig from a YAML file or a mapping, plus dotted-key overrides.

    ``ignore``: top-level keys that belong to someone else (e.g. the ROS node's own parameters).
    """
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    data = unflatten(ros_parameters(data, node_name))
    if overrides:
        data = _merge(data, unflatten(overrides))
    for k in ignore:
        data.pop(k, None)
    return from_dict(MappingConfig, data)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
