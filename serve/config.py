"""The server's one YAML config, validated with messages that name the offending field."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, model_validator


# Relative paths in the config (model_repository, feedback.path, auth.keys_file) are relative to this.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autoscaling(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas cannot exceed max_replicas")
        return self


class ModelDeployment(_Strict):
    """One served model version and how its replicas run it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field("latest", pattern=r"^(latest|[A-Za-z0-9][A-Za-z0-9_.-]*)$")
    replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    num_cpus: float = Field(1, ge=0)
    num_gpus: float = Field(0, ge=0)
    max_batch_size: int = Field(16, ge=1, le=1024)
    # How long a batch that is not full waits for more, and only while a call is on its way (decoding in the same
    # process, runtime/batcher.py): otherwise it goes at once, so a lone request never waits for company.
    batch_wait_timeout_s: float = Field(0.005, ge=0, le=1)
    max_queued_requests: int = Field(64, ge=1)
    providers: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    precision: Literal["fp32", "fp16"] = "fp32"
    # Where encoded images are decoded and preprocessed: the ingress's thread pool, or the replica's own thread.
    # Replica: 5-8 % more images/s and lower p50 than the ingress for resnet50 on CPU (loadtests/results/
    # placement.md): the ingress then ships ~50 KB of JPEG instead of a 602 KB tensor per image.
    preprocess_in: Literal["ingress", "replica"] = "replica"
    # exact: decode every pixel, then resize. fast: a JPEG decoder scales down in the DCT (1/2, 1/4, 1/8) to the
    # smallest size still twice the model's resize, then the same resize (serve/runtime/preprocess.py). fast by
    # default: on 4032x3024 JPEGs it agreed with exact on every top-1 (359 digits x 2 models, 8 photos x 3 models),
    # digits accuracy unchanged (99.72 %, 98.61 %), probabilities within 0.007 (0.03 for 500x375 photos through the
    # digits models), decode 3-6x faster; and exact needs ~1 GB of decoded pixels for 16 phone photos, twice the
    # default decode budget (loadtests/results/decode).
    decode: Literal["exact", "fast"] = "fast"
    # ONNX Runtime's worker threads busy-wait between operators by default. On a node whose cores the front door,
    # the ingress and the decoders share, that spinning takes the CPU they need: resnet50 spent 124 CPU-ms per
    # image spinning against ~70 not, beside a busy neighbour (tests/test_spin_bench.py, docs/ARCHITECTURE.md
    # "Decisions"). true suits a replica with cores of its own.
    spin_wait: bool = False
    # Where the model runs: a Classifier deployment of its own (replica), or inside each ingress replica (ingress),
    # which saves the ingress -> replica hop (a Ray handle call over gRPC). On this 2-core machine that hop cost much:
    # in the ingress the digits model served 374 -> 643 requests/s at c=32 and 3.5 -> 1.4 CPU-ms per request outside
    # ONNX Runtime; ResNet-50 at c=8 went from 0.91x to 0.99x of a plain FastAPI server (both behind HAProxy,
    # loadtests/results/peers). replica: the model scales
    # on its own (replicas, autoscaling, GPU workers); a cluster always runs it so (ServerConfig.on_cluster).
    # preprocess_in is moot in the ingress: it decodes in the ingress's threads.
    runs_in: Literal["ingress", "replica"] = "replica"


class Limits(_Strict):
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=64)
    max_images_per_request: int = Field(16, ge=1)
    # Bytes of decoded pixels each decoding process (replica, or ingress for preprocess_in: ingress) holds at
    # once, counted from the images' headers at the scale they are decoded to. A request that does not fit waits
    # up to decode_wait_s, then gets 503 with Retry-After; one larger than the whole budget gets 413.
    decode_budget_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    decode_wait_s: float = Field(5.0, ge=0, le=60)


