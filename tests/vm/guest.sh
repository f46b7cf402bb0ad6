#!/bin/sh
# Runs inside the VM that scripts/dev test-vm boots: the host's filesystem (read-only but
# for OUT) under Debian's own kernel, which has sch_netem. Runs the VM tests with the
# netem shaper; leaves their log, JUnit and exit status in OUT for the host to read, and,
# with NETEMU_VM_BENCH=1 (scripts/dev test-vm, not scripts/dev test), the CPU per link
# update (bench/bench_link_update.py) in OUT/link_update.json.
#
#   tests/vm/guest.sh ROOT VENV OUT [pytest args...]
set -u
ROOT=$1 VENV=$2 OUT=$3
shift 3
cd "$ROOT" || exit 1
export NETEMU_IN_VM=1 NETEMU_VM_OUT="$OUT" PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
{
  echo "guest: kernel $(uname -r), $(nproc) CPUs, up $(cut -d' ' -f1 /proc/uptime) s"
  modprobe sch_netem || echo "guest: modprobe sch_netem failed"
  "$VENV/bin/python" -m pytest tests/vm -p no:cacheprovider -ra \
    --junit-xml="$OUT/junit.xml" "$@"
  status=$?
  # a figure for docs/emulator.md, not a check: CPU per link update, netem beside the relay
  if [ "${NETEMU_VM_BENCH:-0}" = 1 ]; then
    t0=$(cut -d' ' -f1 /proc/uptime)
    "$VENV/bin/python" bench/bench_link_update.py --shaper netem,relay --json \
      >"$OUT/link_update.json" || echo "guest: bench_link_update failed"
    echo "guest: bench_link_update took $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" \
      'BEGIN { printf "%.0f", b - a }') s"
  fi
  echo "$status" >"$OUT/exit-status"
} 2>&1 | tee "$OUT/guest.log"
