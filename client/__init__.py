"""Typed MKA1 (OpenAI-compatible fine-tuning) API client over httpx, sync and async."""

from client._version import USER_AGENT, __version__
from client.async_client import AsyncMKA1Client
from client.settings import ClientSettings
from client.sync_client import MKA1Client

__all__ = ["USER_AGENT", "AsyncMKA1Client", "ClientSettings", "MKA1Client", "__version__"]
