#!/usr/bin/env bash
# Runs every car-bench scenario against every target and prints the markdown table of
# docs/PERFORMANCE.md, with ratios against the baselines measured in the same run.
#
#   bash test/bench/run-all.sh            full run: release build in ./build-release, results in
#                                         docs/bench-results.jsonl, plots docs/perf-*.svg (the cost
#                                         curves of test/bench/curves.sh: docs/perf-curve-*.svg)
#   bash test/bench/run-all.sh --smoke    every scenario with tiny counts against ./build, in
#                                         seconds; writes nothing into docs/ (CI uses this)
#
# Servers run on core 0 and the load on core 1 (`taskset -c`) when the machine has two cores.
# Traffic goes only to 127.0.0.1 and Unix sockets in a private temp directory. Exit status is
# non-zero only when the harness fails (build, a server that does not start, car-bench failing);
# never because of a timing.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

smoke=false
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=true ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done

# ---- build -------------------------------------------------------------------------------------
if $smoke; then
  build=build
  [[ -f $build/build.ninja ]] || { echo "run-all: ./build is not configured (bash .ci/setup --tests)" >&2; exit 1; }
  smoke_targets=(test/bench/car-bench test/bench/dispatch_bench examples/car-daemon/car-daemon
                 test/bench/seed_runs)  # seed_runs: the stored-runs cost curve (curves.sh)
  # beast-server exists only where meson found Boost.
  ninja -C "$build" -t query test/bench/beast-server >/dev/null 2>&1 && smoke_targets+=(test/bench/beast-server)
  ninja -C "$build" "${smoke_targets[@]}" >/dev/null
else
  build=build-release
  if [[ ! -f $build/build.ninja ]]; then
    meson setup "$build" -Dbuildtype=release -Dtests=false --wrap-mode=nodownload >/dev/null
  fi
  ninja -C "$build" >/dev/null
fi
bench=$root/$build/test/bench/car-bench
daemon=$root/$build/examples/car-daemon/car-daemon
dispatch=$root/$build/test/bench/dispatch_bench
node_peer=$root/test/bench/node_ws_peer.js

# ---- pinning -----------------------------------------------------------------------------------
server_pin=()
load_pin=()
if command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
  server_pin=(taskset -c 0)
  load_pin=(taskset -c 1)
fi
# Other processes (builds, tests) share these cores; as root, a higher CFS weight for the server
# and the load keeps their time slices out of the tails. Recorded in the report.
priority="default"
if [[ $(id -u) -eq 0 ]] && ! $smoke; then
  server_pin=(nice -n -10 "${server_pin[@]}")
  load_pin=(nice -n -10 "${load_pin[@]}")
  priority="nice -10"
fi

# ---- counts ------------------------------------------------------------------------------------
if $smoke; then
  rtt_n=200; rtt_warm=20; tp_s=0.2; tp_warm=0.05; idle_n=20; conns_list="1 4"; depth=4
  subs_list="1 4"; turns=40; batch=10; sat_depth=4; wedged_subs=4; pairs="1"; iso_runs=2; dispatch_args="2000 1"
else
  rtt_n=20000; rtt_warm=2000; tp_s=4; tp_warm=1; idle_n=1000; conns_list="1 10 50 100"; depth=16
  subs_list="1 10 50 100"; turns=2000; batch=16; sat_depth=16; wedged_subs=100; pairs="1 2 3"; iso_runs=5
  dispatch_args="200000 7"
fi

# Other work on the machine shows up in every latency; the report records the load average.
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d /tmp/car-bench.XXXXXX)
state_root=$work
[[ -d /dev/shm && -w /dev/shm ]] && state_root=$(mktemp -d /dev/shm/car-bench.XXXXXX)
results=$work/results.jsonl
: >"$results"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  [[ $state_root != "$work" ]] && rm -rf "$state_root"
  return 0
}
trap cleanup EXIT

