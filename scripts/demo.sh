#!/usr/bin/env bash
# `make demo`: three storage nodes as three sites (tokyo primary, osaka sync, sapporo async) with the
# multi-target topology of erp.yaml applied, a small steady write workload that follows the
# application from site to site (scripts/demo-workload.mjs), and `topology status` printed every few
# seconds until Ctrl-C. A manager runs beside the sites (embedded store in $DEMO_DIR/manager): it knows
# the three nodes and the topology, takes their failure reports and serves the web console. Everything the demo starts is stopped when it ends, with deadlines; what an
# earlier demo left running (it was killed) is found from its pid files and ended first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tricopy="$root/bin/tricopy"
var=${DEMO_DIR:-$root/var/demo}
mkdir -p "$var"
var=$(cd "$var" && pwd)

base_nbd=${DEMO_NBD_PORT:-10809}
base_api=${DEMO_API_PORT:-7801}
base_repl=${DEMO_REPL_PORT:-7800}
# The manager's API and console: 7900 with the default ports (99 above the first site's API port).
manager_port=${DEMO_MANAGER_PORT:-$((base_api + 99))}
manager_url=http://127.0.0.1:$manager_port
interval=${DEMO_STATUS_SECONDS:-5}
db1_size=${DEMO_DB1_SIZE:-1GiB}
log1_size=${DEMO_LOG1_SIZE:-256MiB}
write_iops=${DEMO_WRITE_IOPS:-200}
# Seconds a process gets after SIGTERM before SIGKILL: the workload (it stops fio itself), fio, a node.
workload_stop_seconds=10
fio_stop_seconds=5
node_stop_seconds=30
sites=(tokyo osaka sapporo)
declare -A nbd api

# ------------------------------------------------------------------------------------------------
# Processes by pid file. A pid is only trusted while its command line still says what it was
# (pids are reused), and a zombie counts as ended.

running() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Prints the pid in file $1 if that process runs and its command line contains $2.
pid_of() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
  echo "$pid"
}

# SIGTERM, then up to $3 seconds to end, then SIGKILL.
end_process() {
  local pid=$1 what=$2 seconds=$3 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < seconds * 10; i++)); do
    running "$pid" || return 0
    sleep 0.1
  done
  echo "$what (pid $pid) did not stop within $seconds s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do running "$pid" || return 0; sleep 0.1; done
}

workload_marker="demo-workload.mjs --dir $var "
fio_marker="--name=tricopy-demo"
node_marker() { echo "--data-dir $var/$1 "; }
manager_marker="--data-dir $var/manager "

# The workload stops its own fio; fio's pid is read first in case the workload has to be killed.
end_workload() {
  local workload fio
  workload=$(pid_of "$var/workload.pid" "$workload_marker") || workload=
  fio=$(pid_of "$var/fio.pid" "$fio_marker") || fio=
  [ -z "$workload" ] || end_process "$workload" "the workload" "$workload_stop_seconds"
  [ -z "$fio" ] || end_process "$fio" "fio" "$fio_stop_seconds"
  rm -f "$var/workload.pid" "$var/fio.pid"
}

end_leftovers() {
  local p s found=
  if p=$(pid_of "$var/workload.pid" "$workload_marker"); then echo "ending the workload of an earlier demo (pid $p)"; found=1; fi
  if p=$(pid_of "$var/fio.pid" "$fio_marker"); then echo "ending the fio of an earlier demo (pid $p)"; found=1; fi
  end_workload
  for s in "${sites[@]}"; do
    if p=$(pid_of "$var/$s.pid" "$(node_marker "$s")"); then
      echo "stopping node $s of an earlier demo (pid $p)"; found=1
      end_process "$p" "node $s" "$node_stop_seconds"
    fi
  done
  if p=$(pid_of "$var/manager.pid" "$manager_marker"); then
    echo "stopping the manager of an earlier demo (pid $p)"; found=1
    end_process "$p" "the manager" "$node_stop_seconds"
  fi
  [ -z "$found" ] || echo
}

sleep_pid=
workload_pid=
stop() {
  trap 'echo "(stopping: every step has a deadline)"' INT TERM HUP
  echo
  [ -n "$sleep_pid" ] && kill "$sleep_pid" 2>/dev/null || true
  echo "stopping the workload…"
  end_workload
  [ -n "$workload_pid" ] && wait "$workload_pid" 2>/dev/null || true
  echo "stopping the nodes (SIGTERM: in-flight requests finish, volumes are flushed)…"
  local s p
  declare -A pids
  for s in "${sites[@]}"; do
    if p=$(pid_of "$var/$s.pid" "$(node_marker "$s")"); then pids[$s]=$p; kill -TERM "$p" 2>/dev/null || true; fi
  done
  for s in "${!pids[@]}"; do end_process "${pids[$s]}" "node $s" "$node_stop_seconds"; done
  if p=$(pid_of "$var/manager.pid" "$manager_marker"); then
    echo "stopping the manager…"
    end_process "$p" "the manager" "$node_stop_seconds"
  fi
  echo "stopped. Data stays in $var; run 'make demo' again to continue with it."
}

end_leftovers
trap stop EXIT
trap 'exit 0' INT TERM HUP

