"""Run an exported classifier with ONNX Runtime: load once, then batches of preprocessed images."""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from serve.runtime.providers import ProviderPlan, check_session_providers

log = logging.getLogger(__name__)


def half_precision(model_path: str) -> bytes:
    """fp16 weights and activations inside, fp32 at the edges, so callers are unchanged."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.load(model_path), keep_io_types=True).SerializeToString()


def create_session(model_path: str, plan: ProviderPlan, requested: str, spin_wait: bool) -> ort.InferenceSession:
    if plan.uses_gpu and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when they are installed
    options = ort.SessionOptions()
    options.intra_op_num_threads = plan.intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    model = half_precision(model_path) if plan.half_precision_model else model_path
    session = ort.InferenceSession(model, sess_options=options, providers=plan.providers)
    check_session_providers(plan, session.get_providers(), requested)
    return session


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class OnnxClassifier:
    """Probabilities for a batch; input dtype follows the model (fp16 models take fp16)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.output_name = session.get_outputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run([self.output_name], {self.input_name: batch.astype(self.input_dtype, copy=False)})
        return softmax(logits.astype(np.float32, copy=False))
