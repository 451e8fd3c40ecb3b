#!/bin/sh
# Installs the Debian packages the native stack needs when they are missing.
# Usage: scripts/ensure_system_packages.sh PACKAGE:COMMAND ...
# (e.g. nginx:/usr/sbin/nginx). As root it uses apt-get; otherwise it prints
# the one line to run. Arguments come from the Makefile, never from users.
set -eu
missing=""
for pair in "$@"; do
    package=${pair%%:*}
    command=${pair#*:}
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "$command" ]; then
        missing="$missing $package"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    echo "installing:$missing"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
else
    echo "missing system packages:$missing" >&2
    echo "install them with:  sudo apt-get install -y$missing" >&2
    exit 1
fi
