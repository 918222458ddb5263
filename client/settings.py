"""Client configuration, read from ``MKA1_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from client.retry import DEFAULT_MAX_RETRIES
from contract.wire import DEFAULT_BASE_URL


class ClientSettings(BaseSettings):
    """Connection settings for the MKA1 (OpenAI-compatible) API.

    The key is a ``SecretStr`` so repr/str/JSON dumps show ``**********``. ``max_retries`` bounds the in-place
    retries of idempotent requests (policy in ``client.retry``); 0 turns them off.
    """

    model_config = SettingsConfigDict(env_prefix="MKA1_", extra="ignore")

    base_url: str = Field(default=DEFAULT_BASE_URL, description="API root, e.g. https://api.openai.com/v1")
    api_key: SecretStr | None = Field(
        default=None, description="Bearer token; omitted from requests when unset"
    )
    on_behalf_of: str | None = Field(default=None, description="Sent as X-On-Behalf-Of on every request")
    timeout_s: float = Field(default=60.0, gt=0, description="Read/write/pool timeout for ordinary calls")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="TCP/TLS connect timeout")
    upload_timeout_s: float = Field(default=600.0, gt=0, description="Read/write timeout for file uploads")
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES, ge=0, le=20, description="In-place retries of an idempotent request"
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        # A trailing slash would make httpx join paths as '//files'.
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # MKA1_API_KEY="" in an env file means "no key", not "send 'Bearer '".
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("on_behalf_of")
    @classmethod
    def _empty_obo_is_none(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value
