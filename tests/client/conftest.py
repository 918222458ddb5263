"""Fixtures for the client tests (helpers live in client_testkit.py)."""

from __future__ import annotations

import pytest
from client_testkit import BASE, SECRET, FakeAPI, Runner

from client import ClientSettings


@pytest.fixture
def settings() -> ClientSettings:
    # Error-mapping tests must see each failure once; test_client_retries.py turns retries on.
    return ClientSettings(base_url=BASE, api_key=SECRET, on_behalf_of="user-42", max_retries=0)


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest, settings: ClientSettings) -> Runner:
    return Runner(request.param, settings)


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()
