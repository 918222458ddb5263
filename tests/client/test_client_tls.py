"""Every httpx client ftpipe makes shares one verifying TLS context (built once, not per client)."""

from __future__ import annotations

import ssl

import pytest

from client import AsyncMKA1Client, ClientSettings, MKA1Client
from client.tls import ssl_context


def test_clients_share_one_verifying_context(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args or kwargs)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    ssl_context.cache_clear()
    settings = ClientSettings(base_url="https://api.example.test/v1", api_key="k")
    for _ in range(3):
        with MKA1Client(settings):
            pass
    AsyncMKA1Client(settings)
    assert len(loads) == 1  # the CA bundle is read once per process, not once per client
    context = ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname  # still verifying
