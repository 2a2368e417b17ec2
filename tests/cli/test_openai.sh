#!/usr/bin/env bash
# The OpenAI-compatible API through the real `openai` Python client, installed from PyPI here.
#   usage: test_openai.sh BUILD_BIN_DIR CONFIGS_DIR
set -euo pipefail
python3 -c "import openai" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check openai
exec python3 "$(dirname "$0")/test_openai.py" "$@"
