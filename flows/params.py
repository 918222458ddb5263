"""Typed flow parameters and result (rendered as a form by the Prefect UI). No secrets live here.

Prefect-free on purpose: the CLI reads its defaults from these models while building its parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from contract import wire
from contract.hyperparameters import Hyperparameters, MethodType, Seed
from estimate.budget import Budget, MaxCost, MaxTokens
from evaluation.evalset import EvalCase
from evaluation.gate import DEFAULT_MIN_IMPROVEMENT
from evaluation.selection import SelectBy

if TYPE_CHECKING:
    from client.models import Method
    from tasks.wait import PollPolicy

TRAIN_NAMES = ("train.jsonl", "training.jsonl")
VALIDATION_NAMES = ("validation.jsonl", "valid.jsonl", "val.jsonl")
SMOKE_NAMES = ("smoke.jsonl",)
NEED_TRAINING_DATA = "give dataset_dir (a folder with train.jsonl) or train_file; neither was set"
EVAL_NAMES = ("eval.jsonl",)


class FlowParameters(BaseModel):
    """A flow's parameters as one model whose fields are the flow's top-level parameters.

    Flat on purpose: Prefect merges a deployment run's overrides key by key, so overriding one parameter
    keeps the deployment's others. The flow's signature takes its defaults from ``signature_defaults()``.
    """

    flow_name: ClassVar[str] = "flow"

    @classmethod
    def signature_defaults(cls) -> dict[str, Any]:
        """Per field a pydantic ``Field`` with its default and description (Prefect's form shows both)."""
        return {
            name: Field(
                default=field.get_default(call_default_factory=True),
                description=field.description,
            )
            for name, field in cls.model_fields.items()
        }

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> Self:
        """The flow's arguments checked together; a bad set raises one ValueError listing each problem."""
        # A direct ``flow.fn(...)`` call still holds the signature's ``Field`` placeholders: their defaults.
        values = {
            k: (v.get_default(call_default_factory=True) if isinstance(v, FieldInfo) else v)
            for k, v in arguments.items()
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ValueError(f"invalid {cls.flow_name} parameters: " + "; ".join(error_lines(exc))) from None

    def flow_arguments(self, *, json: bool = False) -> dict[str, Any]:
        """Keyword arguments for the flow (or, with ``json``, a deployment run's parameters)."""
        return self.model_dump(mode="json" if json else "python")


class FineTuneParams(Hyperparameters, FlowParameters):
    """Inputs of the ``fine-tune`` flow; the hyperparameter fields are the contract's ``Hyperparameters``."""

    flow_name: ClassVar[str] = "fine-tune"
    model_config = ConfigDict(extra="forbid")

    dataset_dir: Path | None = Field(
        default=None,
        description="Folder with train.jsonl [validation.jsonl] [eval.jsonl] [smoke.jsonl]; this or train_file "
        "is required",
    )
    train_file: Path | None = Field(
        default=None,
        description="Training JSONL (overrides the dataset folder's); this or dataset_dir is required",
    )
    validation_file: Path | None = Field(
        default=None, description="Validation JSONL (overrides the dataset folder's)"
    )
    smoke_file: Path | None = Field(
        default=None, description="Smoke prompts JSONL (overrides the dataset folder's)"
    )
    model: str = Field(default="local:tiny-chat", min_length=1, description="Base model id")
    method: MethodType = Field(default="supervised", description="Training method")
    suffix: str | None = Field(
        default=None, max_length=wire.MAX_SUFFIX_CHARS, description="Added to the fine-tuned model's name"
    )
    seed: Seed | None = Field(default=42, description="Training seed (part of the job's identity)")
    metadata: dict[str, str] = Field(default_factory=dict, description="Extra job metadata (string pairs)")
    integrations: list[dict[str, Any]] = Field(
        default_factory=list,
        description='Job integrations passed through as is, each e.g. {"type": "wandb", "wandb": {"project": "support"}}',
    )
    poll_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="Poll interval, seconds (unset: 2 against a remote API, 0.5 against the embedded backend)",
    )
    poll_max_interval_s: float = Field(
        default=15.0, gt=0, description="Poll interval cap while nothing changes, seconds"
    )
    wait_timeout_s: float = Field(
        default=3600.0, gt=0, description="Give up waiting for the job after this long"
    )
    smoke_prompts: list[EvalCase] = Field(
        default_factory=list, description="Smoke checks used in addition to the smoke file"
    )
    eval_file: Path | None = Field(
        default=None,
        description="Eval JSONL (overrides the dataset folder's eval.jsonl; without either, the validation "
        "file's examples are the eval set)",
    )
    evaluate: bool = Field(
        default=True,
        description="Ask base, checkpoint and fine-tuned models the eval prompts (off: smoke checks only)",
    )
    select_by: SelectBy | None = Field(
        default=None,
        description="How the best of checkpoints and final model is picked (default: eval_score when an "
        "eval ran, else full_valid_loss)",
    )
    gate_min_score: float | None = Field(
        default=None, ge=0, le=1, description="Gate: the selected model's mean eval score must reach this"
    )
    gate_min_improvement: float | None = Field(
        default=DEFAULT_MIN_IMPROVEMENT,
        ge=-1,
        le=1,
        description="Gate: the selected model's score minus the base model's must reach this (None: off)",
    )
    promote_as: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Record the selected model as champion NAME when the gate passes and it scores at "
        "least the current champion (Prefect Variable ftpipe-champion-NAME)",
    )
    judge_model: str | None = Field(
        default=None, min_length=1, description="Also grade each answer 1-5 with this model (LLM-as-judge)"
    )
    eval_max_output_tokens: int = Field(
        default=96, ge=1, le=wire.MAX_OUTPUT_TOKENS_CAP, description="Answer length of each eval/smoke prompt"
    )
    eval_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Eval calls in flight at once (default: 128 on the embedded backend, which answers them in "
        "batches of 64; 16 on a remote API)",
    )
    output_dir: Path | None = Field(
        default=None, description="Where frames and plots go (default runs/<job id>)"
    )
    state_dir: Path | None = Field(
        default=None, description="Local upload/job index dir (default: user state dir)"
    )
    fresh_job_if_failed: bool = Field(
        default=False,
        description="Create a new job when the previous job with the same inputs failed or was cancelled",
    )
    base_url: str | None = Field(
        default=None, description="API root; set to use a remote MKA1 API instead of the embedded backend"
    )
    on_behalf_of: str | None = Field(default=None, description="End-user id sent as X-On-Behalf-Of")
    max_cost: MaxCost = None
    max_tokens: MaxTokens = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str]) -> dict[str, str]:
        # Checked here, before anything is uploaded, not only when the job-create body is built.
        problem = wire.metadata_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _need_training_data(self) -> FineTuneParams:
        if self.dataset_dir is None and self.train_file is None:
            raise ValueError(NEED_TRAINING_DATA)
        if self.beta is not None and self.method != "dpo":
            raise ValueError("beta only applies to method 'dpo'")
        return self

    def budget(self) -> Budget:
        """The run's budget (both limits None: no gate)."""
        return Budget(max_cost=self.max_cost, max_tokens=self.max_tokens)

    def hyperparameters(self) -> Hyperparameters:
        """Just the hyperparameters, as the contract type."""
        return Hyperparameters.model_validate(self.model_dump(include=set(Hyperparameters.model_fields)))

    def poll_policy(self, *, embedded: bool = False) -> PollPolicy:
        """The wait task's policy object; an unset interval is the API's default (``embedded``: loopback, and
        faster still once the job has logged its last step)."""
        from tasks.wait import EMBEDDED_ENDING_POLL_INTERVAL_S, EMBEDDED_POLL_INTERVAL_S, PollPolicy

        interval = self.poll_interval_s
        ending = None
        if interval is None:
            interval = EMBEDDED_POLL_INTERVAL_S if embedded else PollPolicy.interval_s
            ending = EMBEDDED_ENDING_POLL_INTERVAL_S if embedded else None
        return PollPolicy(
            interval_s=interval,
            max_interval_s=max(interval, self.poll_max_interval_s),
            timeout_s=self.wait_timeout_s,
            ending_interval_s=ending,
        )

    def _from_dir(self, names: tuple[str, ...]) -> Path | None:
        if self.dataset_dir is None:
            return None
        return next((self.dataset_dir / n for n in names if (self.dataset_dir / n).is_file()), None)

    def train_path(self) -> Path:
        """The training file (explicit, else the dataset folder's)."""
        path = self.train_file or self._from_dir(TRAIN_NAMES)
        if path is None:
            raise FileNotFoundError(f"no {' or '.join(TRAIN_NAMES)} in {self.dataset_dir}")
        return path

    def validation_path(self) -> Path | None:
        """The validation file, if any."""
        return self.validation_file or self._from_dir(VALIDATION_NAMES)

    def smoke_path(self) -> Path | None:
        """The smoke prompts file, if any."""
        return self.smoke_file or self._from_dir(SMOKE_NAMES)

    def eval_path(self) -> Path | None:
        """The eval file, if any (explicit, else the dataset folder's eval.jsonl)."""
        return self.eval_file or self._from_dir(EVAL_NAMES)

    def job_method(self) -> Method:
        """The wire ``method`` object."""
        from client.models import Method  # the client package imports httpx; the CLI parses without it

        return Method.model_validate(self.wire(self.method))


def error_lines(exc: ValidationError) -> list[str]:
    """One ``field: message`` line per pydantic error (no URLs, no input echo)."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines
