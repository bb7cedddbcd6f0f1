#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real: promtool (from
# the prometheus package) checks /metrics, chromium renders the status page.
# Idempotent: does nothing when both are already on PATH.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
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
# The Debian package would start a prometheus server on :9090 where an init
# system runs; the tests start their own, so stop any that did start.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    "${sudo[@]}" systemctl stop prometheus || true
fi
