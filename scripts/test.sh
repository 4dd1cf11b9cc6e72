#!/usr/bin/env bash
# Sets everything up, then runs the default test suite (slow tests: `.venv/bin/python -m pytest -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
