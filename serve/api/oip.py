"""Open Inference Protocol (KServe V2) messages: parse requests, build metadata and responses.

Clients such as tritonclient send tensors as JSON or with the binary-data extension (a JSON
header of `Inference-Header-Content-Length` bytes followed by raw tensor bytes); both are read.
"""
from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.errors import BadParameter, BadRequest
from serve.runtime.postprocess import top_k
from serve.runtime.repository import ModelArtifact

TENSOR_INPUT, IMAGES_INPUT, OUTPUT = "input", "images", "probabilities"


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    tensor: np.ndarray | None  # FP32 NCHW
    images: list[bytes] | None  # encoded images
    class_count: int  # 0: plain probabilities


def model_metadata(artifact: ModelArtifact, versions: list[str]) -> dict[str, Any]:
    channels, height, width = artifact.preprocessing.input_shape
    return {
        "name": artifact.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, channels, height, width]},
            {"name": IMAGES_INPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(artifact.labels)]}],
    }


def _split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    try:
        size = int(header_length) if header_length is not None else len(body)
        if not 0 < size <= len(body):
            raise ValueError(f"Inference-Header-Content-Length {size} does not fit a body of {len(body)} bytes")
        header = json.loads(body[:size])
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nesting too deep
        raise BadRequest(f"infer request is not valid JSON: {exc}") from None
    return _object(header, "the infer request"), body[size:]


def _object(value: Any, what: str) -> dict:
    """Every JSON object of the protocol, checked before its fields are read: clients send any JSON."""
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _deserialize_bytes(raw: bytes) -> list[bytes]:
    """Triton's BYTES layout: each element is a 4-byte little-endian length, then the bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest("BYTES tensor ends inside an element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest("BYTES tensor element runs past the end of the body")
        items.append(raw[offset:offset + length])
        offset += length
    return items


def _json_bytes(data: list) -> list[bytes]:
    """In JSON, image bytes travel base64-encoded."""
    if not isinstance(data, list):
        raise BadRequest("BYTES data in JSON must be a list of base64 strings")
    try:
        return [base64.b64decode(item, validate=True) for item in data]
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError; so is non-ASCII text
        raise BadRequest(f"BYTES data in JSON must be base64 strings: {exc}") from None


def parse_infer_request(
    body: bytes, header_length: str | None, input_shape: tuple[int, int, int], num_classes: int
) -> InferRequest:
    header, binary = _split_body(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise BadRequest(f"send exactly one input: {TENSOR_INPUT!r} (FP32 NCHW) or {IMAGES_INPUT!r} (BYTES)")
    spec = _object(inputs[0], "an input")
    name, datatype = spec.get("name"), spec.get("datatype")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest("input shape must be a list of non-negative integers")
    size = _object(spec.get("parameters") or {}, "an input's parameters").get("binary_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise BadRequest("binary_data_size must be a non-negative integer")
    raw = binary[:size] if size is not None else None
    tensor = images = None
    if name == TENSOR_INPUT and datatype == "FP32":
        if tuple(shape[1:]) != input_shape or len(shape) != 4 or shape[0] < 1:
            raise BadRequest(f"input shape must be [N, {', '.join(map(str, input_shape))}], got {shape}")
        try:
            flat = np.frombuffer(raw, "<f4") if raw is not None else np.asarray(spec.get("data"), np.float32).ravel()
            tensor = flat.reshape(shape).astype(np.float32)
        except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: an integer beyond float32
            raise BadRequest(f"input data does not match shape {shape}: {exc}") from None
        if not np.isfinite(tensor).all():
            raise BadRequest("input holds NaN or infinite values")
    elif name == IMAGES_INPUT and datatype == "BYTES":
        images = _deserialize_bytes(raw) if raw is not None else _json_bytes(spec.get("data") or [])
        if len(shape) != 1 or shape[0] != len(images) or not images:
            raise BadRequest(f"images shape {shape} does not match the {len(images)} images sent")
    else:
        raise BadRequest(f"unknown input {name!r} of type {datatype!r}; see GET /v2/models/{{name}}")
    return InferRequest(header.get("id"), tensor, images, _class_count(header.get("outputs"), num_classes))


def _class_count(outputs: Any, num_classes: int) -> int:
    if not outputs:
        return 0
    if not isinstance(outputs, list) or len(outputs) != 1 or _object(outputs[0], "an output").get("name") != OUTPUT:
        raise BadRequest(f"the only output is {OUTPUT!r}")
    count = _object(outputs[0].get("parameters") or {}, "an output's parameters").get("classification", 0)
    if not isinstance(count, int) or not 0 <= count <= num_classes:
        raise BadParameter(f"classification must be an integer from 0 to {num_classes}")
    return count


def infer_response(artifact: ModelArtifact, request: InferRequest, probs: np.ndarray) -> dict[str, Any]:
    if request.class_count:
        rows = [[f"{p['score']:.6f}:{p['index']}:{p['label']}" for p in top_k(row, request.class_count, artifact.labels)]
                for row in probs]
        output = {"name": OUTPUT, "datatype": "BYTES", "shape": [len(rows), request.class_count],
                  "data": [s for row in rows for s in row]}
    else:
        output = {"name": OUTPUT, "datatype": "FP32", "shape": list(probs.shape), "data": probs.ravel().tolist()}
    response = {"model_name": artifact.name, "model_version": artifact.version, "outputs": [output]}
    if request.id is not None:
        response["id"] = request.id
    return response
