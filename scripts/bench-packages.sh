#!/usr/bin/env bash
# Install the Debian packages `make bench` drives: wrk, the HTTP load generator.
# Idempotent: does nothing when wrk is already on PATH.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "bench-packages: need root to install wrk; install it with apt-get" >&2
        exit 1
    fi
    sudo=(sudo)
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "bench-packages: no apt-get here; install wrk by hand" >&2
    exit 1
fi

echo "bench-packages: installing wrk" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends wrk >/dev/null
