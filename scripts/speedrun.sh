#!/usr/bin/env bash
# Install glm45 into .venv and run the embedded default: a tiny GLM-4.5 trained end to end on this CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
glm45 speedrun "$@"
