#!/usr/bin/env bash
# tools/cluster-demo, whole: `start` makes the bridge, the three namespaces
# and nodes; each node answers /healthz on its namespace address and
# `switchboard status` shows both its members up; `stop` removes every
# namespace, the bridge and the folder. Exits 77 (ctest: skipped), saying
# why, where network namespaces cannot be made (not root, or no netns).
set -euo pipefail

demo=$1
bin=$2
if [[ $(id -u) != 0 ]]; then
  echo "SKIPPED: tools/cluster-demo needs root for network namespaces (run as root to test it)"
  exit 77
fi
probe=sbprobe$$
if ! ip netns add "$probe" 2>/dev/null; then
  echo "SKIPPED: ip netns is unavailable here (ip netns add failed)"
  exit 77
fi
ip netns delete "$probe"

export DEMO_DIR
DEMO_DIR=$(mktemp -d -u /tmp/sb-demo-test.XXXXXX)
export SWITCHBOARD_BIN_DIR=$bin
trap '"$demo" stop >/dev/null 2>&1 || true' EXIT

"$demo" start
for i in 1 2 3; do
  curl -sf --max-time 5 "http://10.77.0.$i:4000/healthz" >/dev/null ||
    { echo "FAIL: node$i does not answer /healthz on 10.77.0.$i:4000"; exit 1; }
done
# The links come up within a few heartbeats (etcd: once each node has read
# the others' records).
for i in 1 2 3; do
  ok=
  for _ in $(seq 150); do
    out=$("$bin/switchboard" status --config "$DEMO_DIR/node$i.yaml")
    if [[ $(grep -cE '^  node[123] +up ' <<<"$out") == 2 ]]; then ok=1; break; fi
    sleep 0.1
  done
  [[ -n $ok ]] || { echo "FAIL: node$i's members are not both up:"; echo "$out"; exit 1; }
done
echo "every node answers /healthz and sees both members up"

"$demo" stop
for i in 1 2 3; do
  if ip netns list | grep -qw "sbdemo$i"; then echo "FAIL: namespace sbdemo$i left"; exit 1; fi
done
if ip link show sbdemo0 >/dev/null 2>&1; then echo "FAIL: bridge sbdemo0 left"; exit 1; fi
if [[ -e $DEMO_DIR ]]; then echo "FAIL: $DEMO_DIR left"; exit 1; fi
trap - EXIT
echo "stop removed every namespace, the bridge and $DEMO_DIR"
