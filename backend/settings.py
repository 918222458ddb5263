"""Settings of the embedded backend server (env prefix ``FTPIPE_BACKEND_``)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
# The MKA1 guide's example base model runs unchanged against the embedded backend.
DEFAULT_MODEL_ALIASES = {"meetkai:functionary-medium": "local:tiny-chat"}
# Read by backend.trainer.base_models.default_cache_dir (CACHE_ENV there); named here so that importing the
# settings does not import torch.
BASE_MODEL_CACHE_ENV = "FTPIPE_BASE_MODEL_CACHE"


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("ftpipe")) / "backend"


class BackendSettings(BaseSettings):
    """Where the backend listens, where it keeps its state and how hard it works."""

    model_config = SettingsConfigDict(env_prefix="FTPIPE_BACKEND_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    data_dir: Path = Field(default_factory=_default_data_dir)
    # None: a key is generated once and persisted in data_dir/api_key (mode 0600).
    api_key: SecretStr | None = None
    worker_concurrency: int = Field(default=1, ge=1, le=64)
    max_upload_bytes: int = Field(default=512 * MIB, ge=1)
    max_request_body_bytes: int = Field(default=1 * MIB, ge=1)
    metrics_every_n_steps: int = Field(default=10, ge=1)
    # Model names the backend accepts in place of a built-in base (jobs keep the name the caller sent).
    # Folders under which `local:/abs/dir` base models may be used (os.pathsep-separated in the env).
    # Empty: no arbitrary paths. The data dir is always refused: it holds every tenant's weights.
    local_model_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    model_aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODEL_ALIASES))
    # None: the trainer's own default cache location.
    base_model_cache_dir: Path | None = None
    # Benchmarks: stop every job after this many optimizer steps (a real, shorter run). None: no cap.
    max_steps_per_job: int | None = Field(default=None, ge=1)
    # What GET /models/pricing reports for training on this backend, per 1M trained tokens. Local training
    # costs nothing, hence 0; set a price to rehearse budgets (ftpipe run --max-cost) against it.
    training_price_per_million: float = Field(default=0.0, ge=0)
    price_currency: str = Field(default="USD", min_length=3, max_length=3, pattern="^[A-Z]{3}$")
    # Fault injection (backend/faults.py): off while fault_rates is empty. E.g. "all=0.2,events=0".
    fault_rates: str = ""
    fault_kinds: str = ""  # comma-separated subset of backend.faults.KINDS; empty: all kinds
    fault_seed: int = 0
    fault_slow_s: float = Field(default=65.0, ge=0)  # "slow" answers after this long (> client timeout)
    fault_retry_after_s: float = Field(default=1.0, ge=0)  # Retry-After of injected 429/503

    @field_validator("local_model_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        # The env takes a path list ("/a:/b") or, as the launcher writes it, a JSON array.
        if isinstance(value, str):
            parts = json.loads(value) if value.lstrip().startswith("[") else value.split(os.pathsep)
            return [Path(p).expanduser() for p in parts if str(p).strip()]
        return value

    @field_validator("fault_rates", "fault_kinds")
    @classmethod
    def _check_fault_spec(cls, value: str, info: ValidationInfo) -> str:
        from backend.faults import parse_kinds, parse_rates

        if info.field_name == "fault_kinds":
            parse_kinds(value)
        else:
            parse_rates(value)
        return value.strip()

    def resolved_api_key(self) -> SecretStr:
        """The configured key, or the one persisted in data_dir/api_key (created on first use)."""
        if self.api_key is not None:
            return self.api_key
        return load_or_create_api_key(self.data_dir)


def apply_base_model_cache_dir(cache_dir: Path | str | None) -> None:
    """Point this process's trainer at the base-model cache: the explicit setting wins when given; otherwise
    ``$FTPIPE_BASE_MODEL_CACHE`` stays as it is, else the trainer's default applies.

    The API process (Responses) and every training worker call this with the same setting, so they agree.
    """
    if cache_dir is not None and str(cache_dir):
        os.environ[BASE_MODEL_CACHE_ENV] = str(Path(cache_dir).expanduser())


def load_or_create_api_key(data_dir: Path) -> SecretStr:
    """Read data_dir/api_key, creating it (mode 0600, atomically) when missing."""
    from backend.layout import private_dir

    private_dir(data_dir)
    key_path = data_dir / "api_key"
    if key_path.exists():
        return SecretStr(key_path.read_text(encoding="utf-8").strip())
    key = "ftpipe-local-" + secrets.token_urlsafe(32)
    tmp = data_dir / f".api_key.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    try:
        # link() fails if another process created the key meanwhile: theirs wins, so all agree.
        os.link(tmp, key_path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return SecretStr(key_path.read_text(encoding="utf-8").strip())
