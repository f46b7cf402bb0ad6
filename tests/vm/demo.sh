#!/bin/sh
# Runs inside the VM that `scripts/dev demo-vm` boots: the quick flagship demo with the
# netem shaper under Debian's own kernel. The host's filesystem is read-only here, 9p gives
# SQLite's WAL no shared memory and overlayfs cannot sit on 9p, so podman's storage and
# the run directory live on tmpfs; the run directory is copied to OUT at the end.
#
#   tests/vm/demo.sh ROOT VENV OUT [netemu demo args...]
set -u
ROOT=$1 VENV=$2 OUT=$3
shift 3
cd "$ROOT" || exit 1
export NETEMU_IN_VM=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
RUN=/tmp/netemu-demo-run
{
  echo "guest: kernel $(uname -r), $(nproc) CPUs, $(free -m | awk '/^Mem:/ {print $2}') MiB," \
       "up $(cut -d' ' -f1 /proc/uptime) s"
  modprobe sch_netem || echo "guest: modprobe sch_netem failed"
  for d in /var/lib/containers /var/tmp /tmp; do
    mountpoint -q "$d" || mount -t tmpfs -o mode=1777 tmpfs "$d" \
      || echo "guest: no tmpfs on $d"
  done
  # the apps' base image, built and saved by the host (scripts/dev demo-vm): scanning
  # this machine's Python for it takes ~7 minutes here
  NETEMU_BASE_IMAGE=$(podman load -q -i "$ROOT/build/vm-base-image.tar" | sed -n 's/^Loaded image: //p')
  echo "guest: base image ${NETEMU_BASE_IMAGE:-not loaded}"
  # matplotlib's font cache, built by the host too (it wants the directory writable)
  cp -r "$ROOT/build/vm-mpl" /tmp/mpl 2>/dev/null
  export NETEMU_BASE_IMAGE MPLCONFIGDIR=/tmp/mpl
  t0=$(cut -d' ' -f1 /proc/uptime)
  # one node host for the 16 agents (one Python start instead of 16), ten minutes for them
  # and the 31 apps to start before the window opens, and two minutes for the apps to exit
  # at the end (everything here is ~10x slower; 28 containers stop at once)
  "$VENV/bin/netemu" demo --quick --shaper netem --agent-hosts 1 --lead-s 600 \
    --app-grace-s 120 --out "$RUN" "$@"
  status=$?
  echo "guest: netemu demo exit $status after $(echo "$(cut -d' ' -f1 /proc/uptime) $t0" \
       | awk '{printf "%.0f", $1 - $2}') s"
  # what the host keeps: the run's record without the agents' stores and captures
  mkdir -p "$OUT/run"
  (cd "$RUN" 2>/dev/null && tar -cf - --exclude='*.sqlite*' --exclude='*.pcap*' .) \
    | tar -xf - -C "$OUT/run"
  echo "$status" >"$OUT/exit-status"
} 2>&1 | tee "$OUT/guest.log"
