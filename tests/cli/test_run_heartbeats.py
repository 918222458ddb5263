"""``ftpipe run`` turns Prefect's flow-run heartbeats off unless the user configured them."""

from __future__ import annotations

import pytest
from prefect.settings import Settings

from cli.run import HEARTBEAT_ENV, heartbeats_configured


@pytest.mark.parametrize("name", HEARTBEAT_ENV)
def test_a_user_set_frequency_keeps_heartbeats(name: str) -> None:
    assert heartbeats_configured({name: "60"})
    # The names are the ones Prefect itself reads (a renamed setting would silently drop the user's choice).
    with pytest.MonkeyPatch.context() as mp:
        for other in HEARTBEAT_ENV:
            mp.delenv(other, raising=False)
        mp.setenv(name, "45")
        assert Settings().flows.heartbeat_frequency == 45


def test_unset_or_blank_frequency_means_ftpipe_turns_them_off() -> None:
    assert not heartbeats_configured({})
    assert not heartbeats_configured({HEARTBEAT_ENV[0]: " "})
    assert not heartbeats_configured({"PREFECT_API_URL": "http://127.0.0.1:4200/api"})
