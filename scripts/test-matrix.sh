#!/usr/bin/env bash
# The test matrix: every integration test binary (tests/*.rs, i.e. everything `cargo test
# --release` runs except the unit tests, which need no server) against each server in turn,
# with REDIS_SERVER pointing at it. Called by `make test-matrix`.
#
#   scripts/test-matrix.sh
#
# Environment:
#   MATRIX_SERVERS         servers to test, blank-separated (default: all of `scripts/servers.sh list`:
#                          redis-7.0 redis-8.0 valkey-8.1); each binary comes from
#                          `scripts/servers.sh path <name>`, which builds it once if it is missing
#   MATRIX_TESTS           test binaries to run (default: every tests/*.rs except fuzz, whose
#                          campaigns are #[ignore]d there: `make fuzz` runs them)
#   MATRIX_TEST_TIMEOUT    seconds one test binary may take on one server (default 1200)
#   CARGO                  cargo command (default cargo)
#
# Every server runs even when one fails. Logs: target/test-matrix/<server>/<test>.log; the
# summary table is printed at the end and kept in target/test-matrix/summary.txt.
# Exit status: 0 when every test binary passed on every server, 1 otherwise, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

CARGO=${CARGO:-cargo}
TIMEOUT=${MATRIX_TEST_TIMEOUT:-1200}
OUT=target/test-matrix

log() { echo "test-matrix: $*" >&2; }

