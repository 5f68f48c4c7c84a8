#!/usr/bin/env bash
# Generate the gRPC stubs from proto/ with the pinned grpcio-tools; --check fails if that changes anything.
set -euo pipefail
py=${1:?python}
mode=${2:-}
out=proto
if [ "$mode" = "--check" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
"$py" -m grpc_tools.protoc -I proto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/hatrain/rpc/v1/agent.proto
if [ "$mode" = "--check" ]; then
  for f in agent_pb2.py agent_pb2.pyi agent_pb2_grpc.py; do
    if ! cmp -s "$out/hatrain/rpc/v1/$f" "proto/hatrain/rpc/v1/$f"; then
      echo "proto/hatrain/rpc/v1/$f is stale: run 'make proto' and commit the result" >&2
      exit 1
    fi
  done
  echo "generated stubs are up to date"
fi
