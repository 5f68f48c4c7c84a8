#!/usr/bin/env bash
# Prepare this machine to run hatrain's tests and demo: system packages, a running Docker engine,
# sshd binaries, PostgreSQL 15 (the team queue's tests), and the CPU Axolotl virtualenv (cached outside the repository and reused).
#   --test-gpu-hook  start dockerd with the stand-in hook of tests/support/bin (copied to
#                    $CACHE/test-gpu-hook) on PATH, so that its NVIDIA device driver calls it
#                    (CI has no GPU; see tests/support/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
want_hook=0
[ "${1:-}" = "--test-gpu-hook" ] && want_hook=1
CACHE=${HATRAIN_CACHE:-$HOME/.cache/hatrain}
AXOLOTL_VENV=${HATRAIN_AXOLOTL_VENV:-$CACHE/axolotl-venv}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

need=()
command -v dockerd >/dev/null || need+=(docker.io)
[ -x /usr/bin/docker-init ] || need+=(tini)            # containers run with an init
command -v nsenter >/dev/null || need+=(util-linux)  # an engine of its own for fault tests
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
command -v rsync >/dev/null || need+=(rsync)          # a peer in bench/
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)   # image pulls in the tests
command -v ssh-keygen >/dev/null || need+=(openssh-client)
# The team queue's tests start servers of their own from Debian's PostgreSQL 15 binaries.
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v setpriv >/dev/null || need+=(util-linux)   # local-runtime steps run as their user
# The tests' stand-in `axolotl` for local-runtime jobs, which run as ordinary test accounts that
# cannot enter /root (where the tests' own Python may live): the system's Python and PyYAML.
/usr/bin/python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
command -v systemd-analyze >/dev/null || need+=(systemd)   # the unit is checked with `verify`
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)      # a Debian root for install.sh's test
command -v tmux >/dev/null || need+=(tmux)            # a real terminal for the live view's tests
command -v strace >/dev/null || need+=(strace)        # the store's commits reach the disk
command -v chromium >/dev/null || need+=(chromium)     # screenshots of TensorBoard in the tests
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The hook is copied to one place outside the checkout, so that every checkout on this machine
# (worktrees, clones) gives dockerd the same PATH and none restarts it under the others' tests.
hook_dir=$CACHE/test-gpu-hook
if [ $want_hook = 1 ]; then
  mkdir -p "$hook_dir"
  cp -p tests/support/bin/* "$hook_dir"/
fi
dockerd_pid=$(pgrep -xo dockerd || true)
if [ -n "$dockerd_pid" ] && [ $want_hook = 1 ] && \
   ! tr '\0' '\n' < "/proc/$dockerd_pid/environ" | grep -q "^PATH=.*$hook_dir"; then
  echo "restarting dockerd with the test GPU hook on its PATH"
  $SUDO kill "$dockerd_pid"
  for _ in $(seq 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  dockerd_pid=""
fi
if ! docker info >/dev/null 2>&1; then
  if [ -z "$dockerd_pid" ]; then
    path=$PATH; [ $want_hook = 1 ] && path=$hook_dir:$PATH
    mkdir -p "$CACHE"
    echo "starting dockerd (log: $CACHE/dockerd.log)"
    $SUDO env PATH="$path" setsid dockerd >"$CACHE/dockerd.log" 2>&1 < /dev/null &
  fi
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $CACHE/dockerd.log" >&2; exit 1; }
fi

# A fresh Debian 12 root for deploy/install.sh's test (tests/test_deploy_install.py), made once.
if ! docker image inspect hatrain-test/debian:12 >/dev/null 2>&1; then
  echo "making a Debian 12 root for the install test (mmdebstrap, a few minutes, once)"
  $SUDO mmdebstrap --quiet --variant=minbase --include=python3,python3-venv bookworm - \
    | docker import - hatrain-test/debian:12 >/dev/null
fi

if ! "$AXOLOTL_VENV/bin/python" -c 'import axolotl' 2>/dev/null; then
  echo "installing Axolotl 0.19.0 for the CPU into $AXOLOTL_VENV (a few minutes, once)"
  python3 -m venv "$AXOLOTL_VENV"
  "$AXOLOTL_VENV/bin/pip" install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
  "$AXOLOTL_VENV/bin/pip" install -q axolotl==0.19.0 2>&1 | grep -v '^WARNING: Location' || true
  "$AXOLOTL_VENV/bin/python" -c 'import axolotl' || { echo "Axolotl install failed" >&2; exit 1; }
fi
# The tests' TensorBoard (`tensorboard.venv`) is this venv's; Axolotl normally brings it along.
if ! "$AXOLOTL_VENV/bin/python" -c 'import tensorboard' 2>/dev/null; then
  echo "installing TensorBoard into $AXOLOTL_VENV"
  "$AXOLOTL_VENV/bin/pip" install -q tensorboard 2>&1 | grep -v '^WARNING: Location' || true
  "$AXOLOTL_VENV/bin/python" -c 'import tensorboard' || { echo "TensorBoard install failed" >&2; exit 1; }
fi
echo "host ready: docker $(docker version --format '{{.Server.Version}}'), axolotl venv $AXOLOTL_VENV"
