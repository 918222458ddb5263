"""Wire constants both sides agree on (see ../shared/reference/api-contract.md). Plain Python only."""

from __future__ import annotations

import math
from typing import Final, Literal, get_args

API_PREFIX: Final = "/api/v1/llm"
# OpenAI SDK base URLs end in /v1; the embedded backend serves both prefixes.
API_PREFIXES: Final = (API_PREFIX, "/v1")
DEFAULT_BASE_URL: Final = "https://apigw.mka1.com" + API_PREFIX
# The embedded backend's unauthenticated health route answers {"status": "ok", "service": BACKEND_SERVICE,
# "pid": <server pid>}: a launcher can tell its own server from another one, or from another program, on a port.
HEALTH_PATH: Final = "/health"
BACKEND_SERVICE: Final = "ftpipe-backend"

# --- job statuses -------------------------------------------------------------------------------
# The documented enum plus `paused`, which the embedded backend reports (as OpenAI's service does).
JOB_STATUSES: Final = ("validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES: Final = frozenset({"succeeded", "failed", "cancelled"})


def is_terminal(status: str) -> bool:
    """Unknown statuses are non-terminal: a client keeps polling rather than crashing."""
    return status in TERMINAL_STATUSES


# --- checkpoints --------------------------------------------------------------------------------
# A Literal, so parameter models (a sweep's select_by) offer exactly these names as choices.
CheckpointMetric = Literal[
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
]
CHECKPOINT_METRICS: Final[tuple[str, ...]] = get_args(CheckpointMetric)

# --- metadata -----------------------------------------------------------------------------------
MAX_METADATA_PAIRS: Final = 16
MAX_METADATA_KEY_CHARS: Final = 64
MAX_METADATA_VALUE_CHARS: Final = 512
MAX_SUFFIX_CHARS: Final = 64


def metadata_problem(metadata: dict[str, str] | None) -> str | None:
    """The first way ``metadata`` breaks the contract's limits, or None when it is fine."""
    if not metadata:
        return None
    if len(metadata) > MAX_METADATA_PAIRS:
        return f"metadata has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed"
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            return f"metadata key '{key[:20]}...' is longer than {MAX_METADATA_KEY_CHARS} characters"
        if len(value) > MAX_METADATA_VALUE_CHARS:
            return f"metadata value of '{key}' is longer than {MAX_METADATA_VALUE_CHARS} characters"
    return None


# --- hyperparameters ----------------------------------------------------------------------------
AUTO: Final = "auto"
Auto = Literal["auto"]
METHODS: Final = ("supervised", "dpo")

# Wire ranges: every API accepts these. Each hyperparameter is a number in range or "auto".
N_EPOCHS_MIN: Final = 1
N_EPOCHS_MAX: Final = 50
BATCH_SIZE_MIN: Final = 1
# Exclusive lower bounds: learning_rate_multiplier > 0 and beta > 0.
LEARNING_RATE_MULTIPLIER_GT: Final = 0.0
BETA_GT: Final = 0.0
SEED_MIN: Final = 0
SEED_MAX: Final = 2**31 - 1

# The embedded backend's stricter caps (documented in backend/README.md).
BACKEND_BATCH_SIZE_MAX: Final = 256
BACKEND_LEARNING_RATE_MULTIPLIER_MAX: Final = 100.0
BACKEND_BETA_MAX: Final = 10.0

HYPERPARAMETER_RULES: Final = {
    "n_epochs": f"an integer from {N_EPOCHS_MIN} to {N_EPOCHS_MAX}, or 'auto'",
    "batch_size": f"an integer >= {BATCH_SIZE_MIN}, or 'auto'",
    "learning_rate_multiplier": "a number > 0, or 'auto'",
    "beta": "a number > 0, or 'auto' (DPO only)",
    "seed": f"an integer from {SEED_MIN} to {SEED_MAX}",
}

# "auto" epochs, OpenAI's fine-tuning heuristic: aim for 100..25000 examples seen, at most 25 epochs.
DEFAULT_EPOCHS: Final = 3
AUTO_EPOCHS_MIN_EXAMPLES_SEEN: Final = 100
AUTO_EPOCHS_MAX_EXAMPLES_SEEN: Final = 25_000
AUTO_EPOCHS_MAX: Final = 25


def auto_epochs(n_examples: int) -> int:
    """Epochs for ``n_epochs="auto"``: 3, more for small sets, fewer for huge ones."""
    if n_examples <= 0:
        return DEFAULT_EPOCHS
    if n_examples * DEFAULT_EPOCHS < AUTO_EPOCHS_MIN_EXAMPLES_SEEN:
        return min(AUTO_EPOCHS_MAX, math.ceil(AUTO_EPOCHS_MIN_EXAMPLES_SEEN / n_examples))
    if n_examples * DEFAULT_EPOCHS > AUTO_EPOCHS_MAX_EXAMPLES_SEEN:
        return max(1, AUTO_EPOCHS_MAX_EXAMPLES_SEEN // n_examples)
    return DEFAULT_EPOCHS


# --- responses ----------------------------------------------------------------------------------
# The embedded backend's answer length when a request sets no max_output_tokens, and its cap.
DEFAULT_MAX_OUTPUT_TOKENS: Final = 128
MAX_OUTPUT_TOKENS_CAP: Final = 4096
