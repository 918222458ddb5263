"""Responses over raw HTTP: request fields the backend does not implement, truncation, input items."""

from __future__ import annotations

from typing import Any

import pytest
from backend_testkit import Api

pytestmark = pytest.mark.integration


def _post(api: Api, **body: Any) -> tuple[int, dict[str, Any]]:
    with api.client() as c:
        r = c.post("/responses", json={"model": "local:micro-chat", "max_output_tokens": 2, **body})
    return r.status_code, r.json()


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}, "tools"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"text": {"format": {"type": "json_object"}}}, "text"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content",
        ),
    ],
)
def test_unsupported_fields_are_a_400_naming_them(api: Api, extra: dict[str, Any], param: str) -> None:
    status, body = _post(api, **{"input": "hi", **extra})
    assert status == 400, body
    assert body["error"]["param"] == param and "not supported" in body["error"]["message"], body


def test_unknown_field_is_named(api: Api) -> None:
    status, body = _post(api, input="hi", top_k=3)
    assert (
        status == 400 and body["error"]["code"] == "unknown_parameter" and body["error"]["param"] == "top_k"
    )


def test_neutral_values_of_unsupported_fields_are_accepted(api: Api) -> None:
    status, body = _post(
        api,
        input="hi",
        tools=[],
        background=False,
        tool_choice="auto",
        service_tier="auto",
        truncation="auto",
    )
    assert status == 200, body
    assert body["tools"] == [] and body["background"] is False and body["truncation"] == "auto"


def test_disabled_truncation_refuses_a_prompt_that_does_not_fit(api: Api) -> None:
    long_input = "the color is red and blue " * 200  # far beyond micro-chat's 256-token window
    status, body = _post(api, input=long_input, truncation="disabled")
    assert status == 400 and body["error"]["code"] == "context_length_exceeded", body
    status, body = _post(api, input=long_input)  # auto: the oldest tokens are dropped
    assert status == 200 and body["usage"]["input_tokens"] <= 256


def test_input_items_page_in_both_orders(api: Api) -> None:
    turns = [{"role": r, "content": f"turn {i}"} for i, r in enumerate(["user", "assistant", "user"])]
    status, resp = _post(api, input=turns, instructions="be brief")
    assert status == 200, resp
    with api.client() as c:
        newest = c.get(f"/responses/{resp['id']}/input_items", params={"limit": 2}).json()
        assert [i["content"][0]["text"] for i in newest["data"]] == ["turn 2", "turn 1"] and newest[
            "has_more"
        ]
        rest = c.get(f"/responses/{resp['id']}/input_items", params={"after": newest["last_id"]}).json()
        assert [i["content"][0]["text"] for i in rest["data"]] == ["turn 0"] and not rest["has_more"]
        oldest = c.get(f"/responses/{resp['id']}/input_items", params={"order": "asc"}).json()
        assert [i["role"] for i in oldest["data"]] == ["user", "assistant", "user"]
        assert oldest["data"][1]["content"][0]["type"] == "output_text"
        bad = c.get(f"/responses/{resp['id']}/input_items", params={"after": "msg_nope"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"
