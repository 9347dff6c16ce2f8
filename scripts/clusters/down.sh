#!/usr/bin/env bash
# Stop the daemons that up.sh started (for developers; CI leaves them up).
#
#   scripts/clusters/down.sh [ssh] [slurm] [sge]   (default: all three; root)
#
# Packages, keys, configuration and spool stay, so the next up.sh is quick.
# The stopped systems' lines are removed from /var/tmp/abengine-clusters/env.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"
. "$HERE/ssh.sh"
. "$HERE/slurm.sh"
. "$HERE/sge.sh"

systems=("$@")
[ ${#systems[@]} -gt 0 ] || systems=(sge slurm ssh)
for s in "${systems[@]}"; do
    case $s in
        ssh | slurm | sge) ;;
        *) echo "usage: $0 [ssh] [slurm] [sge]   (unknown system: $s)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "$0: must run as root" >&2; exit 2; }
[ -d "$STATE" ] || { say "down.sh: nothing to stop ($STATE does not exist)"; exit 0; }

exec 9>"$STATE/.lock"
flock 9

for s in "${systems[@]}"; do
    case $s in
        ssh) ssh_down ;;
        slurm) if command -v scontrol >/dev/null; then slurm_down; else say "slurm: not installed"; fi ;;
        sge) if command -v qconf >/dev/null; then sge_down; else say "sge: not installed"; fi ;;
    esac
    if [ -f "$ENV_FILE" ]; then
        keys=$("${s}_env" | cut -d= -f1 | paste -sd'|')
        grep -Ev "^($keys)=" "$ENV_FILE" >"$ENV_FILE.new" || true
        mv "$ENV_FILE.new" "$ENV_FILE"
    fi
done
