"""The server's one YAML config, validated with messages that name the offending field."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


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
    batch_wait_timeout_s: float = Field(0.005, ge=0, le=1)
    max_queued_requests: int = Field(64, ge=1)
    providers: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    precision: Literal["fp32", "fp16"] = "fp32"
    # Where encoded images are decoded and preprocessed: the ingress's thread pool, or the replica's own thread.
    preprocess_in: Literal["ingress", "replica"] = "ingress"


class Limits(_Strict):
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=64)
    max_images_per_request: int = Field(16, ge=1)


class HttpOptions(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


class ServerConfig(_Strict):
    model_repository: str = "models"
    http: HttpOptions = HttpOptions()
    limits: Limits = Limits()
    models: list[ModelDeployment] = Field(min_length=1)
    default_model: str | None = None

    @model_validator(mode="after")
    def _default_model_is_served(self) -> "ServerConfig":
        names = {m.name for m in self.models}
        if self.default_model is not None and self.default_model.split("/")[0] not in names:
            raise ValueError(f"default_model {self.default_model!r} is not among the served models {sorted(names)}")
        keys = [(m.name, m.version) for m in self.models]
        if len(keys) != len(set(keys)):
            raise ValueError("a model version is listed twice")
        return self

    def repository_path(self, base: Path | None = None) -> Path:
        path = Path(self.model_repository)
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
