"""Deployment: ONNX export, Keras weight converters, int8 quantisation.

Optional dependencies (`pip install 'rnnkit[deploy]'`): onnx and onnxruntime for
ONNX, h5py for Keras files. Importing this package imports none of them.
"""

from .onnx import ExportError, build_onnx, check_onnx, export_onnx, run_onnx

__all__ = ["ExportError", "build_onnx", "check_onnx", "export_onnx", "run_onnx"]
