"""camfusion_ros: online open-vocabulary semantic mapping with CAMFusion.

The generated interfaces (camfusion_ros.msg / camfusion_ros.srv) may live in
another folder than these sources (the venv prefix, or a colcon install);
extend_path merges every camfusion_ros folder on sys.path into one package.
Keep this file tiny: make setup copies it next to the generated modules.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
