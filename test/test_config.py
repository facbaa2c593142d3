"""MappingConfig: defaults, YAML forms (plain and ROS parameters), overrides, strict keys and types."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from camfusion_ros.core.config import (ConfigError, FusionConfig, MappingConfig, flatten, from_dict, load_config,
                                       ros_parameters, to_dict, unflatten)
from camfusion_ros.core.segmentation import SegmenterConfig
from camfusion_ros.core.view_bank import ViewBankConfig

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_come_from_the_stage_dataclasses():
    cfg = load_config()
    assert cfg == MappingConfig()
    assert cfg.segmenter == SegmenterConfig() and cfg.views == ViewBankConfig() and cfg.fusion == FusionConfig()
    assert cfg.fuse_every == 10 and cfg.top_k == 5 and cfg.fusion.method == "avg"
    assert cfg.views.max_views == 5 and cfg.segmenter.name == "sam2"
    assert load_config({}) == MappingConfig()


def test_nested_yaml(tmp_path):
    p = write(tmp_path, "fuse_every: 3\nsegmenter:\n  name: gt\n  max_masks: 7\nviews:\n  max_views: 2\n"
                        "fusion:\n  method: l1medoid\n")
    cfg = load_config(p)
    assert cfg.fuse_every == 3
    assert cfg.segmenter.name == "gt" and cfg.segmenter.max_masks == 7
    assert cfg.segmenter.min_mask_pixels == SegmenterConfig().min_mask_pixels     # untouched keys keep defaults
    assert cfg.views.max_views == 2 and cfg.fusion.method == "l1medoid"


def test_ros_parameters_dotted_keys(tmp_path):
    p = write(tmp_path, "mapping_node:\n  ros__parameters:\n    segmenter.name: gt\n    segmenter.max_masks: 9\n"
                        "    tracker.voxel_size: 0.05\n    top_k: 2\n")
    cfg = load_config(p)
    assert cfg.segmenter.name == "gt" and cfg.segmenter.max_masks == 9
    assert cfg.tracker.voxel_size == 0.05 and cfg.top_k == 2


def test_ros_parameters_nested_and_mixed(tmp_path):
    p = write(tmp_path, "mapping_node:\n  ros__parameters:\n    segmenter:\n      name: gt\n"
                        "    segmenter.max_masks: 4\n    views:\n      border_margin: 3\n")
    cfg = load_config(p)
    assert cfg.segmenter.name == "gt" and cfg.segmenter.max_masks == 4 and cfg.views.border_margin == 3


def test_ros_parameters_picks_the_node():
    doc = {"other_node": {"ros__parameters": {"top_k": 1}},
           "mapping_node": {"ros__parameters": {"top_k": 3}}}
    assert load_config(doc).top_k == 3
    assert ros_parameters(doc, "other_node") == {"top_k": 1}
    wildcard = {"/**": {"ros__parameters": {"top_k": 4}}, "x": {"ros__parameters": {"top_k": 5}}}
    assert load_config(wildcard).top_k == 4
    assert ros_parameters({"top_k": 6}) == {"top_k": 6}


def test_overrides_win_over_file(tmp_path):
    p = write(tmp_path, "segmenter:\n  name: gt\n  max_masks: 7\n")
    cfg = load_config(p, overrides={"segmenter.max_masks": 11, "fusion.method": "cosmedoid"})
    assert cfg.segmenter.name == "gt" and cfg.segmenter.max_masks == 11 and cfg.fusion.method == "cosmedoid"
    cfg = load_config(p, overrides={"segmenter": {"max_masks": 12}})
    assert cfg.segmenter.name == "gt" and cfg.segmenter.max_masks == 12


@pytest.mark.parametrize("data,key", [({"fuse_evry": 1}, "fuse_evry"),
                                      ({"segmenter": {"nmae": "gt"}}, "segmenter.nmae"),
                                      ({"segmenter.max_mask": 3}, "segmenter.max_mask")])
def test_unknown_key_is_named(data, key):
    with pytest.raises(ConfigError, match=f"unknown config key.*{key.replace('.', r'[.]')}"):
        load_config(data)


def test_ignore_drops_foreign_top_level_keys():
    data = {"top_k": 2, "pose_type": "Odometry", "topics": {"color": "/c"}}
    with pytest.raises(ConfigError, match="pose_type"):
        load_config(data)
    assert load_config(data, ignore=("pose_type", "topics")).top_k == 2


@pytest.mark.parametrize("data,key", [({"top_k": "many"}, "top_k"), ({"top_k": 2.5}, "top_k"),
                                      ({"label_threshold": "high"}, "label_threshold"),
                                      ({"segmenter": {"multimask_output": "maybe"}}, "segmenter.multimask_output"),
                                      ({"views": {"max_views": [1, 2]}}, "views.max_views")])
def test_type_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=f"config key {key.replace('.', '[.]')}"):
        load_config(data)


def test_non_mapping_section_or_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="segmenter.*expected a mapping"):
        load_config({"segmenter": 5})
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_type_coercion():
    cfg = load_config({"top_k": "3", "fuse_every": 4.0, "label_threshold": "0.25",
                       "segmenter": {"multimask_output": "false", "device": ""},
                       "vlm": {"device": "cpu"}, "fusion": {"device": None},
                       "vocabulary": {"names": "chair", "cache_dir": ""}})
    assert cfg.top_k == 3 and isinstance(cfg.top_k, int)
    assert cfg.fuse_every == 4 and isinstance(cfg.fuse_every, int)
    assert cfg.label_threshold == 0.25
    assert cfg.segmenter.multimask_output is False
    assert cfg.segmenter.device is None and cfg.vlm.device == "cpu" and cfg.fusion.device is None
    assert cfg.vocabulary.names == ["chair"] and cfg.vocabulary.cache_dir is None


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    p = write(tmp_path, "segmenter: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    assert load_config(write(tmp_path, "")) == MappingConfig()


def test_flatten_unflatten_round_trip():
    cfg = MappingConfig()
    cfg.segmenter.name = "gt"
    cfg.views.max_views = 3
    flat = flatten(cfg)
    assert flat["segmenter.name"] == "gt" and flat["views.max_views"] == 3 and flat["top_k"] == 5
    assert all(not dataclasses.is_dataclass(v) for v in flat.values())
    assert unflatten(flat) == to_dict(cfg)
    assert from_dict(MappingConfig, unflatten(flat)) == cfg
    assert load_config(flat) == cfg


def test_unflatten_merges_dotted_and_nested():
    assert unflatten({"a.b": 1, "a": {"c": 2}, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    assert unflatten({"a": {"c": 2}, "a.b": 1}) == {"a": {"b": 1, "c": 2}}


def _node_own_keys(path: Path) -> tuple[str, ...]:
    """Top-level field names of NodeConfig in node_config.py, read from the source."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "NodeConfig":
            return tuple(s.target.id for s in node.body if isinstance(s, ast.AnnAssign))
    raise AssertionError("NodeConfig not found in node_config.py")


def _shipped_paths() -> tuple[Path, Path]:
    yaml_path = REPO / "config" / "mapping.yaml"
    node_path = REPO / "camfusion_ros" / "nodes" / "node_config.py"
    if not yaml_path.is_file() or not node_path.is_file():
        pytest.skip("config/mapping.yaml or nodes/node_config.py not present")
    return yaml_path, node_path


def test_shipped_mapping_yaml_loads():
    yaml_path, node_path = _shipped_paths()
    own = _node_own_keys(node_path)
    assert "topics" in own and "pose_type" in own
    with pytest.raises(ConfigError):             # the node's own keys are not pipeline keys
        load_config(yaml_path)
    assert isinstance(load_config(yaml_path, ignore=own), MappingConfig)


def test_shipped_mapping_yaml_mirrors_dataclass_defaults():
    yaml_path, node_path = _shipped_paths()
    assert load_config(yaml_path, ignore=_node_own_keys(node_path)) == MappingConfig()
