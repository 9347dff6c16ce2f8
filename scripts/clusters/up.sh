#!/usr/bin/env bash
# Install (if missing), configure and start real daemons for the launcher
# integration tests: OpenSSH sshd on 127.0.0.1:2222, single-node SLURM and
# single-node Grid Engine. Idempotent: a second run only checks that each
# system still works (and restarts dead daemons).
#
#   scripts/clusters/up.sh [ssh] [slurm] [sge]     (default: all three; root)
#
# Writes /var/tmp/abengine-clusters/env (KEY=VALUE lines) for the systems
# that came up; exits 1 if any requested system did not.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"
. "$HERE/ssh.sh"
. "$HERE/slurm.sh"
. "$HERE/sge.sh"

ALL=(ssh slurm sge)
for s in "$@"; do
    case $s in
        ssh | slurm | sge) ;;
        *) echo "usage: $0 [ssh] [slurm] [sge]   (unknown system: $s)" >&2; exit 2 ;;
    esac
done
# The requested systems, always in this order (and each once).
systems=()
for s in "${ALL[@]}"; do
    if [ $# = 0 ] || [[ " $* " == *" $s "* ]]; then systems+=("$s"); fi
done
[ "$(id -u)" = 0 ] || { echo "$0: must run as root (installs packages, starts daemons)" >&2; exit 2; }

start=$EPOCHREALTIME
mkdir -p "$STATE" "$LOGS"
chmod 755 "$STATE"
# One up.sh/down.sh at a time.
exec 9>"$STATE/.lock"
flock 9

packages=()
for s in "${systems[@]}"; do
    case $s in
        ssh) packages+=("${SSH_PACKAGES[@]}") ;;
        slurm) packages+=("${SLURM_PACKAGES[@]}") ;;
        sge) packages+=("${SGE_PACKAGES[@]}") ;;
    esac
done
# On failure, the systems whose packages are missing fail below.
ensure_packages "${packages[@]}" || true

up=()
failed=()
for s in "${systems[@]}"; do
    # Each system in its own subshell: a failure (fail() or set -e) ends only
    # that system, and the others still come up.
    set +e
    (
        set -e
        "${s}_up"
    )
    rc=$?
    set -e
    if [ $rc = 0 ]; then up+=("$s"); else failed+=("$s"); fi
done

{
    for s in "${up[@]}"; do "${s}_env"; done
} >"$ENV_FILE.new"
mv "$ENV_FILE.new" "$ENV_FILE"
chmod 644 "$ENV_FILE"

if [ ${#failed[@]} -gt 0 ]; then
    echo "up.sh: FAILED: ${failed[*]} (up: ${up[*]:-none}; $(since "$start") s; env in $ENV_FILE)" >&2
    exit 1
fi
say "up.sh: ${up[*]} up ($(since "$start") s); env in $ENV_FILE"
