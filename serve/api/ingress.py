"""The HTTP endpoints: parse the request, hand it to the DataPlane, answer. Routing and nothing else."""
# No `from __future__ import annotations`: Ray Serve's class-based views read the routes' annotations as objects.

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
import ray
from ray import serve as ray_serve
from ray.serve.handle import DeploymentHandle

from serve.ab.feedback import MAX_FEEDBACK_BYTES
from serve.ab.recorder import FeedbackRecorder
from serve.ab.store import FeedbackStore
from serve.api import schemas
from serve.api.auth import AuthMiddleware, KeySource
from serve.api.body import BodyPace, read_body, read_images
from serve.api.client_limit import ClientLimiter, ClientLimitMiddleware
from serve.api.dataplane import DataPlane
from serve.api.drain import DrainGate, DrainMiddleware
from serve.api.openapi import describe_api, disable_docs
from serve.api.responses import (RequestLabels, error_response, install_error_handlers, internal_error, observed,
                                  v2_error_response, v2_internal_error)
from serve.config import ModelDeployment, ServerConfig, effective_feedback_url
from serve.errors import ApiError, Overloaded
from serve.metrics import MetricsPusher, ServeMetrics
from serve.runtime.catalog import ModelCatalog
from serve.runtime.client import ModelClient
from serve.runtime.decoding import Decoding
from serve.runtime.replica_grpc import bind_replica_grpc_to_configured_host
from serve.runtime.runner import local_runners

app = FastAPI(title="resfam-serve", version="1", description="Image classification with the ResNet family: "
              "top-k answers, A/B experiments with feedback, and the Open Inference Protocol (KServe V2).")
install_error_handlers(app)
describe_api(app)
app.add_middleware(AuthMiddleware)  # inside the drain gate: a draining server refuses before asking for a key
app.add_middleware(DrainMiddleware, always_open=("/v2/health/", "/metrics"),
                   refusal=lambda: error_response(Overloaded("the server is shutting down; retry on another instance")))
app.add_middleware(ClientLimitMiddleware)  # outermost: refuses before any other work

log = logging.getLogger(__name__)
CLASSIFY_ERRORS = schemas.error_responses(400, 404, 408, 413, 415, 422, 429, 500, 503)
V2_ERRORS = schemas.error_responses(400, 404, 408, 413, 415, 422, 429, 500, 503, model=schemas.V2ErrorBody)


