"""HTTP ingress: validate, decode and preprocess, fan out to classifiers, answer JSON."""

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve as ray_serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.abreport import build_report
from serve.config import ExperimentConfig, ServerConfig
from serve import oip
from serve.drain import DrainGate, DrainMiddleware
from serve.errors import (ApiError, BadParameter, ModelNotFound, Overloaded, PayloadTooLarge, ReplicaUnavailable,
                          UnknownRequest)
from serve.experiment import Arm, assign
from serve.feedback import MAX_FEEDBACK_BYTES, label_index, parse_feedback
from serve.feedback_store import FeedbackStore, Prediction
from serve.http_input import read_body, read_images
from serve.metrics import MetricsPusher, ServeMetrics
from serve.postprocess import parse_k, top_k
from serve.preprocess import decode_and_preprocess_all
from serve.repository import ModelArtifact, load_artifact, version_sort_key

log = logging.getLogger(__name__)

app = FastAPI(title="resfam-serve", docs_url=None, redoc_url=None)


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if isinstance(exc, Overloaded) else None
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


def oip_error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(BadParameter(f"invalid request: {exc.errors()}"))


app.add_middleware(DrainMiddleware, always_open=("/v2/health/", "/metrics"),
                   refusal=lambda: error_response(Overloaded("the server is shutting down; retry on another instance")))