# start_server NAME CMD... : starts CMD pinned to core 0, waits for its `listening` lines, and sets
# SERVER_PID, SERVER_WS (ws://...:PORT or tcp:...:PORT, if any) and SERVER_UNIX (if any).
start_server() {
  local name=$1
  shift
  local log=$work/$name.log
  # Emptied here, not only by the background job's redirection: that one may happen after the
  # first check below, which would then read the previous server's `listening` lines (and port).
  : >"$log"
  "${server_pin[@]}" "$@" 2>"$log" &
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  local want=1
  [[ "$*" == *"--unix"* && "$*" == *"--listen"* ]] && want=2
  for _ in $(seq 100); do
    (($(grep -c '^listening' "$log" || true) >= want)) && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; echo "run-all: $name died" >&2; exit 1; }
    sleep 0.05
  done
  (($(grep -c '^listening' "$log" || true) >= want)) || { cat "$log" >&2; echo "run-all: $name did not start" >&2; exit 1; }
  SERVER_WS=$(grep -o -m1 -E '(ws://|tcp:)127\.0\.0\.1:[0-9]+' "$log" | sed -E 's#^(ws://|tcp:)##' || true)
  SERVER_UNIX=$(grep -o -m1 'unix:.*' "$log" | sed 's/^unix://' || true)
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# b SCENARIO LABEL ARGS... : one car-bench run on core 1; its JSON line goes to the results.
b() {
  local scenario=$1 label=$2
  shift 2
  local line
  if ! line=$("${load_pin[@]}" "$bench" "$scenario" --label "$label" "$@"); then
    echo "run-all: car-bench $scenario ($label) failed" >&2
    exit 1
  fi
  echo "$line" | tee -a "$results" >&2
}

start_daemon() {  # start_daemon [EXTRA_FLAGS...]
  local state
  state=$(mktemp -d "$state_root/state.XXXXXX")
  start_server car-daemon "$daemon" --no-auth --listen 127.0.0.1:0 --unix "$work/car.sock" \
    --state-dir "$state" --log-level error "$@"
}

# ---- rtt ---------------------------------------------------------------------------------------
echo "== rtt" >&2
start_server echo-unix "$bench" echo-server --unix "$work/raw.sock"
b rtt raw-unix --target "raw-unix:$SERVER_UNIX" --requests $rtt_n --warmup $rtt_warm --server-pid $SERVER_PID
stop_server
start_server echo-tcp "$bench" echo-server --tcp 0
b rtt raw-tcp --target "raw-tcp:$SERVER_WS" --requests $rtt_n --warmup $rtt_warm --server-pid $SERVER_PID
stop_server
start_server prebuilt-unix "$bench" ws-prebuilt-server --unix "$work/pre.sock"
b rtt prebuilt-ws-unix --target "ws-unix:$SERVER_UNIX" --requests $rtt_n --warmup $rtt_warm --server-pid $SERVER_PID
stop_server
start_server prebuilt-tcp "$bench" ws-prebuilt-server --tcp 0
b rtt prebuilt-ws-tcp --target "ws-tcp:$SERVER_WS" --requests $rtt_n --warmup $rtt_warm --server-pid $SERVER_PID
stop_server
start_daemon
b rtt car-ws-unix --target "ws-unix:$SERVER_UNIX" --requests $rtt_n --warmup $rtt_warm --server-pid $SERVER_PID
b rtt car-ws-tcp --target "ws-tcp:$SERVER_WS" --requests $rtt_n --warmup $rtt_warm --server-pid $SERVER_PID
stop_server
stdio_state=$(mktemp -d "$state_root/stdio.XXXXXX")
b rtt car-stdio --target "stdio:$daemon" --server-cpu 0 --state-dir "$stdio_state" --requests $rtt_n --warmup $rtt_warm
b rtt car-stdio-cl --target "stdio-cl:$daemon" --server-cpu 0 --state-dir "$stdio_state" --requests $rtt_n --warmup $rtt_warm
start_server node "node" "$node_peer" --port 0
b rtt node-ws-tcp --target "ws-tcp:$SERVER_WS" --requests $rtt_n --warmup $rtt_warm --server-pid $SERVER_PID
stop_server

# ---- throughput --------------------------------------------------------------------------------
echo "== throughput" >&2
tp() {  # tp LABEL TARGET
  local label=$1 target=$2 c
  for c in $conns_list; do
    b throughput "$label" --target "$target" --connections "$c" --depth $depth --seconds $tp_s \
      --warmup-seconds $tp_warm --server-pid $SERVER_PID
  done
}
start_server prebuilt-tcp "$bench" ws-prebuilt-server --tcp 0
tp prebuilt-ws-tcp "ws-tcp:$SERVER_WS"
stop_server
start_server echo-tcp "$bench" echo-server --tcp 0
tp raw-tcp "raw-tcp:$SERVER_WS"
stop_server
start_daemon
tp car-ws-tcp "ws-tcp:$SERVER_WS"
stop_server
start_daemon
tp car-ws-unix "ws-unix:$SERVER_UNIX"
stop_server
start_server node "node" "$node_peer" --port 0
tp node-ws-tcp "ws-tcp:$SERVER_WS"
stop_server
# stdio against UDS: one connection, same depth.
b throughput car-stdio --target "stdio:$daemon" --server-cpu 0 --state-dir "$stdio_state" \
  --depth $depth --seconds $tp_s --warmup-seconds $tp_warm
