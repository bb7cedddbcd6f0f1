#!/usr/bin/env bash
# Print the path of a free-threaded (--disable-gil) CPython, providing one if needed.
#
# Which CPython: 3.13 unless CORRAL_FT_VERSION says otherwise (3.14 for the
# bench's 3.14t rows; `make venv-ft314`).
#
# stdout: exactly one line, the interpreter's path. Progress goes to stderr;
# on success the script is quiet unless it has to build.
#
# Where the interpreter comes from, first match wins:
#   1. On PATH, if it really is free-threaded (sysconfig Py_GIL_DISABLED == 1):
#      python3.14t, then python3.13t; with CORRAL_FT_VERSION set, only
#      python${CORRAL_FT_VERSION}t.
#   2. A previous build of this script under the cache prefix
#      ${CORRAL_FT_PREFIX:-$HOME/.cache/corral/python${VERSION}t}, reused only if
#      its completion marker (PREFIX/.corral-complete) exists.
#   3. A fresh build of Debian's python${VERSION} source package with
#      --disable-gil (about 2.5 min on 2 cores for 3.13, 4 for 3.14): from
#      trixie for 3.13, from forky (testing) for 3.14, which trixie lacks.
#      apt is used with a private configuration, so the machine's own
#      sources and lists stay untouched.
#      The mirror is taken from the machine's own Debian sources. The build
#      happens in a temporary directory and is installed into a staging
#      prefix that is renamed into place only after it succeeded.
#
# Environment:
#   CORRAL_FT_VERSION  CPython minor version to provide: 3.13 (default) or 3.14
#   CORRAL_FT_PREFIX   install prefix of the built interpreter (see above)
#   CORRAL_FT_LOG      build log (default: PREFIX.build.log)
#   CORRAL_FT_SUITE    Debian suite to take the source from (default: see above)
set -euo pipefail

readonly VERSION="${CORRAL_FT_VERSION:-3.13}"
case "$VERSION" in
    3.13) default_suite=trixie ;;
    3.14) default_suite=forky ;;
    *)
        printf 'free-threaded-python: error: CORRAL_FT_VERSION=%s; use 3.13 or 3.14\n' "$VERSION" >&2
        exit 2
        ;;
esac
readonly PREFIX="${CORRAL_FT_PREFIX:-$HOME/.cache/corral/python${VERSION}t}"
readonly SUITE="${CORRAL_FT_SUITE:-$default_suite}"
readonly MARKER="$PREFIX/.corral-complete"
readonly INTERPRETER="$PREFIX/bin/python${VERSION}t"
# Only the asked-for version on PATH when one was asked for; else either.
if [[ -n "${CORRAL_FT_VERSION:-}" ]]; then
    readonly ON_PATH="python${VERSION}t"
else
    readonly ON_PATH="python3.14t python3.13t"
fi
LOG="${CORRAL_FT_LOG:-$PREFIX.build.log}"
readonly LOG

log() { printf 'free-threaded-python: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# True when $1 runs and reports a free-threaded build.
is_free_threaded() {
    "$1" -c 'import sys, sysconfig; sys.exit(sysconfig.get_config_var("Py_GIL_DISABLED") != 1)' \
        >/dev/null 2>&1
}

find_existing() {
    local candidate path
    for candidate in $ON_PATH; do
        path="$(command -v "$candidate" 2>/dev/null || true)"
        if [[ -n "$path" ]] && is_free_threaded "$path"; then
            printf '%s\n' "$path"
            return 0
        fi
    done
    if [[ -f "$MARKER" && -x "$INTERPRETER" ]] && is_free_threaded "$INTERPRETER"; then
        printf '%s\n' "$INTERPRETER"
        return 0
    fi
    return 1
}

# The machine's main Debian mirror: the first URIs: line of a deb822 file,
# else the first deb line of sources.list. Security and update archives are
# skipped, since they do not carry the release's source packages.
debian_mirror() {
    local uri
    uri="$(
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' \
            | grep -v -e security -e updates | grep -i debian | head -n 1 || true
    )"
    if [[ -z "$uri" ]]; then
        uri="$(
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' \
                /etc/apt/sources.list 2>/dev/null \
                | grep -v -e security -e updates | grep -i debian | head -n 1 || true
        )"
    fi
    [[ -n "$uri" ]] || return 1
    printf '%s\n' "${uri%/}"
}

