#!/usr/bin/env bash
# slimkv report end to end on a tiny grid (tests/cli/report_grid.json): every cell runs, the
# page renders in headless Chromium without errors with every chart drawn and every number
# equal to its cell's JSON (tests/cli/report_page.py), a second run reuses every cell, a
# failed cell is reported and the rest of the page still renders, and the markdown and its
# charts are written.
#
# Environment (set by ctest): SLIMKV_BIN, SLIMKV_MODEL_DIR, SLIMKV_SOURCE_DIR, SLIMKV_VENV_PYTHON.
# About 60 s on 2 idle cores.
set -u
BIN=${SLIMKV_BIN:?set SLIMKV_BIN to the slimkv binary}
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${SLIMKV_VENV_PYTHON:-$SRC/.venv/bin/python}
export SLIMKV_MODEL_DIR=${SLIMKV_MODEL_DIR:-$SRC/models}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/slimkv_report.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$SRC"
n_failed=0
fail() { n_failed=$((n_failed + 1)); echo "FAIL $1"; }

if ! "$BIN" report --grid tests/cli/report_grid.json --out "$TMP/r" --markdown "$TMP/md/REPORT.md" 2> "$TMP/first.err"; then
  fail "the report failed"; tail -30 "$TMP/first.err"
fi
grep -q "report: 17 cells run, 0 cached, 0 failed" "$TMP/first.err" || { fail "first run: $(tail -1 "$TMP/first.err")"; }
grep -q "\[1/17\] .* elapsed, ~.* left" "$TMP/first.err" || fail "no progress lines"
"$PYTHON" tests/cli/report_page.py "$TMP/r" bytes,users,speed,latency,kl,retrieval,pareto || fail "the page in Chromium"

# Resumable: a second run reuses every cell.
"$BIN" report --grid tests/cli/report_grid.json --out "$TMP/r" 2> "$TMP/second.err" || fail "second run"
grep -q "report: 0 cells run, 17 cached, 0 failed" "$TMP/second.err" || fail "second run: $(tail -1 "$TMP/second.err")"

# Markdown with its charts beside it.
for chart in bytes users speed latency kl retrieval pareto; do
  [[ -s $TMP/md/figures/report/smollm2-135m-$chart.svg ]] || fail "markdown chart $chart missing"
  grep -q "(figures/report/smollm2-135m-$chart.svg)" "$TMP/md/REPORT.md" || fail "markdown does not link $chart"
done
grep -q "^| int4 + window 50% |" "$TMP/md/REPORT.md" || fail "markdown has no eviction row"

# A cell that fails is named, the report exits 1, and the page still renders without it.
sed 's/"ctx": 128/"ctx": 100000000/' tests/cli/report_grid.json > "$TMP/bad.json"
"$BIN" report --grid "$TMP/bad.json" --out "$TMP/r" 2> "$TMP/bad.err"
rc=$?
[[ $rc == 1 ]] || fail "a failing cell: exit $rc, expected 1"
grep -q "FAILED" "$TMP/bad.err" || fail "the failed cell is not named"
grep -q "report: 0 cells run, 14 cached, 3 failed" "$TMP/bad.err" || fail "bad grid: $(tail -1 "$TMP/bad.err")"
[[ -s $TMP/r/report.html ]] || fail "no page after a failed cell"

if ((n_failed)); then echo "$n_failed checks failed"; exit 1; fi
echo "report test: all checks passed"
