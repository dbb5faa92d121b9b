#!/usr/bin/env bash
# `make demo`: three storage nodes as three sites (tokyo primary, osaka sync, sapporo async) with the
# multi-target topology of var/demo/erp.yaml applied, a small steady write workload on tokyo, and
# `topology status` printed every few seconds until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tricopy="$root/bin/tricopy"
var="$root/var/demo"
mkdir -p "$var"

base_nbd=${DEMO_NBD_PORT:-10809}
base_api=${DEMO_API_PORT:-7801}
base_repl=${DEMO_REPL_PORT:-7800}
interval=${DEMO_STATUS_SECONDS:-5}
sites=(tokyo osaka sapporo)
declare -A nbd api

[ -s "$var/cluster.secret" ] || { umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$var/cluster.secret"; echo >>"$var/cluster.secret"; }

fio_pid=
stop() {
  echo
  [ -n "$fio_pid" ] && kill "$fio_pid" 2>/dev/null || true
  echo "stopping the nodes (SIGTERM: in-flight requests finish, volumes are flushed)…"
  for s in "${sites[@]}"; do p=$(cat "$var/$s.pid" 2>/dev/null || true); [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for s in "${sites[@]}"; do
    p=$(cat "$var/$s.pid" 2>/dev/null || true)
    while [ -n "$p" ] && kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  done
  echo "stopped. Data stays in $var; run 'make demo' again to continue with it."
}
trap stop EXIT
trap 'exit 0' INT TERM

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
  --cluster-secret-file "$var/cluster.secret" --peer-timeout 2s >"$var/$s.ports" 2>>"$var/$s.log" &
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
    if ! kill -0 "$(cat "$var/$s.pid")" 2>/dev/null; then
      echo "node $s did not start; its log:" >&2
      tail -n 20 "$var/$s.log" >&2
      exit 1
    fi
    sleep 0.1
  done
done

cat >"$var/erp.yaml" <<EOT
# One protected set of volumes across three sites (docs/topology.md).
name: erp
layout: multi-target
volumes: { db1: 1GiB, log1: 256MiB }
primary: { site: tokyo,   node: http://127.0.0.1:${api[tokyo]} }
sync:    { site: osaka,   node: http://127.0.0.1:${api[osaka]}, fence: data }
async:   { site: sapporo, node: http://127.0.0.1:${api[sapporo]} }
EOT

echo "\$ tricopy topology apply $var/erp.yaml --wait"
if ! "$tricopy" topology apply "$var/erp.yaml" --wait; then
  echo "(apply refused: the demo data in $var was left after a failover; see the status below," \
    "bring it back with: bin/tricopy topology failback $var/erp.yaml --to tokyo --wait)"
fi

active=$("$tricopy" topology status "$var/erp.yaml" --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).activeSite??""))')
if [ -n "$active" ]; then
  uri="nbd://127.0.0.1:${nbd[$active]}/db1"
  echo "writing 200 IOPS of 4 KiB to db1 at $active with fio (log: $var/fio.log) …"
  fio --name=demo --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=4 --size=256m --rate_iops=200 \
    --time_based --runtime=86400 --randrepeat=0 >"$var/fio.log" 2>&1 &
  fio_pid=$!
fi

cat <<EOT

Three nodes run (logs: $var/<site>.log; pids: $var/<site>.pid). Try a disaster in another terminal:
  kill -9 \$(cat $var/tokyo.pid)                                        # lose the primary site
  bin/tricopy topology failover $var/erp.yaml --to osaka --wait        # run at the sync site (nothing lost)
  bin/tricopy topology failover $var/erp.yaml --to sapporo             # or at the async site (its consistent copy)
Then the site returns, and everything goes back:
  $var/start-tokyo.sh
  bin/tricopy topology failback $var/erp.yaml --to tokyo --wait
docs/runbook.md has a section per disaster. Press Ctrl-C to stop.
EOT

while true; do
  echo
  echo "--- $(date +%T) tricopy topology status $var/erp.yaml"
  "$tricopy" topology status "$var/erp.yaml" || true
  sleep "$interval"
done
