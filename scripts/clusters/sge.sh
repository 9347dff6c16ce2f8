# Single-node Grid Engine (sge_qmaster, sge_execd, queue all.q) for the SGE
# launcher tests. Sourced by up.sh / down.sh (needs common.sh).
# The Debian packages keep the cell in $SGE_ROOT/$SGE_CELL (= /var/lib/
# gridengine/default) and the spool in /var/spool/gridengine; clients (qsub,
# qstat, qdel, qconf in /usr/bin) need only SGE_ROOT and SGE_CELL.
# shellcheck shell=bash disable=SC2153  # STATE, LOGS... come from common.sh

SGE_DIR=$STATE/sge
SGE_PACKAGES=(gridengine-master gridengine-exec gridengine-client)
SGE_COMMON=$SGE_ROOT/$SGE_CELL/common
SGE_SPOOL=/var/spool/gridengine
SGE_QMASTER_PID=$SGE_SPOOL/qmaster/qmaster.pid
SGE_QMASTER_LOG=$SGE_SPOOL/qmaster/messages

# The name Grid Engine knows this host by: the canonical name of `hostname`.
sge_host() {
    local h
    h=$(getent hosts "$(hostname)" | awk '{ print $2; exit }')
    echo "${h:-$(hostname)}"
}

# sge_execd keeps its pid and messages in execd_spool_dir/<its own name for
# the host>, which is not always sge_host (here: "localhost").
sge_execd_dir() {
    local f
    for f in "$SGE_SPOOL"/execd/*/execd.pid; do
        if pid_alive "$f" sge_execd; then
            dirname "$f"
            return
        fi
    done
    for f in "$SGE_SPOOL"/execd/*/messages; do
        [ -e "$f" ] && { dirname "$f"; return; }
    done
    echo "$SGE_SPOOL/execd/$(sge_host)"
}
sge_execd_pidfile() { echo "$(sge_execd_dir)/execd.pid"; }
sge_execd_log() { echo "$(sge_execd_dir)/messages"; }

# Cell files that say where the master is and how names resolve.
sge_write_cell() {
    local host ip rev
    # Grid Engine needs the host name to resolve (Debian images normally
    # map it in /etc/hosts; add it to loopback if not).
    if ! getent hosts "$(hostname)" >/dev/null; then
        echo "127.0.0.1 $(hostname) # added by abengine scripts/clusters/sge.sh" >>/etc/hosts
    fi
    host=$(sge_host)
    mkdir -p "$SGE_COMMON" /var/run/gridengine
    chown sgeadmin:sgeadmin /var/run/gridengine
    # The spool is initialised by the gridengine-master package; redo it if
    # it is missing (e.g. someone removed /var/spool/gridengine).
    if [ ! -e "$SGE_SPOOL/spooldb/sge" ]; then
        mkdir -p "$SGE_SPOOL/qmaster/job_scripts" "$SGE_SPOOL/spooldb" "$SGE_SPOOL/execd"
        chown -R sgeadmin:sgeadmin "$SGE_SPOOL"
        [ -e "$SGE_COMMON/bootstrap" ] ||
            install -m 644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap "$SGE_COMMON/bootstrap"
        runuser -u sgeadmin -- /usr/share/gridengine/scripts/init_cluster \
            "$SGE_ROOT" "$SGE_CELL" "$SGE_SPOOL/spooldb" sgeadmin >>"$LOGS/sge-init.log" 2>&1 ||
            fail sge "could not initialise the Grid Engine spool" "$LOGS/sge-init.log"
    fi
    echo "$host" >"$SGE_COMMON/act_qmaster.new"
    install_file "$SGE_COMMON/act_qmaster.new" "$SGE_COMMON/act_qmaster" 644 || true
    # Grid Engine refuses a host whose address resolves back to another name
    # (here 127.0.0.1 -> localhost): declare that name an alias of the host.
    ip=$(getent ahostsv4 "$host" | awk '{ print $1; exit }')
    rev=$(getent hosts "${ip:-127.0.0.1}" | awk '{ print $2; exit }')
    if [ -n "$rev" ] && [ "$rev" != "$host" ]; then
        echo "$host $rev" >"$SGE_COMMON/host_aliases.new"
    else
        : >"$SGE_COMMON/host_aliases.new"
    fi
    install_file "$SGE_COMMON/host_aliases.new" "$SGE_COMMON/host_aliases" 644 || true
    chown sgeadmin:sgeadmin "$SGE_COMMON/act_qmaster" "$SGE_COMMON/host_aliases"
}

sge_qmaster_works() { qconf -sh >/dev/null 2>&1; }

