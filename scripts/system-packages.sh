#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real: promtool (from
# the prometheus package) checks /metrics and the alert rules, prometheus and
# prometheus-alertmanager run the alerting end-to-end test, docker-compose
# validates the Compose file offline (no daemon needed), chromium renders the
# status page. Idempotent: does nothing when all are already on PATH.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
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
    for unit in prometheus prometheus-alertmanager; do
        if systemctl is-active --quiet "$unit" 2>/dev/null; then
            "${sudo[@]}" systemctl stop "$unit" || true
        fi
    done
fi
