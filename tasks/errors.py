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


class EvalSetInvalid(PipelineError):
    """An eval or smoke file has an invalid line (``file:line: field``), or the eval options contradict it."""


class EvaluationFailed(PipelineError):
    """The fine-tuned model itself could not be evaluated (a non-transient error on its calls)."""


class GateFailed(PipelineError):
    """The selected model missed a gate threshold; the message names each threshold and measured value.

    ``record`` is the run's record (already written to result.json), so a front end can still show scores.
    """

    def __init__(self, reason: str, failures: list[str], record: object = None) -> None:
        super().__init__(reason)
        self.failures = failures
        self.record = record


class BudgetExceeded(PipelineError):
    """The pre-flight estimate does not fit the run's budget; nothing was uploaded. ``line`` says why."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class EstimateFailed(PipelineError):
    """The pre-flight estimate could not be made while a budget needs it (e.g. an unknown base model)."""
