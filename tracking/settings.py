"""Where experiment tracking goes: ``FTPIPE_TRACKING_*`` settings resolved to one MLflow target.

Order: ``FTPIPE_TRACKING_URI`` (``mka1`` = the MKA1 gateway's MLflow API with the MKA1 key), else
``MLFLOW_TRACKING_URI``, else a local SQLite store under the user state dir. No MLflow import here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.wire import API_PREFIXES

MKA1 = "mka1"
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlflow-artifacts"


class TrackingSettings(BaseSettings):
    """Experiment tracking settings (env prefix ``FTPIPE_TRACKING_``)."""

    model_config = SettingsConfigDict(env_prefix="FTPIPE_TRACKING_", extra="ignore")

    enabled: bool = Field(default=True, description="false: no tracking at all")
    uri: str | None = Field(
        default=None,
        description="'mka1' (the MKA1 gateway with MKA1_API_KEY), any MLflow tracking URI, or unset: "
        "$MLFLOW_TRACKING_URI, else sqlite:///<state dir>/mlflow.db",
    )
    experiment: str = Field(default="ftpipe", min_length=1, description="MLflow experiment name")
    timeout_s: float = Field(default=5.0, gt=0, description="Per-request timeout for a tracking server")
    max_retries: int = Field(default=1, ge=0, le=5, description="HTTP retries per tracking request")
    flush_interval_s: float = Field(default=2.0, gt=0, description="Batch metric points this long")


@dataclass(frozen=True)
class TrackingTarget:
    """A resolved tracking destination; ``token`` only for the MKA1 gateway."""

    uri: str
    experiment: str
    artifact_location: str | None = None
    token: SecretStr | None = None
    timeout_s: float = 5.0
    max_retries: int = 1
    flush_interval_s: float = 2.0

    @property
    def display_uri(self) -> str:
        """The URI without any user:password part, safe to print and record."""
        parts = urlsplit(self.uri)
        if parts.password is None and parts.username is None:
            return self.uri
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def is_local(self) -> bool:
        """True for a store this process opens itself (SQLite or a folder): no server to wait for."""
        return self.uri.startswith(("sqlite:", "file:", "/"))


def default_store_dir() -> Path:
    """The local store's folder: ``$FTPIPE_STATE_DIR`` or the user state dir (as the upload index)."""
    from tasks.state import default_state_dir

    return default_state_dir()


def local_store_uri(folder: Path | None = None) -> str:
    """``sqlite:///<folder>/mlflow.db`` (absolute path: four slashes)."""
    return f"sqlite:///{(folder or default_store_dir()).absolute() / DB_NAME}"


def gateway_root(base_url: str) -> str:
    """The MKA1 gateway root that serves ``/api/2.0/mlflow`` (the API base URL without its prefix)."""
    root = base_url.rstrip("/")
    for prefix in API_PREFIXES:
        if root.endswith(prefix):
            return root[: -len(prefix)]
    return root


def resolve_target(settings: TrackingSettings | None = None) -> TrackingTarget | None:
    """The destination these settings and the environment select, or None when tracking is off."""
    settings = settings or TrackingSettings()
    if not settings.enabled:
        return None
    common = {
        "experiment": settings.experiment,
        "timeout_s": settings.timeout_s,
        "max_retries": settings.max_retries,
        "flush_interval_s": settings.flush_interval_s,
    }
    chosen = settings.uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if chosen is not None and chosen.strip().lower() == MKA1:
        from client.settings import ClientSettings

        client = ClientSettings()
        return TrackingTarget(uri=gateway_root(client.base_url), token=client.api_key, **common)  # type: ignore[arg-type]
    uri = chosen.strip() if chosen else local_store_uri()
    return TrackingTarget(uri=uri, artifact_location=_sqlite_artifacts(uri), **common)  # type: ignore[arg-type]


def _sqlite_artifacts(uri: str) -> str | None:
    """Artifacts of a SQLite store go beside the database (MLflow's default is ./mlruns in the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).absolute().parent / ARTIFACTS_DIR).as_uri()
