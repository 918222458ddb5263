"""Stage 6: ask the fine-tuned model a few prompts and check the answers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefect import task
from prefect.cache_policies import NO_CACHE

from client import MKA1Client
from client.models import ResponseCreateRequest
from tasks import report, runtime
from tasks.errors import SmokeTestFailed
from tasks.progress import ProgressUpdate, publish
from tasks.retry_policy import api_task_options
from tasks.smoke_prompts import SmokePrompt


@dataclass(frozen=True)
class SmokeCase:
    """What one prompt produced."""

    prompt: str
    output: str
    latency_s: float
    missing: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Non-empty answer containing every required substring."""
        return bool(self.output.strip()) and not self.missing


@dataclass(frozen=True)
class SmokeResult:
    """All cases; ``passed`` is True only if every case passed."""

    model: str
    cases: list[SmokeCase]

    @property
    def passed(self) -> bool:
        """True when every case passed."""
        return all(c.passed for c in self.cases)


def check_output(output: str, must_contain: list[str]) -> list[str]:
    """The required substrings missing from ``output`` (case-insensitive)."""
    lowered = output.lower()
    return [s for s in must_contain if s.lower() not in lowered]


# One task per prompt: POST /responses is not idempotent (the server stores every response), so the client
# never repeats it in place; a transient failure re-runs this prompt alone, not the prompts already answered.
@task(name="smoke-prompt", task_run_name="smoke-prompt-{index}", **api_task_options())
def ask_prompt_task(client: MKA1Client, request: ResponseCreateRequest, index: int) -> tuple[str, float]:
    """Send one prompt; returns the answer text and the call's latency in seconds."""
    started = time.perf_counter()
    resp = client.responses.create(request)
    return resp.output_text, time.perf_counter() - started


@task(name="smoke-test", cache_policy=NO_CACHE, persist_result=False)
def smoke_test_task(
    client: MKA1Client, model: str, prompts: list[SmokePrompt], *, max_output_tokens: int = 32
) -> SmokeResult:
    """Run every prompt through ``model`` (greedy); raise ``SmokeTestFailed`` listing the failures."""
    log = runtime.run_logger()
    log.info("smoke testing %s with %d prompt(s)", model, len(prompts))
    publish(ProgressUpdate("smoke", f"smoke testing {model}"))
    cases = []
    for index, p in enumerate(prompts):
        request = ResponseCreateRequest(
            model=model, input=p.prompt, max_output_tokens=max_output_tokens, temperature=0
        )
        output, latency = runtime.call_task(ask_prompt_task, client, request, index)
        cases.append(SmokeCase(p.prompt, output, latency, check_output(output, p.must_contain)))
    runtime.table(
        report.smoke_rows(cases, prompts),
        key=runtime.artifact_key("smoke-test"),
        description=f"smoke test of {model}",
    )
    result = SmokeResult(model=model, cases=cases)
    failures = report.smoke_failures(cases)
    if failures:
        log.error("smoke test of %s failed: %s", model, "; ".join(failures))
        raise SmokeTestFailed(failures)
    log.info("smoke test of %s passed (%d prompt(s))", model, len(cases))
    return result
