"""Configuration of the edge service: one TOML file, every key optional, defaults documented here.

The defaults are safe for a box on a hospital network: the REST API and the DICOM node bind to the
loopback address, every API request needs a token (a random one is created on first start when none
is configured), uploads are size-limited and results are only sent back to a PACS that is configured
explicitly. ``DEFAULT_TOML`` below is the reference: ``osteoscan serve --print-config`` prints it and
``docs/server.md`` explains each key.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osteoscan.errors import InputError

log = logging.getLogger(__name__)

#: The documented default configuration (every key shown with its default value).
DEFAULT_TOML = """\
# osteoscan serve: configuration (TOML). Every key is optional; the values shown are the defaults.

[api]
host = "127.0.0.1"          # bind address of the REST API and web viewer; loopback unless you mean it
port = 8042
token = ""                  # API token; empty = read token_file, or create it with a random token
token_file = ""             # default: <data_dir>/api_token (created with mode 0600)
max_upload_mb = 2048        # larger request bodies are refused with 413
max_unzipped_mb = 4096      # a zip expanding to more than this is rejected (zip bomb guard)

[dicom]
enabled = true
ae_title = "OSTEOSCAN"
host = "127.0.0.1"          # bind address of the DICOM node (C-ECHO, C-STORE SCP)
port = 11112
quiet_period_s = 10.0       # a series is complete when no instance arrived for this long
allowed_calling_aets = []   # empty = accept any calling AE title; otherwise only these

[dicom.destination]         # where results (SEG, SR, PDF, SC) of DICOM-received studies are sent
ae_title = ""               # empty = do not send
host = "127.0.0.1"
port = 104
retries = 3                 # attempts after the first one
retry_delay_s = 5.0

[jobs]
data_dir = "osteoscan-data" # job database, inputs, outputs; relative = to the config file's folder
workers = 1                 # worker processes, each loads the models once and keeps them warm;
                            # 0 = maintenance mode: studies are accepted and queued, none is run
max_attempts = 2            # a job whose worker died is retried until it has run this many times
retain_inputs = true        # keep the input of each job (needed by re-run and the viewer's slices)