[ -s "$var/cluster.secret" ] || { (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$var/cluster.secret"; echo >>"$var/cluster.secret"); }

i=0
for s in "${sites[@]}"; do
  nbd[$s]=$((base_nbd + 10 * i)); api[$s]=$((base_api + 10 * i))
  # One start script per site, so a "lost" site can be brought back by hand with the same flags.
  # setsid: Ctrl-C reaches this script only; it stops each node with one SIGTERM (a clean shutdown).
  cat >"$var/start-$s.sh" <<EOT
#!/usr/bin/env bash
# Starts site $s of the demo (written by scripts/demo.sh).
setsid "$tricopy" node run --name $s --site $s --data-dir "$var/$s" --host 127.0.0.1 \\
  --nbd-port ${nbd[$s]} --api-port ${api[$s]} --repl-port $((base_repl + 10 * i)) \\
  --cluster-secret-file "$var/cluster.secret" --peer-timeout 2s >"$var/$s.ports" 2>>"$var/$s.log" </dev/null &
echo \$! >"$var/$s.pid"
EOT
  chmod +x "$var/start-$s.sh"
  rm -f "$var/$s.ports"
  "$var/start-$s.sh"
  i=$((i + 1))
done
for s in "${sites[@]}"; do
  for _ in $(seq 100); do
    [ -s "$var/$s.ports" ] && break
    if ! running "$(cat "$var/$s.pid")"; then
      echo "node $s did not start; its log:" >&2
      tail -n 20 "$var/$s.log" >&2
      exit 1
    fi
    sleep 0.1
  done
done

# The manager: started beside the sites; it learns of failures from the nodes (no polling).
cat >"$var/start-manager.sh" <<EOT
#!/usr/bin/env bash
# Starts the demo's manager (written by scripts/demo.sh).
setsid "$tricopy" manager run --data-dir "$var/manager" --api-port $manager_port >"$var/manager.ports" 2>>"$var/manager.log" </dev/null &
echo \$! >"$var/manager.pid"
EOT
chmod +x "$var/start-manager.sh"
rm -f "$var/manager.ports"
"$var/start-manager.sh"
for _ in $(seq 100); do
  [ -s "$var/manager.ports" ] && break
  running "$(cat "$var/manager.pid")" || break
  sleep 0.1
done
[ -s "$var/manager.ports" ] || { echo "the manager did not start (port $manager_port; DEMO_MANAGER_PORT chooses another); its log:"; tail -n 5 "$var/manager.log"; }

cat >"$var/erp.yaml" <<EOT
# One protected set of volumes across three sites (docs/topology.md).
name: erp
layout: multi-target
volumes: { db1: $db1_size, log1: $log1_size }
primary: { site: tokyo,   node: http://127.0.0.1:${api[tokyo]} }
sync:    { site: osaka,   node: http://127.0.0.1:${api[osaka]}, fence: data }
async:   { site: sapporo, node: http://127.0.0.1:${api[sapporo]} }
EOT

echo "\$ tricopy topology apply $var/erp.yaml --wait"
if ! "$tricopy" topology apply "$var/erp.yaml" --wait; then
  echo "(apply refused: the demo data in $var was left after a failover; see the status below," \
    "bring it back with: bin/tricopy topology failback $var/erp.yaml --to tokyo --wait)"
fi

# The manager learns the nodes (they report to it from now on) and keeps the topology.
if [ -s "$var/manager.ports" ]; then
  for s in "${sites[@]}"; do "$tricopy" --manager "$manager_url" manager node add "http://127.0.0.1:${api[$s]}" || true; done
  "$tricopy" --manager "$manager_url" manager topology add "$var/erp.yaml" || true
fi

# The application: fio at whichever site is active, following failovers and failbacks.
echo "writing $write_iops IOPS of 4 KiB to db1 at the active site with fio (log: $var/fio.log) …"
node "$root/scripts/demo-workload.mjs" --dir "$var" --topology "$var/erp.yaml" --volume db1 --iops "$write_iops" \
  --nbd "tokyo=${nbd[tokyo]},osaka=${nbd[osaka]},sapporo=${nbd[sapporo]}" </dev/null &
workload_pid=$!

cat <<EOT

Three nodes run (logs: $var/<site>.log; pids: $var/<site>.pid). Try a disaster in another terminal:
  kill -9 \$(cat $var/tokyo.pid)                                        # lose the primary site
  bin/tricopy topology failover $var/erp.yaml --to osaka --wait        # run at the sync site (nothing lost)
  bin/tricopy topology failover $var/erp.yaml --to sapporo             # or at the async site (its consistent copy)
Then the site returns, and everything goes back:
  $var/start-tokyo.sh
  bin/tricopy topology failback $var/erp.yaml --to tokyo --wait
The workload follows the application: it writes at the new active site after a failover, and at
tokyo again after the failback. docs/runbook.md has a section per disaster.
The manager's web console: $manager_url/  (alerts, events, failover buttons; docs/manager.md)
  TRICOPY_MANAGER=$manager_url bin/tricopy manager alerts          # what failed, reported by the nodes
  TRICOPY_MANAGER=$manager_url bin/tricopy manager events --follow # the history as it happens
Press Ctrl-C to stop.
EOT

while true; do
  echo
  echo "--- $(date +%T) tricopy topology status $var/erp.yaml"
  "$tricopy" topology status "$var/erp.yaml" || true
  sleep "$interval" &
  sleep_pid=$!
  wait "$sleep_pid" || true
  sleep_pid=
done
