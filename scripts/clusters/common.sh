# Shared helpers for scripts/clusters/*.sh. Sourced, not run.
# shellcheck shell=bash

# shellcheck disable=SC2034  # ENV_FILE, TIMEOUT: used by the sourcing scripts
STATE=${ABENGINE_CLUSTERS_STATE:-/var/tmp/abengine-clusters}
LOGS=$STATE/logs
ENV_FILE=$STATE/env
# Seconds each system may take to become usable before up.sh gives up on it.
TIMEOUT=${ABENGINE_CLUSTERS_TIMEOUT:-90}

export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
export DEBIAN_FRONTEND=noninteractive

# Seconds since $1 (an $EPOCHREALTIME value), one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

say() { printf '%s\n' "$*"; }

# fail SYSTEM MESSAGE [LOGFILE...]: one line saying what failed, then the
# tail of each log, then exit 1 (each system runs in its own subshell).
fail() {
    local sys=$1 msg=$2 f
    shift 2
    printf '%s: FAILED: %s\n' "$sys" "$msg" >&2
    for f in "$@"; do
        [ -s "$f" ] || continue
        printf -- '--- last lines of %s\n' "$f" >&2
        tail -n 15 "$f" | sed 's/^/    /' >&2
    done
    exit 1
}

# wait_until SECONDS COMMAND...: run COMMAND every 0.1 s until it succeeds.
wait_until() {
    local limit=$1 start=$EPOCHREALTIME
    shift
    until "$@" >/dev/null 2>&1; do
        if awk -v a="$start" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            return 1
        fi
        sleep 0.1
    done
}

# pid_alive PIDFILE [NAME]: the pid in PIDFILE is a live process (named NAME).
pid_alive() {
    local pid
    [ -r "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # A killed daemon can linger as a zombie until init reaps it.
    [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

pid_gone() { ! pid_alive "$@"; }

# stop_pidfile PIDFILE NAME: TERM the process, KILL it after 10 s.
stop_pidfile() {
    local pidfile=$1 name=$2 pid
    if pid_alive "$pidfile" "$name"; then
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            pid_alive "$pidfile" || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# install_file SRC DEST MODE: replace DEST with SRC if they differ.
# Returns 0 if DEST changed, 1 if it was already identical.
install_file() {
    if [ -e "$2" ] && cmp -s "$1" "$2"; then
        rm -f "$1"
        return 1
    fi
    install -m "$3" "$1" "$2"
    rm -f "$1"
    return 0
}

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# require_packages SYSTEM PKG...: fail SYSTEM if one of PKG is not installed.
require_packages() {
    local sys=$1 p
    shift
    for p in "$@"; do
        pkg_installed "$p" || fail "$sys" "package $p is not installed" "$LOGS/apt.log"
    done
}

# ensure_packages PKG...: install those not yet installed, in one apt-get run.
# Returns non-zero (after saying why) if apt-get failed.
ensure_packages() {
    local missing=() p start added_policy=0
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    start=$EPOCHREALTIME
    say "packages: installing ${missing[*]}"
    # Package scripts must not start the Debian-default daemons (sshd on
    # port 22, munge, gridengine with the stock config): up.sh starts its own.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    # The master host name for the gridengine packages' own set-up.
    if printf '%s\n' "${missing[@]}" | grep -q '^gridengine'; then
        debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $(hostname)
EOF
    fi
    mkdir -p "$LOGS"
    local rc=0
    for p in "${missing[@]}"; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then
            apt-get update >>"$LOGS/apt.log" 2>&1 || true
            break
        fi
    done
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >>"$LOGS/apt.log" 2>&1; then
        # Stale package lists (404s) are the usual cause: refresh, try once more.
        apt-get update >>"$LOGS/apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "${missing[@]}" >>"$LOGS/apt.log" 2>&1 || rc=$?
    fi
    [ $added_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
    if [ $rc != 0 ]; then
        printf 'packages: FAILED: apt-get install %s (exit %s); see %s\n' "${missing[*]}" "$rc" "$LOGS/apt.log" >&2
        return 1
    fi
    say "packages: installed ${#missing[@]} ($(since "$start") s)"
}
