#!/usr/bin/env bash
# Installs what building, testing and the demo need, only when missing:
# Debian packages for the real NBD clients and tools the tests drive, and the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-img  || need+=(qemu-utils)
have nbdinfo   || need+=(libnbd-bin)
have nbdfuse   || need+=(nbdfuse)
have fio       || need+=(fio)
have nbdkit    || need+=(nbdkit)
have psktool   || need+=(gnutls-bin)
have openssl   || need+=(openssl)
have ip        || need+=(iproute2)
# The native I/O addon (native/volio) is compiled by node-gyp at `npm ci`: python3, make and g++.
have python3   || need+=(python3)
have make      || need+=(make)
have g++       || need+=(g++)
# The PostgreSQL test and benchmark: ext4 on a loop device over an nbdfuse file, PostgreSQL 15 and pgbench.
have mkfs.ext4 || need+=(e2fsprogs)
have losetup   || need+=(mount)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || need+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/psql ]    || need+=(postgresql-client-15)
# The manager: etcd for the shared store and leader election, Chromium for the web console tests
# (driven by playwright-core from npm, which downloads no browser of its own).
have etcd      || need+=(etcd-server)
have chromium  || need+=(chromium)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root, or install them: apt-get install ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # nbdfuse is a package of its own from Debian 13 on; Debian 12 ships it in libnbd-bin.
  if [[ " ${need[*]} " == *" nbdfuse "* ]] && [ -z "$(apt-cache madison nbdfuse 2>/dev/null)" ]; then
    need=("${need[@]/#nbdfuse/libnbd-bin}")
  fi
  echo "installing Debian packages: ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# npm packages: reinstall when the lock file is newer than the installed tree (npm ci also builds
# the native addon; `make build` rebuilds it when its sources changed).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
