#!/usr/bin/env bash
# Installs what astra-stac needs from the OS: PostgreSQL server binaries and PostGIS.
# Runs apt-get only as root or through sudo; otherwise says what to install.
set -euo pipefail

pg_major() {
  ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sed -E 's#.*/postgresql/([0-9]+)/bin/initdb#\1#' | sort -n | tail -1
}

has_postgis() {
  local v="$1"
  ls /usr/share/postgresql/"$v"/extension/postgis.control >/dev/null 2>&1
}

has_venv() {
  "${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1
}

major="$(pg_major || true)"
if [ -n "$major" ] && has_postgis "$major" && has_venv; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "astra-stac needs the PostgreSQL server and PostGIS from your OS packages." >&2
  echo "Run as root (or with sudo):" >&2
  echo "  apt-get update && apt-get install -y python3-venv postgresql postgresql-${major:-15}-postgis-3" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if ! has_venv; then
  $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
if [ -z "$major" ]; then
  $SUDO apt-get install -y -qq postgresql-common >/dev/null
  # do not create and start a system-wide cluster: astra-stac runs its own
  $SUDO sed -i 's/^#\?create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf || true
  $SUDO apt-get install -y -qq postgresql >/dev/null
  major="$(pg_major)"
fi
$SUDO apt-get install -y -qq "postgresql-${major}-postgis-3" >/dev/null
echo "Installed PostgreSQL ${major} with PostGIS."
