#!/usr/bin/env bash
# Install if needed, then lint and run the whole test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

export HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
.venv/bin/ruff check curation dags tests bench
.venv/bin/ruff format --check curation dags tests bench
.venv/bin/python -m pytest "$@"
