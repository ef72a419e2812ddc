"""Deployment: ONNX export, Keras weight converters, int8 quantisation.

Optional dependencies (`pip install 'rnnkit[deploy]'`): onnx and onnxruntime for
ONNX, h5py for Keras files. Importing this package imports none of them.
"""

from .keras import KerasWeightsError, find_recurrent_layers, load_keras_weights, save_keras_weights
from .onnx import ExportError, build_onnx, check_onnx, export_onnx, run_onnx
from .quantize import bits_per_token, quantize_onnx

__all__ = ["ExportError", "build_onnx", "check_onnx", "export_onnx", "run_onnx", "KerasWeightsError",
           "find_recurrent_layers", "load_keras_weights", "save_keras_weights", "quantize_onnx", "bits_per_token"]