@ray_serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@ray_serve.ingress(app)
class Ingress:
    def __init__(self, config: ServerConfig, repository: str,
                 classifiers: dict[str, DeploymentHandle], hub: DeploymentHandle, feedback_url: str,
                 decoding: dict[str, Decoding], local: dict[str, ModelDeployment]) -> None:
        """`decoding`: every served model version, in the config's order; `local`: those this replica runs itself
        (`runs_in: ingress`), the others have a handle in `classifiers`."""
        bind_replica_grpc_to_configured_host()
        if not config.http.docs:
            disable_docs(app)
        self.metrics = ServeMetrics()
        self.pusher = MetricsPusher(self.metrics, lambda src, snap: hub.push.remote(src, snap))
        self.hub = hub
        self.limits = config.limits
        self.pace = BodyPace.from_options(config.http, self.metrics.client_timeouts.labels(stage="body").inc)
        app.state.client_limit = ClientLimiter.from_options(config.http, self.metrics.client_limited.inc,
                                                            ray.util.get_node_ip_address())
        self.runners = local_runners(local, Path(repository), decoding, self.metrics)
        catalog = ModelCatalog(Path(repository), decoding, config.default_model)
        client = ModelClient(classifiers, decoding, config.limits.max_pixels,
                             ThreadPoolExecutor(max_workers=4, thread_name_prefix="preprocess"), self.metrics,
                             self.runners)
        feedback = config.feedback
        store = FeedbackStore(effective_feedback_url(feedback_url), feedback.max_rows, feedback.retention_s)
        recorder = FeedbackRecorder(store, self.metrics, feedback)
        self.plane = DataPlane(catalog, client, recorder, self.metrics, config.limits)
        self.drain_gate = app.state.drain = DrainGate()
        self.keys = KeySource(config.keys_path(), enabled=config.auth != "none")
        app.state.metrics = self.metrics
        app.state.metrics_open = config.auth == "none" or config.auth.metrics_open

    async def reconfigure(self, user_config: dict) -> None:
        """Ray Serve calls this with the user_config at start and on every change: no restart, no lost request.
        It carries the experiment and the keys' generation (serve/cluster/app.py: ingress_user_config), and, when
        `python -m serve` stops, `drain_s`: Ray Serve delivers a user_config to every replica and `serve.run`
        returns once each has applied it, where a handle call reaches whichever replica its router picks."""
        self.plane.reconfigure(user_config.get("experiment"))
        app.state.keys = self.keys.reload(user_config.get("keys"))
        if user_config.get("drain_s"):
            drained = await self.drain(user_config["drain_s"])
            if drained["unfinished"] or drained["feedback_unwritten"]:
                log.warning("drain left work undone: %s", drained)

    async def drain(self, timeout_s: float) -> dict:
        """Refuse new requests, finish the admitted ones, write the buffered predictions (each bounded)."""
        drained = await self.drain_gate.close(timeout_s)
        await self.plane.drain()  # the guarded rollout stops deciding here
        return {**drained, "feedback_unwritten": await self.plane.recorder.flush(timeout_s)}

    def check_health(self) -> None:
        """Ray Serve replaces a replica whose check fails: here, one whose models lost their session."""
        for runner in self.runners.values():
            runner.check_health()

    def __del__(self) -> None:
        """Ray Serve calls this when it stops the replica, drained or not: write what is buffered (bounded)."""
        if hasattr(self, "plane"):
            self.plane.recorder.close()

    @app.post("/classify", response_model=schemas.ClassifyResponse, responses=CLASSIFY_ERRORS,
              openapi_extra={"requestBody": schemas.IMAGE_BODY})
    async def classify(self, request: Request, k: str | None = None, model: str | None = None) -> Response:
        """Top-k classes of one image (raw body) or several (multipart `file` parts). A request that names no
        `model` is assigned an arm of the running experiment; the `X-User-Id` header makes that sticky."""
        self.pusher.ensure_started()
        started = time.perf_counter()

        async def run(labels: RequestLabels) -> Response:
            plan = self.plane.plan_classify(model, k, request.headers)
            labels.served_by(plan.artifact.name, plan.artifact.version, plan.arm)
            images = await read_images(request, self.limits, self.pace)
            return JSONResponse(await self.plane.classify(plan, images, started))

        return await observed(self.metrics, "/classify", run, error_response, internal_error)

    @app.post("/feedback", response_model=schemas.FeedbackResponse,
              responses=schemas.error_responses(400, 404, 408, 413, 422, 429, 503),
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackBody"}}}}})
    async def feedback(self, request: Request) -> Response:
        """The true label of a served prediction; the first feedback per image counts, repeats do not."""
        self.pusher.ensure_started()
        return JSONResponse(await self.plane.feedback(await read_body(request, MAX_FEEDBACK_BYTES, self.pace)))

    @app.get("/ab/report", response_model=schemas.ABReport, responses=schemas.error_responses(503))
    async def ab_report(self) -> dict:
        return await self.plane.report()

    @app.get("/models", response_model=schemas.ModelList)
    async def list_models(self) -> dict:
        return self.plane.catalog.listing()

    @app.get("/models/{name}", response_model=schemas.ModelVersions, responses=schemas.error_responses(404))
    async def get_model(self, name: str) -> dict:
        return self.plane.catalog.model(name)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics(self) -> Response:
        """Prometheus text of every replica of the application."""
        await self.pusher.push_now()
        text = await self.hub.render.remote()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # Open Inference Protocol (KServe V2). Its errors are {"error": "message"}, as its clients expect.

    @app.get("/v2", response_model=schemas.V2ServerMetadata)
    async def server_metadata(self) -> dict:
        return {"name": "resfam-serve", "version": "1", "extensions": ["classification", "binary_tensor_data"]}

    @app.get("/v2/health/live", response_model=schemas.Liveness)
    async def live(self) -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", response_model=schemas.Readiness,
             responses={503: {"model": schemas.Readiness, "description": "draining: shutting down"}})
    async def ready(self) -> Response:
        if self.drain_gate.closed:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/v2/models/{name}", response_model=schemas.V2ModelMetadata, responses=V2_ERRORS)
    @app.get("/v2/models/{name}/versions/{version}", response_model=schemas.V2ModelMetadata, responses=V2_ERRORS)
    async def v2_metadata(self, name: str, version: str | None = None) -> Response:
        try:
            return JSONResponse(self.plane.v2_metadata(name, version))
        except ApiError as exc:
            return v2_error_response(exc)

    @app.get("/v2/models/{name}/ready", response_model=schemas.V2ModelReady, responses=V2_ERRORS)
    @app.get("/v2/models/{name}/versions/{version}/ready", response_model=schemas.V2ModelReady,
             responses=V2_ERRORS)
    async def v2_ready(self, name: str, version: str | None = None) -> Response:
        try:
            artifact = self.plane.catalog.resolve_versioned(name, version)
        except ApiError as exc:
            return v2_error_response(exc)
        return JSONResponse({"name": artifact.name, "ready": True})

    @app.post("/v2/models/{name}/infer", response_model=schemas.V2InferResponse, responses=V2_ERRORS,
              openapi_extra={"requestBody": schemas.V2_INFER_BODY})
    @app.post("/v2/models/{name}/versions/{version}/infer", response_model=schemas.V2InferResponse,
              responses=V2_ERRORS, openapi_extra={"requestBody": schemas.V2_INFER_BODY})
    async def v2_infer(self, name: str, request: Request, version: str | None = None) -> Response:
        """FP32 NCHW tensors (`input`) or encoded images (`images`, BYTES), as JSON or with the binary
        extension (`Inference-Header-Content-Length`)."""
        self.pusher.ensure_started()

        async def run(labels: RequestLabels) -> Response:
            artifact = self.plane.catalog.resolve_versioned(name, version)
            labels.served_by(artifact.name, artifact.version)
            body = await read_body(request, self.limits.max_body_bytes, self.pace)
            header_length = request.headers.get("inference-header-content-length")
            return JSONResponse(await self.plane.infer_v2(artifact, body, header_length))

        return await observed(self.metrics, "/v2/infer", run, v2_error_response, v2_internal_error)
