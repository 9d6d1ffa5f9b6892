#!/usr/bin/env bash
# Start the Redis and PostgreSQL servers the service-backed tests need, installing them if absent.
# Idempotent: running services are left alone. Sourced or run; prints what it did.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
ls /etc/postgresql >/dev/null 2>&1 || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
  echo "services: installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "services: starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi

for _ in $(seq 1 50); do
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q && break
  sleep 0.2  # waiting for a server process to come up, not test synchronisation
done
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null
pg_isready -h 127.0.0.1 -p 5432
