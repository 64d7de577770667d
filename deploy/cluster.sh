#!/usr/bin/env bash
# Three Triggerfish hosts, one nats-server and HAProxy on loopback, with
# the demo tenant deployed once through one host and served by all
# (`just cluster`; see the README's "Several hosts behind a load balancer").
#
#   deploy/cluster.sh            start everything; Ctrl-C drains the hosts
#                                and stops it all
#   deploy/cluster.sh restart N  from another terminal: SIGTERM host N
#                                (1-3), wait for its drain, start it again
#
# Ports (loopback): clients 8080 (HAProxy), hosts 8081-8083, HAProxy's
# status page 8404 (/stats), nats-server 4222. Needs nats-server and
# haproxy (Debian: apt-get install -y nats-server haproxy) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
state=target/cluster
nats=nats://127.0.0.1:4222
host_addr() { echo "127.0.0.1:808$1"; }

# Each program in a session of its own (setsid): Ctrl-C in the terminal
# reaches only this script, which then sends each host one SIGTERM (a
# second signal would end a draining host at once).
start_host() {
  local n=$1
  # Each host has a folder of its own: the tenants come from NATS
  # (--shared-plugins), which each host mirrors there.
  mkdir -p "$state/host$n"
  setsid target/debug/triggerfish serve --plugins-dir "$state/host$n" --listen "$(host_addr "$n")" \
    --streams "$nats" --shared-plugins --admin-keys "$state/admin-keys" \
    --drain-grace-ms 1000 >>"$state/host$n.log" 2>&1 &
  echo $! >"$state/host$n.pid"
}

wait_ready() {
  local n=$1
  for _ in $(seq 600); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$(host_addr "$n")/healthz")" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "host $n never became ready; see $state/host$n.log" >&2
  return 1
}

if [ "${1:-}" = restart ]; then
  n=${2:?usage: deploy/cluster.sh restart N}
  pid=$(cat "$state/host$n.pid")
  echo "host $n ($pid): SIGTERM; /healthz says draining, HAProxy takes it out"
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  start_host "$n"
  wait_ready "$n"
  echo "host $n is back ($(cat "$state/host$n.pid")); HAProxy puts it in rotation within a second"
  exit 0
fi

for program in nats-server haproxy curl; do
  command -v "$program" >/dev/null || {
    echo "$program is missing: apt-get install -y $program" >&2
    exit 1
  }
done
cargo build -q -p triggerfish
mkdir -p "$state"

# The demo tenant's folder (deployed below), and an operator key: only an
# operator creates tenants. Kept across runs, readable by its owner only.
cargo xtask demo-plugins
if [ ! -s "$state/admin-key" ]; then
  (umask 077 && echo "tf-admin-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" >"$state/admin-key")
fi
(umask 077 && target/debug/triggerfish hash-key <"$state/admin-key" >"$state/admin-keys")

setsid nats-server -js -a 127.0.0.1 -p 4222 -sd "$state/nats" >"$state/nats.log" 2>&1 &
echo $! >"$state/nats.pid"
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break
  sleep 0.1
done

stop_all() {
  trap - INT TERM EXIT
  echo "draining the hosts..."
  for n in 1 2 3; do kill -TERM "$(cat "$state/host$n.pid")" 2>/dev/null || true; done
  for n in 1 2 3; do
    pid=$(cat "$state/host$n.pid")
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  kill "$(cat "$state/haproxy.pid")" "$(cat "$state/nats.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

for n in 1 2 3; do start_host "$n"; done
for n in 1 2 3; do wait_ready "$n"; done

# Once, through host 1: NATS keeps it, and every host serves it.
TRIGGERFISH_DEPLOY_KEY="$(cat "$state/admin-key")" \
  target/debug/triggerfish deploy --folder target/demo --url "http://$(host_addr 1)"

TF_LB_LISTEN=127.0.0.1:8080 TF_LB_STATS=127.0.0.1:8404 \
  TF_HOST1="$(host_addr 1)" TF_HOST2="$(host_addr 2)" TF_HOST3="$(host_addr 3)" \
  setsid haproxy -db -f deploy/haproxy.cfg >"$state/haproxy.log" 2>&1 &
echo $! >"$state/haproxy.pid"

cat <<EOF
three hosts (8081-8083) behind HAProxy on http://127.0.0.1:8080, nats-server on 4222
  events:         curl -s http://127.0.0.1:8080/v1/tenants/demo/events -d @event.json
  HAProxy status: http://127.0.0.1:8404/stats
  roll a host:    deploy/cluster.sh restart 2     (or: just cluster-restart 2)
  logs:           $state/host{1,2,3}.log
  redeploy:       TRIGGERFISH_DEPLOY_KEY=\$(cat $state/admin-key) target/debug/triggerfish deploy --folder target/demo --url http://127.0.0.1:8081
Ctrl-C drains the hosts and stops everything.
EOF
wait