@ray_serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@ray_serve.ingress(app)
class Ingress:
    def __init__(self, config: ServerConfig, repository: str,
                 classifiers: dict[str, DeploymentHandle], hub: DeploymentHandle, feedback_path: str,
                 preprocess_in: dict[str, str] | None = None) -> None:
        self.config = config
        self.repository = Path(repository)
        self.classifiers = classifiers
        self.preprocess_in = preprocess_in or {}
        self.artifacts: dict[str, ModelArtifact] = {}
        for key in classifiers:
            name, version = key.split("/", 1)
            self.artifacts[key] = load_artifact(Path(repository), name, version)
        first = next(iter(self.artifacts.values()))
        self.default_model = config.default_model or first.name
        self.metrics = ServeMetrics()
        self.hub = hub
        self.pusher = MetricsPusher(self.metrics, lambda src, snap: hub.push.remote(src, snap))
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="preprocess")
        self.drain_gate = app.state.drain = DrainGate()
        self.experiment: ExperimentConfig | None = None
        self.arms: list[Arm] = []
        feedback = config.feedback
        self.store = FeedbackStore(feedback_path, feedback.max_rows, feedback.retention_s)
        self.store_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-store")
        self.shadow_tasks: set[asyncio.Task] = set()

    def reconfigure(self, experiment: dict) -> None:
        """Ray Serve calls this with the user_config at start and on every change: no restart, no lost request."""
        parsed = ExperimentConfig.model_validate(experiment) if experiment else None
        arms = [Arm(a.model, a.weight) for a in parsed.arms] if parsed else []
        for arm in arms:
            self.resolve(arm.name)  # an arm that names no loaded version fails the update, not a request
        self.experiment, self.arms = parsed, arms  # swapped together: a request sees the old or the new
        log.info("experiment now %s", parsed)

    async def drain(self, timeout_s: float) -> dict:
        """Called by `python -m serve` before it stops Ray Serve."""
        return await self.drain_gate.close(timeout_s)

    def resolve(self, model: str | None) -> ModelArtifact:
        """`name` means its newest loaded version; `name/version` an exact one."""
        wanted = model or self.default_model
        if wanted in self.artifacts:
            return self.artifacts[wanted]
        versions = [a for a in self.artifacts.values() if a.name == wanted]
        if not versions:
            raise ModelNotFound(f"model {wanted!r} is not loaded; GET /models lists what is")
        return max(versions, key=lambda a: version_sort_key(a.version))

    async def _prepare(self, images: list[bytes], artifact: ModelArtifact) -> np.ndarray:
        batch, per_image = await decode_and_preprocess_all(images, artifact.preprocessing,
                                                           self.config.limits.max_pixels, self.executor)
        for _ in images:
            self.metrics.preprocess_duration.labels(artifact.name, artifact.version).observe(per_image)
        return batch

    async def _in_store(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.store_executor, fn, *args)

    def choose_arm(self, request: Request, model: str | None) -> str | None:
        """The experiment's arm for a request that names no model; None when it is bypassed or off."""
        experiment = self.experiment
        if model is not None or experiment is None or not experiment.enabled:
            return None
        if experiment.mode == "shadow":
            return experiment.primary_arm
        return assign(self.arms, request.headers.get(experiment.sticky_header), salt=experiment.name).name

    async def _remember(self, request_id: str, arm: str, artifact: ModelArtifact, probs: np.ndarray,
                        latency_s: float) -> None:
        """Keep what was answered, so that feedback can be scored later (by any replica, after restarts)."""
        rows = [Prediction(request_id, i, arm, artifact.key, int(p.argmax()), float(p.max()), latency_s)
                for i, p in enumerate(probs)]
        try:
            await self._in_store(self.store.record, rows)
        except Exception:  # a full disk must not fail classification; feedback for it will get 404
            log.exception("could not record predictions of %s", request_id)

    def _start_shadows(self, request_id: str, images: list[bytes], probs: np.ndarray) -> None:
        """Mirror the request to every other arm, off the response path: nothing is awaited here."""
        top1 = [int(p.argmax()) for p in probs]
        for arm in self.arms:
            if arm.name != self.experiment.primary_arm:
                task = asyncio.get_running_loop().create_task(
                    self._shadow(request_id, arm.name, images, top1))
                self.shadow_tasks.add(task)
                task.add_done_callback(self.shadow_tasks.discard)

    async def _shadow(self, request_id: str, arm: str, images: list[bytes], primary_top1: list[int]) -> None:
        started = time.perf_counter()
        try:
            artifact = self.resolve(arm)
            probs = await asyncio.wait_for(self._classify_encoded(images, artifact), self.experiment.shadow_timeout_s)
        except asyncio.TimeoutError:
            self.metrics.shadow_errors.labels(arm, "timeout").inc()
            return
        except Overloaded:
            self.metrics.shadow_errors.labels(arm, "overloaded").inc()
            return
        except Exception:
            log.warning("shadow call to %s failed", arm, exc_info=True)
            self.metrics.shadow_errors.labels(arm, "error").inc()
            return
        latency = time.perf_counter() - started
        self.metrics.shadow_duration.labels(arm).observe(latency)
        for p, top1 in zip(probs, primary_top1):
            agree = "true" if int(p.argmax()) == top1 else "false"
            self.metrics.shadow_comparisons.labels(self.experiment.primary_arm, arm, agree).inc()
        rows = [Prediction(request_id, i, arm, artifact.key, int(p.argmax()), float(p.max()), latency)
                for i, p in enumerate(probs)]
        try:
            await self._in_store(self.store.record_shadow, rows)
        except Exception:
            log.exception("could not record shadow predictions of %s", request_id)

    async def _infer(self, artifact: ModelArtifact, batch: np.ndarray) -> np.ndarray:
        return await self._call(artifact, self.classifiers[artifact.key].remote(batch))

    async def _classify_encoded(self, images: list[bytes], artifact: ModelArtifact) -> np.ndarray:
        """Probabilities for encoded images, preprocessed where the model's `preprocess_in` says."""
        if self.preprocess_in.get(artifact.key) == "replica":
            handle = self.classifiers[artifact.key]
            return await self._call(artifact, handle.classify_encoded.remote(images, self.config.limits.max_pixels))
        return await self._infer(artifact, await self._prepare(images, artifact))

    @staticmethod
    async def _call(artifact: ModelArtifact, response: DeploymentResponse) -> np.ndarray:
        try:
            return await response
        except BackPressureError:
            raise Overloaded(f"model {artifact.key} is at capacity; retry shortly") from None
        except RayActorError:
            raise ReplicaUnavailable(f"a replica of {artifact.key} was lost during the request; retry") from None
        except RayTaskError as exc:  # a replica's ApiError (a bad image it decoded) is the client's error
            if isinstance(exc.cause, ApiError):
                raise exc.cause from None
            raise

    @app.post("/classify")
    async def classify(self, request: Request, k: str | None = None, model: str | None = None) -> Response:
        started = time.perf_counter()
        self.pusher.ensure_started()
        self.metrics.inflight.inc()
        labels = {"model": "", "version": "", "arm": "", "route": "/classify"}
        try:
            arm = self.choose_arm(request, model)
            artifact = self.resolve(arm or model)
            labels.update(model=artifact.name, version=artifact.version, arm=arm or "")
            top = parse_k(k, len(artifact.labels))
            images = await read_images(request, self.config.limits)
            probs = await self._classify_encoded(images, artifact)
            results = [top_k(p, top, artifact.labels) for p in probs]
            for p in probs:
                self.metrics.confidence.labels(artifact.name, arm or "").observe(float(p.max()))
            self.metrics.images.labels(artifact.name, artifact.version).inc(len(images))
            request_id = uuid.uuid4().hex
            await self._remember(request_id, arm or "", artifact, probs, time.perf_counter() - started)
            if arm is not None and self.experiment.mode == "shadow":
                self._start_shadows(request_id, images, probs)
            body = {"request_id": request_id, "model": artifact.summary(), "arm": arm}
            if len(images) == 1:
                body["predictions"] = results[0]
            else:
                body["results"] = [{"predictions": r} for r in results]
            response: Response = JSONResponse(body)
        except ApiError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("classify failed")
            response = JSONResponse({"error": {"code": "internal", "message": "internal error; the request was not classified"}},
                                    status_code=500)
        finally:
            self.metrics.inflight.dec()
        return self._record(labels, response, started)

    def _record(self, labels: dict[str, str], response: Response, started: float) -> Response:
        code = str(response.status_code)
        self.metrics.request_duration.labels(**labels, code=code).observe(time.perf_counter() - started)
        self.metrics.requests.labels(**labels, code=code).inc()
        return response

    @app.post("/feedback")
    async def feedback(self, request: Request) -> Response:
        """The true label of a served prediction; the first feedback per image counts, repeats do not."""
        given = parse_feedback(await read_body(request, MAX_FEEDBACK_BYTES))
        served = await self._in_store(self.store.find, given.request_id, given.image)
        if served is None:
            raise UnknownRequest(f"no retained prediction with request_id {given.request_id!r} "
                                 f"and image {given.image} (unknown, or older than the retention)")
        name, version = served.model.split("/", 1)
        artifact = self.artifacts.get(served.model) or load_artifact(self.repository, name, version)
        index = label_index(given.label, artifact.labels)
        counted = await self._in_store(self.store.add_feedback, given.request_id, given.image, index)
        correct = index == served.predicted
        if counted:
            self.pusher.ensure_started()
            self.metrics.feedback.labels(artifact.name, served.arm, str(correct).lower()).inc()
        return JSONResponse({"request_id": given.request_id, "image": given.image, "arm": served.arm or None,
                             "label": artifact.labels[index], "index": index, "correct": correct,
                             "counted": counted})

    @app.get("/ab/report")
    async def ab_report(self) -> dict:
        return await self._in_store(build_report, self.store, self.experiment)

    @app.get("/models")
    async def list_models(self) -> dict:
        return {"models": [self._describe(a) for a in self.artifacts.values()], "default": self.default_model}

    @app.get("/models/{name}")
    async def get_model(self, name: str) -> dict:
        versions = [self._describe(a) for a in self.artifacts.values() if a.name == name]
        if not versions:
            raise ModelNotFound(f"model {name!r} is not loaded")
        return {"name": name, "versions": versions}

    def _describe(self, artifact: ModelArtifact) -> dict:
        return {**artifact.summary(), "metadata": artifact.meta}

    @app.get("/metrics")
    async def metrics(self) -> Response:
        await self.pusher.push_now()
        text = await self.hub.render.remote()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # Open Inference Protocol (KServe V2). Its errors are {"error": "message"}, as its clients expect.

    @app.get("/v2")
    async def server_metadata(self) -> dict:
        return {"name": "resfam-serve", "version": "1", "extensions": ["classification", "binary_tensor_data"]}

    @app.get("/v2/health/live")
    async def live(self) -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(self) -> Response:
        if self.drain_gate.closed:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    def _oip_artifact(self, name: str, version: str | None) -> ModelArtifact:
        return self.resolve(f"{name}/{version}" if version else name)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def oip_metadata(self, name: str, version: str | None = None) -> Response:
        try:
            artifact = self._oip_artifact(name, version)
        except ApiError as exc:
            return oip_error(exc)
        versions = sorted((a.version for a in self.artifacts.values() if a.name == name), key=version_sort_key)
        return JSONResponse(oip.model_metadata(artifact, versions))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def oip_ready(self, name: str, version: str | None = None) -> Response:
        try:
            artifact = self._oip_artifact(name, version)
        except ApiError as exc:
            return oip_error(exc)
        return JSONResponse({"name": artifact.name, "ready": True})

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def oip_infer(self, name: str, request: Request, version: str | None = None) -> Response:
        started = time.perf_counter()
        self.pusher.ensure_started()
        self.metrics.inflight.inc()
        labels = {"model": "", "version": "", "arm": "", "route": "/v2/infer"}
        try:
            artifact = self._oip_artifact(name, version)
            labels.update(model=artifact.name, version=artifact.version)
            body = await read_body(request, self.config.limits.max_body_bytes)
            parsed = oip.parse_infer_request(body, request.headers.get("inference-header-content-length"),
                                             artifact.preprocessing.input_shape, len(artifact.labels))
            if parsed.images is not None:
                if len(parsed.images) > self.config.limits.max_images_per_request:
                    raise PayloadTooLarge(f"{len(parsed.images)} images; the limit is "
                                          f"{self.config.limits.max_images_per_request}")
                probs = await self._classify_encoded(parsed.images, artifact)
            else:
                probs = await self._infer(artifact, parsed.tensor)
            self.metrics.images.labels(artifact.name, artifact.version).inc(len(probs))
            response: Response = JSONResponse(oip.infer_response(artifact, parsed, probs))
        except ApiError as exc:
            response = oip_error(exc)
        except Exception:
            log.exception("infer failed")
            response = JSONResponse({"error": "internal error; the request was not run"}, status_code=500)
        finally:
            self.metrics.inflight.dec()
        return self._record(labels, response, started)