# sge_set_fields FILE NAME VALUE...: set "NAME VALUE" lines in a qconf dump.
# Returns 0 if anything changed.
sge_set_fields() {
    local file=$1 changed=1 name value cur
    shift
    while [ $# -ge 2 ]; do
        name=$1 value=$2
        shift 2
        cur=$(awk -v n="$name" '$1 == n { $1 = ""; sub(/^ +/, ""); print; exit }' "$file")
        if [ "$cur" != "$value" ]; then
            awk -v n="$name" -v v="$value" '$1 == n { printf "%-32s %s\n", n, v; next } { print }' \
                "$file" >"$file.tmp" && mv "$file.tmp" "$file"
            grep -q "^$name " "$file" || printf '%-32s %s\n' "$name" "$value" >>"$file"
            changed=0
        fi
    done
    return $changed
}

sge_configure() {
    local host slots
    host=$(sge_host)
    slots=$(nproc)
    mkdir -p "$SGE_DIR/conf"
    qconf -sh 2>/dev/null | grep -qxF "$host" || qconf -ah "$host" >>"$LOGS/sge-qconf.log" 2>&1
    qconf -ss 2>/dev/null | grep -qxF "$host" || qconf -as "$host" >>"$LOGS/sge-qconf.log" 2>&1

    # Global configuration: root may submit; execd reports load often.
    qconf -sconf global | grep -v '^#' >"$SGE_DIR/conf/global"
    if sge_set_fields "$SGE_DIR/conf/global" min_uid 0 min_gid 0 load_report_time 00:00:10; then
        qconf -Mconf "$SGE_DIR/conf/global" >>"$LOGS/sge-qconf.log" 2>&1 ||
            fail sge "qconf -Mconf global failed" "$LOGS/sge-qconf.log"
    fi

    # Scheduler: run every second and right after each submit/finish, and do
    # not count freshly started jobs as load (which would hold the next one).
    qconf -ssconf >"$SGE_DIR/conf/sched"
    if sge_set_fields "$SGE_DIR/conf/sched" schedule_interval 0:0:1 flush_submit_sec 1 flush_finish_sec 1 \
        job_load_adjustments NONE load_adjustment_decay_time 0:0:0; then
        qconf -Msconf "$SGE_DIR/conf/sched" >>"$LOGS/sge-qconf.log" 2>&1 ||
            fail sge "qconf -Msconf failed" "$LOGS/sge-qconf.log"
    fi
}

# Queue all.q on this host, slots = cores, no load thresholds.
sge_configure_queue() {
    local host slots
    host=$(sge_host)
    slots=$(nproc)
    if qconf -sq all.q >"$SGE_DIR/conf/all.q" 2>/dev/null; then
        if sge_set_fields "$SGE_DIR/conf/all.q" hostlist "$host" slots "$slots" shell /bin/sh \
            load_thresholds NONE suspend_thresholds NONE pe_list NONE; then
            qconf -Mq "$SGE_DIR/conf/all.q" >>"$LOGS/sge-qconf.log" 2>&1 ||
                fail sge "qconf -Mq all.q failed" "$LOGS/sge-qconf.log"
        fi
    else
        qconf -sq >"$SGE_DIR/conf/all.q" # the template
        sge_set_fields "$SGE_DIR/conf/all.q" qname all.q hostlist "$host" slots "$slots" shell /bin/sh \
            load_thresholds NONE suspend_thresholds NONE pe_list NONE || true
        qconf -Aq "$SGE_DIR/conf/all.q" >>"$LOGS/sge-qconf.log" 2>&1 ||
            fail sge "qconf -Aq all.q failed" "$LOGS/sge-qconf.log"
    fi
}

# The queue instance on this host takes jobs; clear error/disabled states.
sge_queue_ready() {
    local host states
    host=$(sge_host)
    # "-" when the queue instance exists without states, empty if it does not.
    states=$(qstat -f -q "all.q@$host" 2>/dev/null | awk -v q="all.q@$host" '$1 == q { print ($6 == "" ? "-" : $6); exit }')
    case $states in
        "") return 1 ;;
        -) return 0 ;;
        *u*) return 1 ;;
        *E*) qmod -cq "all.q@$host" >/dev/null 2>&1; return 1 ;;
        *d*) qmod -e "all.q@$host" >/dev/null 2>&1; return 1 ;;
    esac
    return 1
}

# Submit a tiny job and wait for it to finish; sets PROBE_TIMES.
sge_probe() {
    local out=$SGE_DIR/probe.out t0 started rc=0
    rm -f "$out"
    printf '#!/bin/sh\ndate +%%s.%%N\n' >"$SGE_DIR/probe.sh"
    t0=$EPOCHREALTIME
    timeout "$TIMEOUT" qsub -sync y -N abengine-probe -cwd -wd "$SGE_DIR" -o "$out" -j y \
        "$SGE_DIR/probe.sh" >"$SGE_DIR/probe.qsub" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        cat "$SGE_DIR/probe.qsub" >&2
        [ $rc != 124 ] || echo "job still not done after ${TIMEOUT} s" >&2
        qdel abengine-probe >/dev/null 2>&1 || true
        return 1
    fi
    started=$(head -n 1 "$out" 2>/dev/null) || true
    PROBE_TIMES=$(awk -v a="$t0" -v s="${started:-0}" -v b="$EPOCHREALTIME" \
        'BEGIN { if (s > 0) printf "qsub->running %.2f s, ", s - a; printf "->completed %.2f s", b - a }')
}

