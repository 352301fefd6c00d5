"""POST /feedback bodies: `{"request_id": ..., "label": name or index, "image": position (default 0)}`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from serve.errors import BadParameter, BadRequest, UnknownLabel

MAX_FEEDBACK_BYTES = 16 * 1024
# The store keeps positions as 32-bit integers; no request holds anywhere near this many images.
MAX_IMAGE_POSITION = 2**31 - 1


@dataclass(frozen=True)
class FeedbackRequest:
    request_id: str
    label: str | int
    image: int = 0


def parse_feedback(body: bytes) -> FeedbackRequest:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # RecursionError: nesting too deep
        raise BadRequest('feedback must be a JSON object {"request_id": ..., "label": ...}') from None
    if not isinstance(data, dict):
        raise BadRequest('feedback must be a JSON object {"request_id": ..., "label": ...}')
    unknown = sorted(set(data) - {"request_id", "label", "image"})
    if unknown:
        raise BadParameter(f"unknown feedback fields {unknown}")
    request_id, label, image = data.get("request_id"), data.get("label"), data.get("image", 0)
    if not isinstance(request_id, str) or not request_id:
        raise BadParameter("request_id must be the request_id string of a /classify answer")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise BadParameter("label must be a class name (string) or a class index (integer)")
    if isinstance(image, bool) or not isinstance(image, int) or not 0 <= image <= MAX_IMAGE_POSITION:
        raise BadParameter("image must be a non-negative integer: the image's position in the request")
    return FeedbackRequest(request_id, label, image)


def label_index(label: str | int, labels: Sequence[str]) -> int:
    """A name is looked up among the model's labels; an integer is an index into them."""
    if isinstance(label, str):
        if label in labels:
            return list(labels).index(label)
        raise UnknownLabel(f"label {label!r} is not one of the model's {len(labels)} labels")
    if 0 <= label < len(labels):
        return label
    raise UnknownLabel(f"label index {label} is out of range: the model has {len(labels)} labels")