# Run a build step with its output in the log; on failure show the log's tail.
step() {
    local what="$1"
    shift
    printf '\n=== %s: %s\n' "$what" "$*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        log "last lines of $LOG:"
        tail -n 30 "$LOG" >&2
        die "$what failed; see $LOG"
    fi
}

ensure_dpkg_source() {
    command -v dpkg-source >/dev/null 2>&1 && return 0
    log "installing dpkg-dev (apt-get source needs dpkg-source)"
    step "apt-get update" apt-get update
    step "install dpkg-dev" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dpkg-dev
}

WORK=""
STAGING=""
cleanup() {
    [[ -z "$WORK" ]] || rm -rf "$WORK"
    [[ -z "$STAGING" ]] || rm -rf "$STAGING"
}

build() {
    local mirror apt_dir tarball src started
    command -v apt-get >/dev/null 2>&1 \
        || die "no apt-get: install a free-threaded python${VERSION}t and put it on PATH"
    mirror="$(debian_mirror)" \
        || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
    # The prefix is replaced wholesale, so only ever remove one this script made.
    if [[ -e "$PREFIX" && ! -f "$MARKER" ]]; then
        die "$PREFIX exists but was not made by this script; remove it or set CORRAL_FT_PREFIX"
    fi

    mkdir -p "$(dirname "$PREFIX")" "$(dirname "$LOG")"
    : >"$LOG"
    started=$SECONDS
    log "building a free-threaded CPython $VERSION into $PREFIX (about 3 minutes; log: $LOG)"
    ensure_dpkg_source

    trap cleanup EXIT
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/corral-ft-build.XXXXXX")"
    # Beside PREFIX, so moving the finished tree into place is one rename.
    STAGING="$(mktemp -d "$PREFIX.staging.XXXXXX")"

    apt_dir="$WORK/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$WORK/src"
    printf 'deb-src %s %s main\n' "$mirror" "$SUITE" >"$apt_dir/sources.list"
    local -a apt_opts=(
        -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
        -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
    )
    step "apt-get update ($mirror $SUITE, private lists)" apt-get "${apt_opts[@]}" update
    (cd "$WORK/src" && step "apt-get source" apt-get "${apt_opts[@]}" source --download-only "python$VERSION")

    tarball="$(find "$WORK/src" -maxdepth 1 -name "python${VERSION}_*.orig.tar.*" ! -name '*.asc' | head -n 1)"
    [[ -n "$tarball" ]] || die "apt-get source fetched no python$VERSION orig tarball; see $LOG"
    step "unpack" tar -xf "$tarball" -C "$WORK/src"
    src="$(find "$WORK/src" -mindepth 1 -maxdepth 1 -type d -name "Python-${VERSION}*" | head -n 1)"
    [[ -n "$src" ]] || die "the orig tarball held no Python-${VERSION}* directory"

    # Configure for the final PREFIX (it is baked into scripts and sysconfig),
    # install under DESTDIR, and mark the tree complete before the rename: a
    # half-built tree never sits at PREFIX.
    (
        cd "$src"
        step "configure" ./configure --disable-gil --prefix="$PREFIX"
        step "make" make -j"$(nproc)"
        step "make altinstall" make altinstall DESTDIR="$STAGING"
    )
    [[ -x "$STAGING$INTERPRETER" ]] || die "make altinstall produced no $INTERPRETER"
    touch "$STAGING$MARKER"

    rm -rf "$PREFIX"
    mv "$STAGING$PREFIX" "$PREFIX"
    if ! is_free_threaded "$INTERPRETER"; then
        rm -rf "$PREFIX"
        die "$INTERPRETER was built but is not free-threaded"
    fi
    log "built $INTERPRETER in $((SECONDS - started)) s"
}

main() {
    if find_existing; then
        return 0
    fi
    build
    printf '%s\n' "$INTERPRETER"
}

main "$@"