b throughput car-stdio-cl --target "stdio-cl:$daemon" --server-cpu 0 --state-dir "$stdio_state" \
  --depth $depth --seconds $tp_s --warmup-seconds $tp_warm

# ---- idle --------------------------------------------------------------------------------------
echo "== idle" >&2
start_daemon
b idle car-ws-tcp --target "ws-tcp:$SERVER_WS" --connections $idle_n --server-pid $SERVER_PID
stop_server
start_daemon
b idle car-ws-unix --target "ws-unix:$SERVER_UNIX" --connections $idle_n --server-pid $SERVER_PID
stop_server
start_server node "node" "$node_peer" --port 0
b idle node-ws-tcp --target "ws-tcp:$SERVER_WS" --connections $idle_n --server-pid $SERVER_PID
stop_server
start_server prebuilt-tcp "$bench" ws-prebuilt-server --tcp 0
b idle prebuilt-ws-tcp --target "ws-tcp:$SERVER_WS" --connections $idle_n --server-pid $SERVER_PID
stop_server

# ---- fanout and wedged -------------------------------------------------------------------------
echo "== fanout" >&2
# A daemon without runs.* (older tree) answers runs.start with -32601: then the rows are pending.
runs_available=true
start_daemon
if ! "${load_pin[@]}" "$bench" fanout --label probe --target "ws-tcp:$SERVER_WS" --subscribers 1 \
     --turns 10 --batch 10 >/dev/null 2>"$work/probe.log"; then
  if grep -q 'runs.start failed' "$work/probe.log"; then
    runs_available=false
    echo '{"scenario":"fanout","label":"car-ws-tcp","pending":true}' >>"$results"
  else
    cat "$work/probe.log" >&2
    exit 1
  fi
fi
stop_server
if $runs_available; then
  for s in $subs_list; do
    start_daemon
    b fanout car-ws-tcp --target "ws-tcp:$SERVER_WS" --subscribers "$s" --batch $batch --turns $turns
    stop_server
    start_server node "node" "$node_peer" --port 0
    b fanout node-ws-tcp --target "ws-tcp:$SERVER_WS" --subscribers "$s" --batch $batch --turns $turns
    stop_server
  done
  # Saturation: the producer keeps sat_depth calls in flight, so events pile up behind batches
  # still in the sinks. The same with the drains on the loop thread (--drain-on-loop) is the
  # baseline for "pool drain throughput ≥ 0.8× an inline loop drain".
  start_daemon
  b fanout car-ws-tcp-saturated --target "ws-tcp:$SERVER_WS" --subscribers $wedged_subs --batch $batch \
    --turns $turns --depth $sat_depth
  stop_server
  start_daemon --drain-on-loop
  b fanout car-ws-tcp-loopdrain-saturated --target "ws-tcp:$SERVER_WS" --subscribers $wedged_subs \
    --batch $batch --turns $turns --depth $sat_depth
  stop_server
  start_daemon --drain-on-loop
  b fanout car-ws-tcp-loopdrain --target "ws-tcp:$SERVER_WS" --subscribers $wedged_subs --batch $batch \
    --turns $turns
  stop_server
  # Isolation: a run is capped at 2 000 turns (~125 producer calls), too few for a stable p99,
  # so each side pools iso_runs back-to-back runs, and three alternating pairs (without / with
  # 5 wedged) give the median of their ratios.
  for _ in $pairs; do
    start_daemon
    b fanout car-ws-tcp-nowedge --target "ws-tcp:$SERVER_WS" --subscribers $wedged_subs --batch $batch \
      --turns $turns --runs $iso_runs
    stop_server
    start_daemon
    b wedged car-ws-tcp-wedged --target "ws-tcp:$SERVER_WS" --subscribers $wedged_subs --batch $batch \
      --turns $turns --runs $iso_runs --wedged 5 --rcvbuf 4096
    stop_server
  done
fi

# ---- the no-limits floor and the Boost.Beast server (issue 14) ----------------------------------
# floor-server (car-bench floor-server: epoll + RapidJSON, no limits) and beast-server (Boost.Beast,
# the same JSON code) beside car-daemon: rows for rtt, throughput (host.agents), idle and fan-out,
# then ROUNDS alternating floor / car-daemon / beast runs of the three target measures
# (throughput 50 × 16 host.agents, fan-out to 100 subscribers, rtt host.agents), from which
# report.py takes the median of the per-round ratios.
echo "== floor and beast" >&2
beast=$root/$build/test/bench/beast-server
have_beast=true
if [[ ! -x $beast ]]; then
  have_beast=false
  echo "run-all: note: beast-server not built (Boost not found by meson): no Boost.Beast rows" >&2
