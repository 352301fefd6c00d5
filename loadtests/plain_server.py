"""The peer to beat: the FastAPI + one ONNX Runtime session server a user writes in an afternoon.

No Ray, no batching, no proxy: uvicorn in one process, decode + inference in FastAPI's thread pool. It uses the
same model file and the same decode_and_preprocess as resfam-serve, so the two differ only in the serving path.
`python -m loadtests.plain_server --config F` reads model_repository, default_model (its version from
models[]), http.host/port from the same YAML a resfam-serve config has; PlainServer starts and stops it as
LiveServer does resfam-serve.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
import yaml
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from loadtests.server import LiveServer
from serve.errors import BadImage
from serve.runtime.postprocess import top_k
from serve.runtime.preprocess import decode_and_preprocess
from serve.runtime.repository import load_artifact

MAX_PIXELS = 40_000_000


def create_app(repository: Path, model: str, version: str = "latest", decode: str = "fast", threads: int = 0) -> FastAPI:
    """`threads`: ONNX Runtime's intra-op threads, as resfam-serve gives a model of that `num_cpus` (0: ONNX
    Runtime's own choice, one per core)."""
    artifact = load_artifact(repository, model, version)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(artifact.onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    spec, labels = artifact.preprocessing, artifact.labels
    app = FastAPI()

    def classify_bytes(data: bytes, k: int) -> list[dict]:
        batch = decode_and_preprocess(data, spec, MAX_PIXELS, decode)[None]
        logits = session.run(None, {input_name: batch})[0][0]
        probs = np.exp(logits - logits.max())
        return top_k(probs / probs.sum(), k, labels)

    @app.post("/classify")
    async def classify(request: Request, k: int = 5) -> dict:
        data = await request.body()
        try:
            predictions = await run_in_threadpool(classify_bytes, data, k)
        except BadImage as exc:
            raise HTTPException(400, str(exc)) from exc
        return {"model": artifact.name, "version": artifact.version, "predictions": predictions}

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    return app


def model_of(config: dict) -> tuple[str, str, str, int]:
    """(name, version, decode, ONNX Runtime threads: whole num_cpus, 0 where unset) of the config's default model."""
    name = config["default_model"]
    entry = next((m for m in config.get("models", []) if m["name"] == name), {})
    return name, str(entry.get("version", "latest")), entry.get("decode", "fast"), int(entry.get("num_cpus", 0))


class PlainServer(LiveServer):
    """The plain server in its own process, started, awaited and stopped (SIGTERM) like resfam-serve."""

    READY_LINE = "Application startup complete"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "loadtests.plain_server", "--config", str(self.config_path)]

    def deployments(self) -> int:
        return self.log_path.read_text().count(self.READY_LINE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.plain_server", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    config = yaml.safe_load(parser.parse_args(argv).config.read_text())
    app = create_app(Path(config["model_repository"]), *model_of(config))
    http = config.get("http", {})
    uvicorn.run(app, host=http.get("host", "127.0.0.1"), port=int(http["port"]), log_level="info", access_log=False)


if __name__ == "__main__":
    main()