sge_up() {
    local start=$EPOCHREALTIME t host qmaster_started=0
    require_packages sge "${SGE_PACKAGES[@]}"
    mkdir -p "$SGE_DIR" "$LOGS"
    sge_write_cell
    host=$(sge_host)
    ln -sfn "$SGE_QMASTER_LOG" "$LOGS/sge_qmaster.messages"
    ln -sfn "$(sge_execd_log)" "$LOGS/sge_execd.messages"

    t=$EPOCHREALTIME
    if pid_alive "$SGE_QMASTER_PID" sge_qmaster && sge_qmaster_works; then
        say "sge: sge_qmaster already up"
    else
        stop_pidfile "$SGE_QMASTER_PID" sge_qmaster
        /usr/sbin/sge_qmaster >>"$LOGS/sge_qmaster.out" 2>&1 9>&- ||
            fail sge "sge_qmaster did not start" "$LOGS/sge_qmaster.out" "$SGE_QMASTER_LOG"
        wait_until "$TIMEOUT" sge_qmaster_works ||
            fail sge "sge_qmaster does not answer qconf after ${TIMEOUT} s" "$LOGS/sge_qmaster.out" "$SGE_QMASTER_LOG"
        say "sge: sge_qmaster up on $host ($(since "$t") s)"
        qmaster_started=1
    fi
    sge_configure

    t=$EPOCHREALTIME
    if [ $qmaster_started = 1 ] && pid_alive "$(sge_execd_pidfile)" sge_execd; then
        # An execd that outlived its qmaster takes ~25 s to report to the new
        # one; a fresh execd registers at once (running jobs are kept).
        stop_pidfile "$(sge_execd_pidfile)" sge_execd
    fi
    if pid_alive "$(sge_execd_pidfile)" sge_execd; then
        say "sge: sge_execd already up"
    else
        stop_pidfile "$(sge_execd_pidfile)" sge_execd
        /usr/sbin/sge_execd >>"$LOGS/sge_execd.out" 2>&1 9>&- ||
            fail sge "sge_execd did not start" "$LOGS/sge_execd.out" "$(sge_execd_log)"
        say "sge: sge_execd started ($(since "$t") s)"
    fi
    ln -sfn "$(sge_execd_log)" "$LOGS/sge_execd.messages"
    wait_until "$TIMEOUT" bash -c "qconf -sel 2>/dev/null | grep -qxF '$host'" ||
        fail sge "sge_execd did not register $host as an execution host after ${TIMEOUT} s" \
            "$LOGS/sge_execd.out" "$(sge_execd_log)" "$SGE_QMASTER_LOG"
    sge_configure_queue
    wait_until "$TIMEOUT" sge_queue_ready ||
        fail sge "queue all.q@$host not ready after ${TIMEOUT} s: $(qstat -f 2>&1 | grep "^all.q@" | head -n 1)" \
            "$(sge_execd_log)" "$SGE_QMASTER_LOG"
    say "sge: queue all.q@$host ready, $(nproc) slots ($(since "$start") s)"

    sge_probe 2>"$LOGS/sge-probe.err" ||
        fail sge "test job did not run: $(tail -n 1 "$LOGS/sge-probe.err")" \
            "$LOGS/sge-probe.err" "$(sge_execd_log)" "$SGE_QMASTER_LOG"
    say "sge: test job ran ($PROBE_TIMES)"
    say "sge: up ($(since "$start") s)"
}

sge_env() {
    cat <<EOF
ABENGINE_TEST_SGE=1
SGE_ROOT=$SGE_ROOT
SGE_CELL=$SGE_CELL
EOF
}

sge_down() {
    local any=0 host
    host=$(sge_host)
    if pid_alive "$(sge_execd_pidfile)" sge_execd; then
        # -kej: the execd kills its jobs too.
        qconf -kej "$host" >/dev/null 2>&1 || true
        wait_until 10 pid_gone "$(sge_execd_pidfile)" sge_execd || true
        stop_pidfile "$(sge_execd_pidfile)" sge_execd
        any=1
    fi
    if pid_alive "$SGE_QMASTER_PID" sge_qmaster; then
        qconf -km >/dev/null 2>&1 || true
        wait_until 10 pid_gone "$SGE_QMASTER_PID" sge_qmaster || true
        stop_pidfile "$SGE_QMASTER_PID" sge_qmaster
        any=1
    fi
    if [ $any = 1 ]; then say "sge: stopped"; else say "sge: not running"; fi
}
