#!/usr/bin/env bash
# Install the hatrain agent on this host, or remove it. Run as root; running it again changes
# nothing that is already as it should be.
#
#   deploy/install.sh [--wheelhouse DIR] [--package WHEEL] [--data-root DIR]
#   deploy/install.sh --uninstall [--purge] [--data-root DIR]
#
# It runs from a clone (after `make dist`) or from a directory holding it, the wheel, agent.yml
# and hatrain-agent.service side by side.
#
# Installs: the wheel into /opt/hatrain/venv (its dependencies from PyPI, or offline from
# --wheelhouse), a link /usr/local/bin/hatrain-agent (the bridge users' SSH logins run), the data
# root (root's, 0711: users pass through it to what the agent gives them, and list or change
# nothing), the runtime dir /run/hatrain (root's, 0755: the agent refuses to listen in one that
# anybody else owns or may write), /etc/hatrain/agent.yml (only when absent: an edited config is
# kept) and the systemd unit; then enables and (re)starts the unit where systemd runs, and runs
# `hatrain-agent doctor`.
#
# The agent runs as root, as slurmd does: it starts each job as the account of the uid the
# kernel named, which takes root; the jobs themselves get no capabilities. There is no service
# account.
#
# --uninstall removes all of that except the data root (so that a later install finds its queue
# and jobs again); --purge removes the data root too.
# Exit status: 0 done, 1 failed, 2 bad usage, 3 installed but doctor reports problems.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PREFIX=/opt/hatrain
VENV=$PREFIX/venv
ETC=/etc/hatrain
UNIT=/etc/systemd/system/hatrain-agent.service
LINK=/usr/local/bin/hatrain-agent
RUN_DIR=/run/hatrain
DATA_ROOT=/var/lib/hatrain
PACKAGE=""
WHEELHOUSE=""
MODE=install
PURGE=0

usage() {
  sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case $1 in
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
    --package) PACKAGE=${2:?--package needs a wheel}; shift 2 ;;
    --user)
      echo "install.sh: --user: there is no service account to name: the agent runs as root" \
        "and starts each job as its user's account (README: Set up a GPU host)" >&2
      exit 2 ;;
    --data-root) DATA_ROOT=${2:?--data-root needs a directory}; shift 2 ;;
    --uninstall) MODE=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown option $1" >&2; usage ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run it as root" >&2; exit 1; }
[ $PURGE = 0 ] || [ $MODE = uninstall ] || { echo "install.sh: --purge goes with --uninstall" >&2; exit 2; }
case $DATA_ROOT in
  /*/*|/[!/]*) DATA_ROOT=$(realpath -m "$DATA_ROOT") ;;
  *) echo "install.sh: --data-root must be an absolute path other than /" >&2; exit 2 ;;
esac
[ "$DATA_ROOT" != / ] || { echo "install.sh: --data-root must be an absolute path other than /" >&2; exit 2; }

say() { echo "hatrain: $*"; }

# A file of the installation: beside this script, or where a clone keeps it.
shipped() {
  local name=$1 in_clone=$2
  if [ -e "$HERE/$name" ]; then echo "$HERE/$name"; else echo "$REPO/$in_clone"; fi
}

find_wheel() {
  local found
  found=$(ls -t "$HERE"/hatrain-*.whl "$REPO"/dist/hatrain-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$found" ]; then
    echo "install.sh: no hatrain wheel beside it or in $REPO/dist: run \`make dist\` in the" \
      "clone, or name one with --package" >&2
    exit 2
  fi
  echo "$found"
}
systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

install_package() {
  [ -n "$PACKAGE" ] || PACKAGE=$(find_wheel)
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
  local args=(--quiet --disable-pip-version-check --no-cache-dir)
  if [ -n "$WHEELHOUSE" ]; then
    args+=(--no-index --find-links "$WHEELHOUSE")
  fi
  say "installing $PACKAGE into $VENV"
  "$VENV/bin/pip" install "${args[@]}" "$PACKAGE"
  ln -sfn "$VENV/bin/hatrain-agent" "$LINK"
}

# The data root's parent and those above it must be root's and writable by nobody else: the
# agent lays out users' directories on the rule that nobody but root can swap what it acts on.
check_data_root_parents() {
  local dir
  dir=$(dirname "$DATA_ROOT")
  while :; do
    if [ -e "$dir" ]; then
      if [ "$(stat -c %u "$dir")" != 0 ] || [ $(( 0$(stat -c %a "$dir") & 022 )) != 0 ]; then
        echo "install.sh: --data-root $DATA_ROOT: $dir is not root's alone (owner" \
          "$(stat -c %U "$dir"), mode $(stat -c %a "$dir")): pick a data root whose parents" \
          "only root can write" >&2
        exit 2
      fi
    fi
    [ "$dir" = / ] && break
    dir=$(dirname "$dir")
  done
}

make_dirs() {
  install -d -m 0711 -o root -g root "$DATA_ROOT"
  install -d -m 0755 -o root -g root "$RUN_DIR" "$ETC"
}

install_config() {
  if [ ! -e "$ETC/agent.yml" ]; then
    say "installing $ETC/agent.yml (edit it: runtime, images, GPUs, admins)"
    sed "s|^data_root: /var/lib/hatrain |data_root: $DATA_ROOT |" "$(shipped agent.yml configs/agent.yml)" \
      > "$ETC/agent.yml.new"
    chmod 0644 "$ETC/agent.yml.new"
    mv "$ETC/agent.yml.new" "$ETC/agent.yml"
  fi
}

render_unit() {
  sed -e "s|^ReadWritePaths=.*|ReadWritePaths=$DATA_ROOT|" \
      "$(shipped hatrain-agent.service deploy/hatrain-agent.service)"
}

install_unit() {
  local rendered
  rendered=$(render_unit)
  if [ ! -e "$UNIT" ] || [ "$(cat "$UNIT")" != "$rendered" ]; then
    say "installing $UNIT"
    printf '%s\n' "$rendered" > "$UNIT.new"
    chmod 0644 "$UNIT.new"
    mv "$UNIT.new" "$UNIT"
  fi
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable --quiet hatrain-agent
    systemctl restart hatrain-agent  # running jobs keep running (KillMode=process)
  else
    say "systemd is not running here: the unit is installed, not started"
  fi
}

doctor() {
  say "hatrain-agent doctor"
  if "$VENV/bin/hatrain-agent" doctor --config "$ETC/agent.yml"; then
    say "installed"
  else
    say "installed, but doctor reports problems (above): fix them, then" \
      "systemctl restart hatrain-agent"
    exit 3
  fi
}

uninstall() {
  if systemd_running && [ -e "$UNIT" ]; then
    systemctl disable --now --quiet hatrain-agent || true
  fi
  rm -f "$UNIT"
  systemd_running && systemctl daemon-reload
  [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$VENV/bin/hatrain-agent" ] && rm -f "$LINK"
  rm -rf "$VENV" "$ETC" "$RUN_DIR"
  rmdir "$PREFIX" 2>/dev/null || true
  if [ $PURGE = 1 ]; then
    say "removing the data root $DATA_ROOT"
    rm -rf "$DATA_ROOT"
  else
    say "kept the data root $DATA_ROOT (--purge removes it)"
  fi
  say "uninstalled"
}

if [ $MODE = uninstall ]; then
  uninstall
  exit 0
fi
check_data_root_parents
install_package
make_dirs
install_config
install_unit
doctor
