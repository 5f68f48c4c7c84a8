#!/usr/bin/env bash
# Install the hatrain agent on this host, or remove it. Run as root; running it again changes
# nothing that is already as it should be.
#
#   deploy/install.sh [--wheelhouse DIR] [--package WHEEL] [--user NAME] [--data-root DIR]
#   deploy/install.sh --uninstall [--purge]
#
# It runs from a clone (after `make dist`) or from a directory holding it, the wheel, agent.yml
# and hatrain-agent.service side by side.
#
# Installs: the wheel into /opt/hatrain/venv (its dependencies from PyPI, or offline from
# --wheelhouse), a link
# /usr/local/bin/hatrain-agent (the bridge users' SSH logins run), the service account (default
# `hatrain`, in group docker when there is one), the data root (owned by it, 0755: logins write
# their uploads to its objects/staging and read their run dirs), the runtime dir /run/hatrain
# (owned by it, 0755: the agent refuses to listen in one that anybody else may write),
# /etc/hatrain/agent.yml (only when absent: an edited config is kept) and the systemd unit; then
# enables and (re)starts the unit where systemd runs, and runs `hatrain-agent doctor` as the
# service account.
#
# --uninstall removes all of that except the data root and the account that owns it (so that a
# later install finds its queue and jobs again); --purge removes those too.
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
SERVICE_USER=hatrain
DATA_ROOT=/var/lib/hatrain
PACKAGE=""
WHEELHOUSE=""
MODE=install
PURGE=0

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case $1 in
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
    --package) PACKAGE=${2:?--package needs a wheel}; shift 2 ;;
    --user) SERVICE_USER=${2:?--user needs a name}; shift 2 ;;
    --data-root) DATA_ROOT=${2:?--data-root needs a directory}; shift 2 ;;
    --uninstall) MODE=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown option $1" >&2; usage ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run it as root" >&2; exit 1; }
[ $PURGE = 0 ] || [ $MODE = uninstall ] || { echo "install.sh: --purge goes with --uninstall" >&2; exit 2; }
case $DATA_ROOT in /*) ;; *) echo "install.sh: --data-root must be absolute" >&2; exit 2 ;; esac
if [ "$SERVICE_USER" = root ]; then
  echo "install.sh: --user root: the agent would run as root; use a service account" >&2
  exit 2
fi

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

create_account() {
  if ! getent passwd "$SERVICE_USER" >/dev/null; then
    say "creating the service account $SERVICE_USER"
    useradd --system --user-group --home-dir "$DATA_ROOT" --no-create-home \
      --shell /usr/sbin/nologin "$SERVICE_USER"
  fi
  if getent group docker >/dev/null && ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx docker; then
    usermod -a -G docker "$SERVICE_USER"
  fi
}

make_dirs() {
  if [ -d "$DATA_ROOT" ] && [ "$(stat -c %u "$DATA_ROOT")" = 0 ]; then
    # An agent that ran as root kept it: its files become the account's; the users' own files
    # (their jobs' secrets, their staged uploads) stay theirs.
    say "handing $DATA_ROOT, kept by an agent running as root, to $SERVICE_USER"
    find "$DATA_ROOT" -user root -exec chown -h "$SERVICE_USER:$SERVICE_USER" {} +
  fi
  install -d -m 0755 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_ROOT" "$RUN_DIR"
  install -d -m 0755 "$ETC"
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
  local groups=""
  getent group docker >/dev/null && groups=docker
  sed -e "s|^User=.*|User=$SERVICE_USER|" -e "s|^Group=.*|Group=$SERVICE_USER|" \
      -e "s|^SupplementaryGroups=.*|SupplementaryGroups=$groups|" \
      -e "s|^ReadWritePaths=.*|ReadWritePaths=$DATA_ROOT|" \
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
  say "hatrain-agent doctor (as $SERVICE_USER)"
  if runuser -u "$SERVICE_USER" -- "$VENV/bin/hatrain-agent" doctor --config "$ETC/agent.yml"; then
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
    say "removing the data root $DATA_ROOT and the account $SERVICE_USER"
    rm -rf "$DATA_ROOT"
    getent passwd "$SERVICE_USER" >/dev/null && userdel "$SERVICE_USER"
    getent group "$SERVICE_USER" >/dev/null && groupdel "$SERVICE_USER"
  else
    say "kept the data root $DATA_ROOT and its owner $SERVICE_USER (--purge removes them)"
  fi
  say "uninstalled"
}

if [ $MODE = uninstall ]; then
  uninstall
  exit 0
fi
install_package
create_account
make_dirs
install_config
install_unit
doctor
