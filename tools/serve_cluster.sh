#!/usr/bin/env bash
# Starts a redis-server and N `slimkv serve` instances on loopback that share prefix blocks
# through it (docs/SERVING.md, "KV tiers"). Each instance also gets its own --kv-disk
# directory, so a restarted instance keeps its prefixes even when Redis does not.
# Usage: tools/serve_cluster.sh [N=2] [first port=8080] [redis port=6390] [-- extra serve flags]
#   e.g. tools/serve_cluster.sh 2 8080 6390 -- --kv int4 -c 8192
# Stop it with Ctrl-C (or SIGTERM): the instances drain, then Redis stops.
# Environment: SLIMKV (the binary; default build/bin/slimkv), STATE (default /tmp/slimkv-cluster),
# REDIS_MAXMEMORY (Redis's bound; default 2gb: it evicts least recently used blocks past it),
# DISK_GIB (each instance's --kv-disk-mem; default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2}
PORT=${2:-8080}
REDIS_PORT=${3:-6390}
shift $(( $# < 3 ? $# : 3 ))
[[ "${1:-}" == "--" ]] && shift
SLIMKV=${SLIMKV:-build/bin/slimkv}
STATE=${STATE:-/tmp/slimkv-cluster}
mkdir -p "$STATE"

pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop EXIT INT TERM

# No persistence: Redis is a cache here, every block in it can be recomputed.
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --maxmemory "${REDIS_MAXMEMORY:-2gb}" --maxmemory-policy allkeys-lru \
  --logfile "$STATE/redis.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

for i in $(seq 0 $((N - 1))); do
  "$SLIMKV" serve --host 127.0.0.1 --port $((PORT + i)) \
    --kv-disk "$STATE/disk$i" --kv-disk-mem "${DISK_GIB:-4}" --kv-redis "127.0.0.1:$REDIS_PORT" \
    "$@" >"$STATE/serve$i.out" 2>"$STATE/serve$i.log" &
  pids+=($!)
  echo "instance $i: http://127.0.0.1:$((PORT + i))  (log $STATE/serve$i.log)"
done
echo "redis: 127.0.0.1:$REDIS_PORT; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
