#!/usr/bin/env bash
# Set up the environment (if needed) and run the whole test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export TOKENIZERS_PARALLELISM=false
# pytest exits 5 when no tests were collected; that is a failure for us, as is any other non-zero code.
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
