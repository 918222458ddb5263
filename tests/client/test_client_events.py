"""``jobs.new_events``: newest-first pages in, only newer events out, oldest first."""

from __future__ import annotations

import pytest
from client_testkit import FakeAPI, Runner, event_obj, paged

JOB = "ftjob_events"
# ev1 is the oldest; the server lists newest first, like OpenAI.
HISTORY = [event_obj(f"ev{i}", created_at=1700000000 + i) for i in range(1, 11)]
NEWEST_FIRST = list(reversed(HISTORY))


@pytest.fixture
def events_api(api: FakeAPI) -> FakeAPI:
    api.routes[("GET", f"fine_tuning/jobs/{JOB}/events")] = paged(NEWEST_FIRST, page_size=3)
    return api


def ids(events: list) -> list[str]:
    return [e.id for e in events]


def test_since_id_across_page_boundary(runner: Runner, events_api: FakeAPI) -> None:
    # ev3 sits on the 3rd page (ev10 ev9 ev8 | ev7 ev6 ev5 | ev4 ev3 ev2 | ev1)
    got = runner.call(events_api, lambda c: c.jobs.new_events(JOB, "ev3"))
    assert ids(got) == ["ev4", "ev5", "ev6", "ev7", "ev8", "ev9", "ev10"]
    assert len(events_api.requests) == 3  # stops at since_id; the last page is never fetched
    assert [r.url.params.get("after") for r in events_api.requests] == [None, "ev8", "ev5"]


def test_since_id_on_first_page_fetches_one_page(runner: Runner, events_api: FakeAPI) -> None:
    got = runner.call(events_api, lambda c: c.jobs.new_events(JOB, "ev8"))
    assert ids(got) == ["ev9", "ev10"]
    assert len(events_api.requests) == 1


def test_since_latest_returns_nothing(runner: Runner, events_api: FakeAPI) -> None:
    assert runner.call(events_api, lambda c: c.jobs.new_events(JOB, "ev10")) == []
    assert len(events_api.requests) == 1


def test_since_none_returns_full_history_oldest_first(runner: Runner, events_api: FakeAPI) -> None:
    got = runner.call(events_api, lambda c: c.jobs.new_events(JOB, None))
    assert ids(got) == [f"ev{i}" for i in range(1, 11)]
    assert len(events_api.requests) == 4


def test_unknown_since_id_returns_everything(runner: Runner, events_api: FakeAPI) -> None:
    got = runner.call(events_api, lambda c: c.jobs.new_events(JOB, "ev-gone"))
    assert ids(got) == [f"ev{i}" for i in range(1, 11)]


def test_polling_sequence_sees_each_event_once(runner: Runner, api: FakeAPI) -> None:
    # Events appear between polls; chaining since_id=<last seen> must yield each exactly once, in order.
    visible: list[dict] = []
    api.routes[("GET", f"fine_tuning/jobs/{JOB}/events")] = lambda r: paged(list(reversed(visible)), 2)(r)
    seen: list[str] = []
    last: str | None = None
    for upto in (0, 1, 4, 4, 9, 10):
        visible[:] = HISTORY[:upto]
        new = runner.call(api, lambda c, since=last: c.jobs.new_events(JOB, since, page_size=2))
        seen += ids(new)
        if new:
            last = new[-1].id
    assert seen == [f"ev{i}" for i in range(1, 11)]
    assert all(r.url.params["limit"] == "2" for r in api.requests)
