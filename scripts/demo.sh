#!/usr/bin/env bash
# `make demo`: one storage node with a demo volume, written through NBD, serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tricopy="$root/bin/tricopy"
var="$root/var/demo"
mkdir -p "$var"

nbd_port=${DEMO_NBD_PORT:-10809}
api_port=${DEMO_API_PORT:-7801}
repl_port=${DEMO_REPL_PORT:-7800}

# setsid: Ctrl-C reaches this script only; it stops the node with one SIGTERM (a clean shutdown).
setsid "$tricopy" node run --name dc1 --site tokyo --data-dir "$var/dc1" --host 127.0.0.1 \
  --nbd-port "$nbd_port" --api-port "$api_port" --repl-port "$repl_port" >"$var/dc1.ports" 2>"$var/dc1.log" &
node_pid=$!
stop() {
  echo
  echo "stopping the node (SIGTERM: in-flight requests finish, volumes are flushed)…"
  kill -TERM "$node_pid" 2>/dev/null || true
  wait "$node_pid" 2>/dev/null || true
  echo "stopped. Data stays in $var/dc1; run 'make demo' again to continue with it."
}
trap stop EXIT
trap 'exit 0' INT TERM

for _ in $(seq 100); do
  [ -s "$var/dc1.ports" ] && break
  if ! kill -0 "$node_pid" 2>/dev/null; then
    echo "the node did not start; its log:" >&2
    tail -n 20 "$var/dc1.log" >&2
    trap - EXIT
    exit 1
  fi
  sleep 0.1
done
export TRICOPY_NODE="http://127.0.0.1:$api_port"

if ! "$tricopy" volume show demo >/dev/null 2>&1; then
  "$tricopy" volume create demo --size 1GiB --thin --description "tricopy demo volume"
fi
uri="nbd://127.0.0.1:$nbd_port/demo"
echo "writing 32 MiB to the volume through NBD with qemu-io …"
qemu-io -f raw -c "write -P 0x74 0 16M" -c "write -P 0x63 512M 16M" "$uri" | grep -E '^wrote'
qemu-io -f raw -c "read -P 0x74 0 16M" -c "read -P 0x63 512M 16M" "$uri" | grep -E '^read'
echo
"$tricopy" volume list
echo
cat <<EOT
The node is running (log: $var/dc1.log). Attach other clients:
  qemu-img info $uri
  nbdinfo --map $uri                       # data and holes
  nbdcopy $uri ./demo.img                  # copy the volume out
  fio --name=t --ioengine=nbd --uri=$uri --rw=randwrite --bs=4k --iodepth=32 --size=1G --runtime=10 --time_based
  nbdfuse ./mnt $uri &                     # a file you can losetup and mkfs

Manage it (TRICOPY_NODE=$TRICOPY_NODE):
  bin/tricopy volume show demo
  bin/tricopy volume create db1 --size 10GiB --thin
  bin/tricopy events --follow
  curl -s $TRICOPY_NODE/metrics | grep tricopy_nbd

Press Ctrl-C to stop.
EOT
wait "$node_pid"