class HttpOptions(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # What answers on host:port. haproxy: Ray Serve's HAProxy ingress forwards to the ingress replica, which
    # serves HTTP itself (one hop less than Ray's Python proxy, and replicas call each other over gRPC).
    # ray: Ray Serve's Python proxy, for a config that names none, and always on a cluster (ServerConfig.on_cluster).
    # The shipped config runs haproxy. Behind HAProxy the ingress reads the client's address from the
    # X-Forwarded-For HAProxy appends (cluster/haproxy_config.py). Measured in loadtests/results/peers/report.md.
    proxy: Literal["haproxy", "ray"] = "ray"
    # The OpenAPI document at /openapi.json and its viewer at /docs.
    docs: bool = True
    # Slow clients (docs/ARCHITECTURE.md "Slow clients"). A request body must never pause longer than
    # body_idle_timeout_s and must keep up body_min_rate_bytes_per_s on average after a grace of body_timeout_s:
    # a 5 MB photo over a 384 kbit/s 3G uplink (~48 KB/s) needs ~105 s and is allowed 10 + 5e6/16384 = 315 s,
    # while a connection that trickles a few bytes is cut after body_timeout_s (408) and its slot freed.
    body_idle_timeout_s: float = Field(10.0, gt=0, le=600)
    body_timeout_s: float = Field(10.0, gt=0, le=600)
    body_min_rate_bytes_per_s: int = Field(16 * 1024, ge=1)
    # An idle keep-alive connection is closed after this (Ray's proxy and HAProxy alike).
    keep_alive_timeout_s: int = Field(15, ge=1, le=3600)
    # HAProxy mode: `timeout client`, the longest a client may stay silent, headers included (Ray's default: 3600),
    # and `maxconn`, the connections HAProxy holds at once (Ray's default: 4096).
    client_idle_timeout_s: int = Field(30, ge=1, le=3600)
    max_connections: int = Field(4096, ge=16)
    # Requests one client address may have in flight at once; beyond it 429 with Retry-After. 0: no limit.
    # Loopback clients (load tests, a sidecar) are exempt unless limit_loopback. The address is the TCP peer, or
    # the X-Forwarded-For entry that trusted_proxies (addresses or CIDRs of the balancers in front) vouch for; a
    # balancer's own requests that name no client are not limited. Ray's proxy applies it too (cluster/proxy_guard.py),
    # from a request's headers, so a request over it is refused before it costs a trip to the ingress.
    max_inflight_per_client: int = Field(32, ge=0)
    limit_loopback: bool = False
    trusted_proxies: list[IPvAnyNetwork] = []
    # Ray's proxy (cluster/proxy_guard.py): a request's headers (a few hundred bytes to a few kB, one or two TCP
    # segments) must be complete this long after the connection opens or the request's first byte: 5 s covers a
    # mobile link that loses a segment twice (retransmits after ~1 s, then ~2 s); late ones get 408 and are closed.
    header_timeout_s: float = Field(5.0, gt=0, le=600)
    # Connections one client address may hold at once (0: no limit), beyond which new ones are closed on accept:
    # twice max_inflight_per_client's default (each request in flight holds one, and as many idle keep-alive ones).
    # The same loopback exemption and trusted_proxies (never limited: every client comes through them) apply.
    max_connections_per_client: int = Field(64, ge=0)


class ArmSpec(_Strict):
    """One arm: a served model (`name` or `name/version`) and its share of traffic."""

    model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
    weight: float = Field(1, gt=0)


class RolloutConfig(_Strict):
    """A guarded progressive rollout: the challenger's share grows step by step while its guardrails hold, and
    falls to 0 at the first clear breach (decided by serve/ab/rollout.py; docs/ab/ROLLOUT.md)."""

    challenger: str  # one of the two arms; the other is the baseline. The arms' own weights are then ignored.
    steps: list[float] = Field(min_length=1)  # the challenger's weight in percent at each step, increasing
    min_step_s: float = Field(600, ge=0)  # the least time spent at each step
    min_feedback: int = Field(200, ge=0)  # the least feedback labels on the challenger at each step
    max_error_rate: float = Field(0.01, ge=0, le=1)  # the challenger's share of 5xx answers
    max_p95_latency_ratio: float = Field(1.5, gt=0)  # challenger p95 / baseline p95
    accuracy_margin: float = Field(0.02, ge=0, lt=1)  # how much less accurate than the baseline is tolerated
    min_shadow_agreement: float | None = Field(None, ge=0, le=1)  # share of mirrored requests answered alike
    alpha: float = Field(0.05, gt=0, lt=1)  # error rate of the confidence sequences and intervals
    decide_every_s: float = Field(5.0, gt=0)  # how often each ingress replica reads the evidence and decides

    @model_validator(mode="after")
    def _steps_increase(self) -> "RolloutConfig":
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError(f"steps are percentages in (0, 100], got {self.steps}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"steps must increase, got {self.steps}")
        if self.steps[0] == 100:
            raise ValueError("the first step must be below 100: the challenger is judged against the baseline's traffic")
        return self


class ExperimentConfig(_Strict):
    """An A/B experiment over requests that name no model; changes apply on SIGHUP."""

    enabled: bool = True
    name: str = Field("ab", min_length=1)  # salts the hash: a new name reshuffles users
    mode: Literal["split", "shadow"] = "split"
    sticky_header: str = Field("X-User-Id", min_length=1)
    arms: list[ArmSpec] = Field(min_length=2)
    primary: str | None = None  # shadow mode: the arm that answers (default: the first)
    shadow_timeout_s: float = Field(5.0, gt=0, le=60)
    # The smallest accuracy difference worth detecting: /ab/report plans the labels and time it needs.
    min_difference: float = Field(0.02, gt=0, lt=0.5)
    rollout: RolloutConfig | None = None

    @model_validator(mode="after")
    def _arms_distinct(self) -> "ExperimentConfig":
        names = [a.model for a in self.arms]
        if len(names) != len(set(names)):
            raise ValueError(f"arms must name different models, got {names}")
        if self.primary is not None and self.primary not in names:
            raise ValueError(f"primary {self.primary!r} is not one of the arms {names}")
        if self.rollout is not None:
            if len(names) != 2 or self.mode != "split":
                raise ValueError(f"a rollout needs split mode and exactly two arms, got {self.mode} with {names}")
            if self.rollout.challenger not in names:
                raise ValueError(f"rollout.challenger {self.rollout.challenger!r} is not one of the arms {names}")
        return self

    @property
    def primary_arm(self) -> str:
        return self.primary or self.arms[0].model


class FeedbackConfig(_Strict):
    """The store of served predictions awaiting feedback, and of the feedback itself: a SQLite file on one node
    (`path`), or a database all replicas share (`url`; RESFAM_FEEDBACK_URL overrides it)."""

    url: str | None = None  # sqlite:///<path> or postgresql://user@host:port/dbname; wins over `path`
    path: str = ".state/feedback.sqlite"  # relative to the project root
    max_rows: int = Field(1_000_000, ge=100)
    retention_s: float = Field(7 * 24 * 3600, gt=0)
    buffer_rows: int = Field(10_000, ge=1)  # predictions awaiting their write; beyond it new ones are dropped
    flush_interval_s: float = Field(0.2, gt=0)  # the longest a prediction waits in the buffer
    feedback_wait_s: float = Field(1.0, ge=0)  # how long /feedback looks for an id another replica may not have written yet
    record: bool = True  # false: keep no evidence (no report; /feedback answers 404), e.g. to measure its cost
    # Answer /classify only once its prediction is written (waits at most durable_wait_s, not while the database is
    # failing): a node lost with rows in its buffer lost answered predictions (4 of 1,156, tests/test_multinode_store.py).
    # None: on for a shared database (PostgreSQL, where a node can be lost and the evidence lives on), off for SQLite
    # (node-local: the file goes with the node). Its cost: docs/ARCHITECTURE.md, "Durable answers".
    durable_answers: bool | None = None
    durable_wait_s: float = Field(0.5, gt=0)


class IngressConfig(_Strict):
    """How many Ingress replicas take HTTP requests: a fixed count or autoscaling, never both."""

    replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    # At most this many on one Ray node. Ray Serve's spreading is only a preference: two zero-CPU Ingress replicas
    # were seen on one node of two (tests/test_multinode_store.py), so losing that node took both.
    max_replicas_per_node: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> "IngressConfig":
        if self.autoscaling is None:
            return self
        if "replicas" in self.model_fields_set:
            raise ValueError("set either replicas or autoscaling, not both")
        if self.autoscaling.min_replicas < 1:
            raise ValueError("autoscaling.min_replicas must be at least 1: with no Ingress replica nothing answers")
        return self


class AuthConfig(_Strict):
    """API keys live in `keys_file` and/or the RESFAM_API_KEYS variable, never in this file (serve/api/auth.py).
    With no keys at all the server is open, which it allows only on a loopback address; elsewhere the config
    must say `auth: none` to run without keys."""

    keys_file: str | None = None  # relative to the project root; re-read on SIGHUP
    metrics_open: bool = True  # /metrics without a key: Prometheus scrapes it; restrict it by network instead


class ServerConfig(_Strict):
    model_repository: str = "models"
    http: HttpOptions = HttpOptions()
    ingress: IngressConfig = IngressConfig()
    limits: Limits = Limits()
    models: list[ModelDeployment] = Field(min_length=1)
    default_model: str | None = None
    experiment: ExperimentConfig | None = None
    feedback: FeedbackConfig = FeedbackConfig()
    auth: AuthConfig | Literal["none"] = AuthConfig()

    @model_validator(mode="after")
    def _default_model_is_served(self) -> "ServerConfig":
        names = {m.name for m in self.models}
        if self.default_model is not None and self.default_model.split("/")[0] not in names:
            raise ValueError(f"default_model {self.default_model!r} is not among the served models {sorted(names)}")
        keys = [(m.name, m.version) for m in self.models]
        if len(keys) != len(set(keys)):
            raise ValueError("a model version is listed twice")
        return self

    @model_validator(mode="after")
    def _arms_are_served(self) -> "ServerConfig":
        if self.experiment is None:
            return self
        for arm in self.experiment.arms:
            name, _, version = arm.model.partition("/")
            served = [m.version for m in self.models if m.name == name]
            if not served:
                raise ValueError(f"experiment arm {arm.model!r} is not among the served models {sorted({m.name for m in self.models})}")
            if version and version not in served and "latest" not in served:
                raise ValueError(f"experiment arm {arm.model!r}: version {version!r} is not served (served: {served})")
        return self

    def on_cluster(self) -> "ServerConfig":
        """This config as a cluster runs it: every model in a deployment of its own (a cluster scales each model on
        its own, on GPU workers, and its rendered manifests override those deployments, deploy/serve_config.py),
        behind Ray's proxy and its guard (the slow-client limits HAProxy mode adds, cluster/haproxy_config.py, are
        written by a local server's wrapper, which the pods do not run)."""
        return self.model_copy(update={"models": [m.model_copy(update={"runs_in": "replica"}) for m in self.models],
                                       "http": self.http.model_copy(update={"proxy": "ray"})})

    def keys_path(self, base: Path | None = None) -> Path | None:
        if self.auth == "none" or self.auth.keys_file is None:
            return None
        return _under(self.auth.keys_file, base)

    def repository_path(self, base: Path | None = None) -> Path:
        return _under(self.model_repository, base)

    def feedback_path(self, base: Path | None = None) -> Path:
        return _under(self.feedback.path, base)

    def feedback_url(self, base: Path | None = None) -> str:
        """`feedback.url`, else `feedback.path` as a SQLite URL; a relative SQLite path is taken under `base`."""
        url = self.feedback.url
        if url is None:
            return f"sqlite:///{self.feedback_path(base)}"
        if url.startswith(SQLITE_PREFIX):
            return SQLITE_PREFIX + str(_under(url[len(SQLITE_PREFIX):], base))
        return url


SQLITE_PREFIX = "sqlite:///"
FEEDBACK_URL_ENV = "RESFAM_FEEDBACK_URL"


def effective_feedback_url(configured: str) -> str:
    """RESFAM_FEEDBACK_URL, where set, replaces the configured URL: a Kubernetes Secret carries the credentials.
    Read where the store is opened (the replica), so a password never travels in the deployment's arguments."""
    return os.environ.get(FEEDBACK_URL_ENV) or configured


def _under(path_text: str, base: Path | None) -> Path:
    path = Path(path_text)
    return path if path.is_absolute() or base is None else (base / path)


class ConfigError(ValueError):
    """The config file is missing or invalid; the message says where."""


def parse_config(data: dict) -> ServerConfig:
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid config: {problems}") from None


def load_config(path: str | Path) -> ServerConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return parse_config(data)