[pipeline]
backend = "auto"            # auto | openvino | onnxruntime | torch
device = "auto"
precision = "auto"          # auto | fp32 | bf16 | fp16 | int8
outputs = ["json", "html", "pdf", "seg", "sr", "sc", "mesh"]
weights_dir = ""            # empty = the shipped models; else a folder of <name>.onnx + <name>.json
"""


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8042
    token: str = ""
    token_file: str = ""
    max_upload_mb: float = 2048
    max_unzipped_mb: float = 4096


@dataclass(frozen=True)
class DestinationConfig:
    ae_title: str = ""
    host: str = "127.0.0.1"
    port: int = 104
    retries: int = 3
    retry_delay_s: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.ae_title)


@dataclass(frozen=True)
class DicomConfig:
    enabled: bool = True
    ae_title: str = "OSTEOSCAN"
    host: str = "127.0.0.1"
    port: int = 11112
    quiet_period_s: float = 10.0
    allowed_calling_aets: tuple[str, ...] = ()
    destination: DestinationConfig = field(default_factory=DestinationConfig)


@dataclass(frozen=True)
class JobsConfig:
    data_dir: str = "osteoscan-data"
    workers: int = 1
    max_attempts: int = 2
    retain_inputs: bool = True


@dataclass(frozen=True)
class PipelineSettings:
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    outputs: tuple[str, ...] = ("json", "html", "pdf", "seg", "sr", "sc", "mesh")
    weights_dir: str = ""


@dataclass(frozen=True)
class ServerConfig:
    """The whole service configuration (see ``DEFAULT_TOML`` for the meaning of each key)."""

    api: ApiConfig = field(default_factory=ApiConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    def __post_init__(self) -> None:
        _check(1 <= self.api.port <= 65535 or self.api.port == 0, "api.port", self.api.port, "use 1..65535")
        _check(self.api.max_upload_mb > 0, "api.max_upload_mb", self.api.max_upload_mb, "use a positive size")
        _check(0 <= self.dicom.port <= 65535, "dicom.port", self.dicom.port, "use 1..65535")
        _check(
            1 <= len(self.dicom.ae_title) <= 16, "dicom.ae_title", self.dicom.ae_title, "use 1..16 characters"
        )
        _check(self.dicom.quiet_period_s >= 0, "dicom.quiet_period_s", self.dicom.quiet_period_s, "use >= 0")
        _check(self.jobs.workers >= 0, "jobs.workers", self.jobs.workers, "use 0 (queue only) or more")
        _check(self.jobs.max_attempts >= 1, "jobs.max_attempts", self.jobs.max_attempts, "use at least 1")
        dest = self.dicom.destination
        _check(dest.retries >= 0, "dicom.destination.retries", dest.retries, "use >= 0")
        _check(len(dest.ae_title) <= 16, "dicom.destination.ae_title", dest.ae_title, "use <= 16 characters")

    @property
    def data_dir(self) -> Path:
        return Path(self.jobs.data_dir).expanduser().resolve()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.api.max_upload_mb * 1024 * 1024)

    @property
    def max_unzipped_bytes(self) -> int:
        return int(self.api.max_unzipped_mb * 1024 * 1024)

    def replace(self, **sections: dict[str, Any]) -> ServerConfig:
        """A copy with some keys of some sections changed, e.g. ``replace(api={"port": 0})``."""
        return _from_dict({**self.to_dict(), **{k: {**self.to_dict()[k], **v} for k, v in sections.items()}})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, value: object, fix: str) -> None:
    if not ok:
        raise InputError(f"server configuration: {key} = {value!r} is not valid; {fix}")


_SECTIONS: dict[str, type] = {
    "api": ApiConfig,
    "dicom": DicomConfig,
    "jobs": JobsConfig,
    "pipeline": PipelineSettings,
}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise InputError(
            f"server configuration: unknown key(s) {sorted(unknown)} in [{where}]; "
            f"known keys are {sorted(known)} (see `osteoscan serve --print-config`)"
        )
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name == "destination":
            kwargs[name] = _build(DestinationConfig, value, f"{where}.destination")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _from_dict(data: dict[str, Any]) -> ServerConfig:
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise InputError(
            f"server configuration: unknown section(s) {sorted(unknown)}; use {sorted(_SECTIONS)}"
        )
    return ServerConfig(**{name: _build(cls, data.get(name, {}), name) for name, cls in _SECTIONS.items()})


def load_config(path: str | Path | None = None) -> ServerConfig:
    """Read the TOML file at ``path`` (``None``: all defaults).

    Raises:
        InputError: when the file is missing, is not valid TOML, or has unknown keys or bad values.
    """
    if path is None:
        return ServerConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"server configuration file {path} not found; pass an existing --config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"server configuration file {path} is not valid TOML: {exc}") from exc
    config = _from_dict(data)
    if config.jobs.data_dir and not Path(config.jobs.data_dir).is_absolute():
        # a relative data_dir is relative to the config file, so the service finds it from anywhere
        config = config.replace(jobs={"data_dir": str((path.parent / config.jobs.data_dir).resolve())})
    if config.pipeline.weights_dir and not Path(config.pipeline.weights_dir).is_absolute():
        config = config.replace(pipeline={"weights_dir": str((path.parent / config.pipeline.weights_dir).resolve())})
    return config


def resolve_token(config: ServerConfig) -> str:
    """The API token: ``api.token``, else the content of the token file (created when absent).

    The file (default ``<data_dir>/api_token``) is written with mode 0600 so only the service user can
    read it; its location is logged, never the token itself.
    """
    if config.api.token:
        return config.api.token
    path = Path(config.api.token_file) if config.api.token_file else config.data_dir / "api_token"
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(token + "\n", encoding="utf-8")
    log.info("created a new API token in %s", path)
    return token
