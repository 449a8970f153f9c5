#!/usr/bin/env bash
# Peer start contract of the shared bench (APP.md): env PORT, REDIS_URL, JWT_SECRET,
# SERVER_ID; exec the server so that its PID is the server's.
#
# The venv holding caas-socket (installed editable, see the Makefile) is $CAAS_VENV;
# bench/run sets it to the repository's .venv. Without it, the .venv of the
# repository this file lives in (bench/peers/caas-socket/../../../.venv) is used.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV=${CAAS_VENV:-$HERE/../../../.venv}
[ -x "$VENV/bin/twistd" ] || {
  echo "no $VENV/bin/twistd: set CAAS_VENV to the caas-socket venv (make install)" >&2
  exit 1
}
: "${PORT:?}" "${REDIS_URL:?}" "${JWT_SECRET:?}" "${SERVER_ID:?}"

# No CAAS_* setting from the caller's environment may change what is measured.
for name in $(compgen -e); do
  case "$name" in CAAS_VENV) ;; CAAS_*) unset "$name" ;; esac
done
# The secret goes through the environment: flags show in ps, a file would outlive exec.
export CAAS_JWT_SECRET="$JWT_SECRET"
export PYTHONUNBUFFERED=1
# Options newer than some commits go through the environment, which an older
# commit ignores, so that any commit of the repository starts.
# The harness SIGKILLs a server 10 s after SIGTERM; the drain (spreading closes over
# --drain-period, 30 s by default) must end well before.
export CAAS_DRAIN_PERIOD=5
# /healthz, /readyz, /metrics listen on 9090 by default: two nodes would collide.
export CAAS_HEALTH_LISTEN="tcp:0:interface=127.0.0.1"

# The reference app: 5 devices (reject), pings 25 s / 20 s, keys without a prefix
# (conn:{tenant}:{user}, server:{id}:sockets, as APP.md names them).
# BENCH_CAAS_BACKLOG overrides the listen backlog (the server's default is 1024).
# Logs as in production (etc/systemd): JSON lines, info and above.
exec "$VENV/bin/twistd" -n --pidfile= --logger=caas_socket.observability.logs.json_observer caas-socket \
  --listen "tcp:$PORT:interface=127.0.0.1${BENCH_CAAS_BACKLOG:+:backlog=$BENCH_CAAS_BACKLOG}" \
  --redis "$REDIS_URL" --redis-prefix "" \
  --server-id "$SERVER_ID" \
  --max-devices 5 --device-limit-policy reject \
  --ping-interval 25 --ping-timeout 20
