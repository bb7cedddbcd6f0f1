#!/usr/bin/env bash
# Install, through apt-get, the Debian packages that make targets drive for
# real. Arguments are COMMAND=PACKAGE pairs: PACKAGE is installed when COMMAND
# is not on PATH. With no arguments, the test suite's set: promtool and
# prometheus (the prometheus package) check /metrics and the alert rules and
# run the alerting end-to-end test with prometheus-alertmanager,
# docker-compose validates the Compose file offline (no daemon needed),
# chromium renders the status page, nginx is the real reverse proxy in
# front of corral in the proxy-headers test, kubectl renders the kustomization
# (kubectl kustomize, offline). `make bench` asks for wrk=wrk and
# valgrind=valgrind (callgrind counts instructions per request).
# Idempotent: does nothing when every command is already on PATH.
set -euo pipefail

wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
    wanted=(
        promtool=prometheus
        prometheus=prometheus
        prometheus-alertmanager=prometheus-alertmanager
        docker-compose=docker-compose
        chromium=chromium
        nginx=nginx
        kubectl=kubernetes-client
    )
fi
missing=()
for pair in "${wanted[@]}"; do
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    command -v "${pair%%=*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%=*}" ] \
        || missing+=("${pair#*=}")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "system-packages: need root to install ${missing[*]}; install them with apt-get" >&2
        exit 1
    fi
    sudo=(sudo)
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-packages: no apt-get here; install ${missing[*]} by hand" >&2
    exit 1
fi

echo "system-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages would start prometheus on :9090 and alertmanager on
# :9093 where an init system runs; the tests start their own on ephemeral
# ports, so stop any that did start.
if command -v systemctl >/dev/null 2>&1; then
    for unit in prometheus prometheus-alertmanager nginx; do
        if systemctl is-active --quiet "$unit" 2>/dev/null; then
            "${sudo[@]}" systemctl stop "$unit" || true
        fi
    done
fi
