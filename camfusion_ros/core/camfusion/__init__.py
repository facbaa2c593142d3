"""CAMFusion: the multiview transformer that fuses per-view descriptors (ROS-free)."""
from camfusion_ros.core.camfusion.model import CamFusion, CamFusionConfig, ModelBuildError, build_camfusion

__all__ = ["CamFusion", "CamFusionConfig", "ModelBuildError", "build_camfusion"]
