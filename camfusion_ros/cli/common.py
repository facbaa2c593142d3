"""What the offline command-line tools share: config options and the error contract."""
from __future__ import annotations

import argparse
import logging
import warnings

from camfusion_ros.core.config import ConfigError, MappingConfig, load_config

FUSIONS = ("avg", "l1medoid", "cosmedoid", "camfusion")


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (plain or ROS params form; default: built-in defaults)")
    p.add_argument("--fusion", choices=FUSIONS, help="fusion of the per-view descriptors")
    p.add_argument("--checkpoint", help="CAMFusion checkpoint folder (for --fusion camfusion)")
    p.add_argument("--model", help="open_clip model name, e.g. PE-Core-L-14-336 or PE-Core-T-16-384")
    p.add_argument("--pretrained", help="open_clip tag, local weights file, or 'random'")
    p.add_argument("--vocab", help="vocabulary: shipped list (scannet200, scannet20, replica) or a .txt file")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set tracker.voxel_size=0.03 (repeatable)")


def add_pose_args(p: argparse.ArgumentParser) -> None:
    """Where the camera pose of each frame comes from (robots' bags give it as TF only)."""
    p.add_argument("--pose-source", choices=("topic", "tf"), default="topic",
                   help="topic: the PoseStamped pose topic (default); tf: map <- camera from /tf + /tf_static, "
                        "interpolated at each image stamp")
    p.add_argument("--map-frame", default="map", help="--pose-source tf: the fixed frame of the map [map]")
    p.add_argument("--camera-frame", default="",
                   help="--pose-source tf: the camera frame (default: the colour image's header.frame_id)")
    p.add_argument("--tf-tolerance", type=float, default=0.01, metavar="S",
                   help="--pose-source tf: a stamp up to S seconds outside the TF data holds its end sample; "
                        "further is no transform and the frame is skipped [0.01]")


def pose_kwargs(args: argparse.Namespace) -> dict:
    """read_frames keyword arguments of add_pose_args' options."""
    return {"pose_source": args.pose_source, "map_frame": args.map_frame, "camera_frame": args.camera_frame,
            "tf_tolerance_s": args.tf_tolerance}


def config_from_args(args: argparse.Namespace, extra: dict | None = None, base: dict | None = None) -> MappingConfig:
    """--config (else ``base``, e.g. a saved map's config), then ``extra``, --set and the flags on top."""
    over: dict = dict(extra or {})
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        over[k.strip()] = _yaml_scalar(v)
    pairs = {"fusion.method": args.fusion, "fusion.checkpoint": args.checkpoint, "vlm.model_name": args.model,
             "vlm.pretrained": args.pretrained, "vocabulary.source": args.vocab}
    over.update({k: v for k, v in pairs.items() if v is not None})
    if args.device:
        over.update({"vlm.device": args.device, "fusion.device": args.device, "segmenter.device": args.device})
    return load_config(args.config if args.config else base, over)


def _yaml_scalar(v: str):
    import yaml

    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def quiet_libraries() -> None:
    """Keep library chatter off the terminal: the tools print one JSON line and errors."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a user's input can cause; CLIs print them as one line and exit 2."""
    from camfusion_ros.core.descriptors.base import DescriptorError
    from camfusion_ros.core.frames import FrameError
    from camfusion_ros.core.fusion import FusionError
    from camfusion_ros.core.map_store import MapFileError
    from camfusion_ros.core.segmentation import SegmenterError
    from camfusion_ros.core.vlm import VLMError
    from camfusion_ros.core.vocabulary import VocabularyError

    errs = [ConfigError, FrameError, FusionError, MapFileError, SegmenterError, VLMError, VocabularyError,
            FileNotFoundError]
    try:
        from camfusion_ros.core.camfusion.checkpoint import CheckpointError

        errs.append(CheckpointError)
    except ImportError:
        pass
    return tuple(errs)