mapfile -t KNOWN < <(scripts/servers.sh list)
read -r -a SERVERS <<<"${MATRIX_SERVERS:-${KNOWN[*]}}"
[ ${#SERVERS[@]} -gt 0 ] || { log "MATRIX_SERVERS is empty"; exit 2; }
for s in "${SERVERS[@]}"; do
  [[ " ${KNOWN[*]} " == *" $s "* ]] || { log "unknown server '$s' (known: ${KNOWN[*]})"; exit 2; }
done

if [ -n "${MATRIX_TESTS:-}" ]; then
  read -r -a TESTS <<<"$MATRIX_TESTS"
else
  TESTS=()
  for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    [ "$t" = fuzz ] || TESTS+=("$t")
  done
fi
for t in "${TESTS[@]}"; do
  [ -f "tests/$t.rs" ] || { log "no test binary '$t' (tests/$t.rs)"; exit 2; }
done

# The module, the test module example and every test binary, built once before any server
# runs, so that no server's time includes a compilation.
test_args=()
for t in "${TESTS[@]}"; do test_args+=(--test "$t"); done
log "building the module, the examples and ${#TESTS[@]} test binaries"
if ! { "$CARGO" build --release && "$CARGO" build --release --examples &&
  "$CARGO" test --release --no-run "${test_args[@]}"; }; then
  log "build failed"
  exit 1
fi

fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# The differential runner's probe line, shortened.
probe_short() {
  local p=$1 holes=()
  [[ $p == *"newproxy exposed: yes"* ]] && holes+=("getfenv/setfenv/newproxy exposed")
  [[ $p == *"metatable writable (CVE-2025-46818): yes"* ]] && holes+=("string metatable writable")
  [[ $p == *"on the wire (CVE-2025-67733): yes"* ]] && holes+=("CR/LF from error() on the wire")
  if [ ${#holes[@]} = 0 ]; then
    echo "fixed (no hole found): % lines compared"
  else
    local IFS=,
    echo "${holes[*]}: % lines are documented differences" | sed 's/,/, /g'
  fi
}

# Results, keyed by server and by server/test.
declare -A VERSION=() TIME=() BUILT=() STATUS=() CELL=() PROBE=() FAILS=()
FAILED_SERVERS=()
rm -rf "$OUT"
mkdir -p "$OUT"

for s in "${SERVERS[@]}"; do
  mkdir -p "$OUT/$s"
  t0=$SECONDS
  # servers.sh reports on stderr (a build takes minutes): shown as it comes, and kept.
  if ! bin=$(scripts/servers.sh path "$s" 2> >(tee "$OUT/$s/servers.log" >&2)); then
    log "$s: no server binary (log: $OUT/$s/servers.log)"
    VERSION[$s]="(no binary)"; TIME[$s]=0; BUILT[$s]=$((SECONDS - t0)); STATUS[$s]=FAIL
    FAILED_SERVERS+=("$s")
    continue
  fi
  BUILT[$s]=$((SECONDS - t0))
  v=$("$bin" --version 2>/dev/null || true)
  VERSION[$s]="$(awk '{print $1}' <<<"$v") $(sed -n 's/.* v=\([^ ]*\) .*/\1/p' <<<"$v")"
  log "=== $s: ${VERSION[$s]} ($bin)"
  STATUS[$s]=PASS
  t_server=$SECONDS
  for t in "${TESTS[@]}"; do
    tl=$OUT/$s/$t.log
    t1=$SECONDS
    REDIS_SERVER=$bin timeout --kill-after=30 "$TIMEOUT" "$CARGO" test --release --test "$t" >"$tl" 2>&1
    rc=$?
    dt=$((SECONDS - t1))
    # libtest's summary: "test result: ok. 11 passed; 0 failed; 0 ignored; ..."
    passed=$(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\1/p' "$tl" | tail -n1)
    failed=$(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\2/p' "$tl" | tail -n1)
    passed=${passed:-0}; failed=${failed:-0}
    total=$((passed + failed))
    # The differential runners' own counts, one per corpus file that failed (libtest shows
    # a passing test's output only with --nocapture): "30 cases, 448 commands compared,
    # 2 failures". Their sum.
    diffs=$(sed -n 's/^[0-9]* cases, [0-9]* commands compared, \([0-9]*\) failures$/\1/p' "$tl" |
      awk '{ n += $1 } END { if (NR) print n }')
    probe=$(sed -n 's/^differential: .*native sandbox: //p' "$tl" | head -n1)
    [ -n "$probe" ] && [ -z "${PROBE[$s]:-}" ] && PROBE[$s]=$probe
    if [ $rc = 0 ]; then
      CELL[$s/$t]="ok $passed"
      log "$s: $t ok ($passed passed, $(fmt_time $dt))"
    else
      if [ $rc = 124 ] || [ $rc = 137 ]; then
        CELL[$s/$t]="TIMEOUT"
      elif [ "$total" -gt 0 ]; then
        CELL[$s/$t]="FAIL $failed/$total"
      else
        CELL[$s/$t]="FAIL (rc $rc)"
      fi
      [ -n "$diffs" ] && [ "$diffs" != 0 ] && CELL[$s/$t]+=", $diffs diffs"
      STATUS[$s]=FAIL
      log "$s: $t FAILED (${CELL[$s/$t]}, $(fmt_time $dt); log: $tl)"
      FAILS[$s/$t]=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$tl" | tr '\n' ' ')
      [ -n "${FAILS[$s/$t]}" ] && log "    failed: ${FAILS[$s/$t]}"
    fi
    CELL[$s/$t]+=" $(fmt_time $dt)"
  done
  TIME[$s]=$((SECONDS - t_server))
  [ "${STATUS[$s]}" = PASS ] || FAILED_SERVERS+=("$s")
done

# --- the summary ------------------------------------------------------------------------------
{
  echo
  echo "test-matrix: ${#TESTS[@]} test binaries on ${#SERVERS[@]} servers (logs: $OUT/<server>/<test>.log)"
  echo
  printf '%-12s %-16s %-6s %-12s %-10s %s\n' server version result "binaries ok" "test time" "server set-up"
  for s in "${SERVERS[@]}"; do
    ok=0
    for t in "${TESTS[@]}"; do [[ "${CELL[$s/$t]:-}" == ok* ]] && ok=$((ok + 1)); done
    printf '%-12s %-16s %-6s %-12s %-10s %s\n' "$s" "${VERSION[$s]}" "${STATUS[$s]}" \
      "$ok/${#TESTS[@]}" "$(fmt_time "${TIME[$s]}")" "$(fmt_time "${BUILT[$s]}")"
  done
  echo
  printf '%-22s' "test binary"
  for s in "${SERVERS[@]}"; do printf ' %-26s' "$s"; done
  echo
  for t in "${TESTS[@]}"; do
    printf '%-22s' "$t"
    for s in "${SERVERS[@]}"; do printf ' %-26s' "${CELL[$s/$t]:--}"; done
    echo
  done
  echo
  echo "(a cell: tests passed, or failed/total and the differential runner's failures, then the time)"
  if [ ${#FAILS[@]} -gt 0 ]; then
    echo
    echo "failed tests:"
    for s in "${SERVERS[@]}"; do
      for t in "${TESTS[@]}"; do
        [ -n "${FAILS[$s/$t]:-}" ] && printf '  %-12s %-20s %s\n' "$s" "$t" "${FAILS[$s/$t]}"
      done
    done
  fi
  if [ ${#PROBE[@]} -gt 0 ]; then
    echo
    echo "native Lua sandbox, as the differential runner probed it:"
    for s in "${SERVERS[@]}"; do
      [ -n "${PROBE[$s]:-}" ] && printf '  %-12s %s\n' "$s" "$(probe_short "${PROBE[$s]}")"
    done
  fi
  echo
  if [ ${#FAILED_SERVERS[@]} = 0 ]; then
    echo "test-matrix: PASS on every server"
  else
    echo "test-matrix: FAIL on ${FAILED_SERVERS[*]}"
  fi
} | tee "$OUT/summary.txt"

[ ${#FAILED_SERVERS[@]} = 0 ]
