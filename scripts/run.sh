#!/usr/bin/env bash
# Set up the environment (if needed) and run the main job: the fine-tuning pipeline on the sample dataset,
# against the embedded local backend unless MKA1_API_KEY / MKA1_BASE_URL point at a remote API.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export TOKENIZERS_PARALLELISM=false
exec .venv/bin/ftpipe run "${1:-datasets/customer-support}" "${@:2}"