fi
if $smoke; then
  alt_conns=4; alt_subs=4; alt_rounds="1"
else
  alt_conns=50; alt_subs=100; alt_rounds="1 2 3"
fi
# baseline_servers: the labels and start commands of the baselines present.
baseline_servers=(floor)
$have_beast && baseline_servers+=(beast)
start_baseline() {  # start_baseline floor|beast|car
  case $1 in
    floor) start_server floor "$bench" floor-server --tcp 0 ;;
    beast) start_server beast "$beast" --tcp 0 ;;
    car) start_daemon ;;
  esac
}
for name in "${baseline_servers[@]}"; do
  start_baseline "$name"
  b rtt "$name-ws-tcp" --target "ws-tcp:$SERVER_WS" --requests $rtt_n --warmup $rtt_warm --server-pid $SERVER_PID
  b rtt "$name-ws-tcp-agents" --target "ws-tcp:$SERVER_WS" --requests $rtt_n --warmup $rtt_warm \
    --method host.agents --server-pid $SERVER_PID
  for c in $conns_list; do
    b throughput "$name-ws-tcp-agents" --target "ws-tcp:$SERVER_WS" --connections "$c" --depth $depth \
      --seconds $tp_s --warmup-seconds $tp_warm --method host.agents --server-pid $SERVER_PID
  done
  stop_server
  start_baseline "$name"
  b idle "$name-ws-tcp" --target "ws-tcp:$SERVER_WS" --connections $idle_n --server-pid $SERVER_PID
  stop_server
  for s in $subs_list; do
    start_baseline "$name"
    b fanout "$name-ws-tcp" --target "ws-tcp:$SERVER_WS" --subscribers "$s" --batch $batch --turns $turns
    stop_server
  done
done
# car-daemon's host.agents rows (its server.handshake rows are above).
start_daemon
b rtt car-ws-tcp-agents --target "ws-tcp:$SERVER_WS" --requests $rtt_n --warmup $rtt_warm \
  --method host.agents --server-pid $SERVER_PID
for c in $conns_list; do
  b throughput car-ws-tcp-agents --target "ws-tcp:$SERVER_WS" --connections "$c" --depth $depth \
    --seconds $tp_s --warmup-seconds $tp_warm --method host.agents --server-pid $SERVER_PID
done
stop_server
# Alternating rounds: floor, car-daemon, beast, each on a fresh server.
for _ in $alt_rounds; do
  for name in floor car beast; do
    [[ $name == beast ]] && ! $have_beast && continue
    start_baseline "$name"
    b throughput "alt-$name-ws-tcp" --target "ws-tcp:$SERVER_WS" --connections $alt_conns --depth $depth \
      --seconds $tp_s --warmup-seconds $tp_warm --method host.agents --server-pid $SERVER_PID
    b rtt "alt-$name-ws-tcp" --target "ws-tcp:$SERVER_WS" --requests $rtt_n --warmup $rtt_warm \
      --method host.agents --server-pid $SERVER_PID
    stop_server
    if $runs_available || [[ $name != car ]]; then
      start_baseline "$name"
      b fanout "alt-$name-ws-tcp" --target "ws-tcp:$SERVER_WS" --subscribers $alt_subs --batch $batch \
        --turns $turns
      stop_server
    fi
  done
done

# ---- dispatch CPU (dispatch_bench) --------------------------------------------------------------
echo "== dispatch" >&2
# shellcheck disable=SC2086
"${load_pin[@]}" "$dispatch" $dispatch_args | tail -n 1 | tee -a "$results" >&2

# ---- cost curves (test/bench/curves.sh) ----------------------------------------------------------
# shellcheck source=test/bench/curves.sh
source "$root/test/bench/curves.sh"

# ---- report ------------------------------------------------------------------------------------
machine="nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(uname -r); priority $priority; load average at start: $load_start, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if $smoke; then
  python3 test/bench/report.py "$results" --machine "$machine" --plots "$work/plots" >/dev/null
  echo "run-all: smoke OK ($(wc -l <"$results") result lines)" >&2
  exit 0
fi
mkdir -p docs
cp "$results" docs/bench-results.jsonl
python3 test/bench/report.py "$results" --machine "$machine" --plots "$work/plots"
if ! command -v gnuplot >/dev/null 2>&1; then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null; }
fi
for plot in "$work"/plots/*.gp; do
  (cd docs && gnuplot "$plot")
done
echo "run-all: wrote docs/bench-results.jsonl and docs/perf-*.svg" >&2
