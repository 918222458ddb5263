"""Stage failures the pipeline raises on purpose (as opposed to API/transport errors)."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for deliberate pipeline-stage failures."""


class DatasetInvalid(PipelineError):
    """The dataset failed validation; ``issues`` holds the located messages (``file:line: field: msg``)."""

    def __init__(self, message: str, issues: list[str]) -> None:
        super().__init__(message)
        self.issues = issues


class UploadIntegrityError(PipelineError):
    """The server reports a different sha256 for the bytes just uploaded than the local file has."""

    def __init__(self, path: str, local: str, server: str) -> None:
        super().__init__(
            f"{path}: the server stored sha256 {server[:12]}... but the file's is {local[:12]}...; the upload "
            "was corrupted in transit or the file changed while uploading. Run again."
        )
        self.path = path
        self.local = local
        self.server = server


class JobFailed(PipelineError):
    """The remote fine-tuning job ended ``failed`` (or ``cancelled``); carries the server's error code."""

    def __init__(self, job_id: str, status: str, code: str | None, message: str | None) -> None:
        super().__init__(f"job {job_id} {status}: [{code or 'unknown'}] {message or 'no message'}")
        self.job_id = job_id
        self.status = status
        self.code = code
        self.message = message


class JobTimeout(PipelineError):
    """The job did not reach a terminal status within the polling timeout."""

    def __init__(self, job_id: str, status: str, waited_s: float) -> None:
        super().__init__(f"job {job_id} still {status} after {waited_s:.0f}s")
        self.job_id = job_id
        self.status = status
        self.waited_s = waited_s


class SmokeTestFailed(PipelineError):
    """The fine-tuned model gave an empty answer or missed a required substring."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("smoke test failed: " + "; ".join(failures))
        self.failures = failures


class EvalSetInvalid(PipelineError):
    """An eval or smoke file has an invalid line (the message names ``file:line: field``)."""


class EvaluationFailed(PipelineError):
    """The fine-tuned model itself could not be evaluated (a non-transient error on its calls)."""


class GateFailed(PipelineError):
    """The selected model missed a gate threshold; the message names each threshold and measured value."""

    def __init__(self, reason: str, failures: list[str]) -> None:
        super().__init__(reason)
        self.failures = failures


class BudgetExceeded(PipelineError):
    """The pre-flight estimate does not fit the run's budget; nothing was uploaded. ``line`` says why."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class EstimateFailed(PipelineError):
    """The pre-flight estimate could not be made while a budget needs it (e.g. an unknown base model)."""
