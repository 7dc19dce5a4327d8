#!/usr/bin/env bash
# `:recall` end to end on the default model: needle and ppl run under a recalling policy, the
# evicted blocks go to host memory and some come back, and both commands report the traffic
# and the fetch-ahead hit rate (printed and in --json), host=N drops past its bound, or spills
# to --kv-disk. About 30 s.
set -u
BIN=${SLIMKV_BIN:?set SLIMKV_BIN to the slimkv binary}
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export SLIMKV_MODEL_DIR=${SLIMKV_MODEL_DIR:-$SRC/models}
cd "$SRC"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["recall"][sys.argv[2]])' "$1" "$2"; }

"$BIN" needle --contexts 1024 --depths 50 --kv int4 --kv-policy snapkv:recall --budget-fraction 0.25 -t 2 \
  --json "$T/needle.json" > "$T/needle.out" 2>&1 || fail "needle: $(tail -3 "$T/needle.out")"
grep -q "fetch-ahead hit rate" "$T/needle.out" || fail "needle does not report recall: $(tail -3 "$T/needle.out")"
[[ $(field "$T/needle.json" offloaded) -gt 0 ]] || fail "needle: nothing offloaded"
[[ $(field "$T/needle.json" fetched) -gt 0 ]] || fail "needle: nothing fetched back"

"$BIN" ppl -f data/pg_essays.txt -c 512 --chunks 1 --step 1 --kv int4 --kv-policy h2o:recall --kv-budget 128 \
  --kl-base none -t 2 --json "$T/ppl.json" > "$T/ppl.out" 2>&1 || fail "ppl: $(tail -3 "$T/ppl.out")"
grep -q "fetch-ahead hit rate" "$T/ppl.out" || fail "ppl does not report recall: $(tail -3 "$T/ppl.out")"
[[ $(field "$T/ppl.json" fetched) -gt 0 ]] || fail "ppl: nothing fetched back"
hit=$(field "$T/ppl.json" fetch_hit_rate)
python3 -c "import sys; h=float(sys.argv[1]); sys.exit(0 if 0 < h <= 1 else 1)" "$hit" || fail "ppl: hit rate $hit"

# host=N bounds the host blocks per layer and KV head: the rest are dropped, and reported.
"$BIN" ppl -f data/pg_essays.txt -c 512 --chunks 1 --step 1 --kv int4 --kv-policy h2o:recall:host=2 --kv-budget 128 \
  --kl-base none -t 2 --json "$T/host.json" > "$T/host.out" 2>&1 || fail "ppl host=2: $(tail -3 "$T/host.out")"
grep -q "dropped for the host bound" "$T/host.out" || fail "ppl host=2 does not report drops: $(tail -3 "$T/host.out")"
[[ $(field "$T/host.json" host_dropped) -gt 0 ]] || fail "ppl host=2: nothing dropped"
[[ $(field "$T/ppl.json" host_dropped) -eq 0 ]] || fail "ppl: dropped without a host bound"

# With --kv-disk, host blocks past host=2 are spilled there instead of dropped, some are read back,
# and the process leaves no spill file behind.
"$BIN" ppl -f data/pg_essays.txt -c 512 --chunks 1 --step 1 --kv int4 --kv-policy h2o:recall:host=2 --kv-budget 128 \
  --kv-disk "$T/disk" --kl-base none -t 2 --json "$T/spill.json" > "$T/spill.out" 2>&1 \
  || fail "ppl host=2 --kv-disk: $(tail -3 "$T/spill.out")"
grep -q "spilled to disk" "$T/spill.out" || fail "ppl --kv-disk does not report spills: $(tail -3 "$T/spill.out")"
[[ $(field "$T/spill.json" spilled) -gt 0 ]] || fail "ppl --kv-disk: nothing spilled"
[[ $(field "$T/spill.json" spill_read) -gt 0 ]] || fail "ppl --kv-disk: nothing read back"
[[ $(field "$T/spill.json" spill_lost) -eq 0 ]] || fail "ppl --kv-disk: spilled blocks lost"
[[ $(field "$T/spill.json" host_dropped) -eq 0 ]] || fail "ppl --kv-disk: dropped with a disk to spill to"
left=$(find "$T/disk" -name 'spill-*' | wc -l)
[[ $left -eq 0 ]] || fail "ppl --kv-disk: $left spill files left behind"

# Without :recall nothing is reported.
"$BIN" ppl -f data/pg_essays.txt -c 512 --chunks 1 --step 1 --kv int4 --kv-policy h2o --kv-budget 128 \
  --kl-base none -t 2 > "$T/plain.out" 2>&1 || fail "ppl h2o: $(tail -3 "$T/plain.out")"
if grep -q "recall:" "$T/plain.out"; then fail "recall reported without :recall"; fi
echo "ok"
