#!/usr/bin/env bash
# Create the project's virtualenv and install hatrain (editable) with its dev tools.
set -euo pipefail
venv=${1:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$venv/bin/pip" install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
"$venv/bin/python" -c 'import hatrain.agent, hatrain.client, hatrain.rpc.v1.agent_pb2' 2>/dev/null \
  || "$venv/bin/python" -c 'import grpc, docker, paramiko'
