"""Settings of ftpipe's local services (env prefix ``FTPIPE_SERVICES_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_IDLE_TIMEOUT_S = 1800.0


class ServicesSettings(BaseSettings):
    """Whether the local Prefect server and embedded backend outlive a run, and for how long."""

    model_config = SettingsConfigDict(env_prefix="FTPIPE_SERVICES_", extra="ignore")

    # True: reuse (or start) a long-lived local Prefect server and keep the embedded backend up between runs,
    # each stopping itself after `idle_timeout_s` without a run. False: both live only while runs use them.
    keep: bool = True
    idle_timeout_s: float = Field(default=DEFAULT_IDLE_TIMEOUT_S, ge=0)
    start_timeout_s: float = Field(default=120.0, gt=0)
    # False: no warm runner (services/runner.py); every `ftpipe run` imports Python, Prefect and ftpipe itself.
    runner: bool = True
    # None: <FTPIPE_STATE_DIR or the user state dir>/services.
    dir: Path | None = None

    def root(self) -> Path:
        """The folder holding one sub-folder per service."""
        if self.dir is not None:
            return self.dir.expanduser()
        from tasks.state import default_state_dir

        return default_state_dir() / "services"

    def lifetime_s(self) -> float:
        """How long a service waits without a lease before it stops itself (0: at once)."""
        return self.idle_timeout_s if self.keep else 0.0
