# Cost curves (issue 14 item 3), sourced by run-all.sh after its other blocks and before the
# report: it uses run-all's b, start_server, stop_server, start_daemon, $bench, $daemon, $work,
# $state_root, $results and $smoke. Each curve adds JSON lines that report.py turns into a table,
# a plot and a sentence on whether the curve is flat:
#   curve-fanout  per-delivered-event server CPU and e2e latency against 1 … 1,000 subscribers
#   curve-idle    server RSS per idle WebSocket connection against 100 … 10,000 connections
#   curve-store   request cost and start-up time against 10^2 … 10^5 stored runs
#   curve-size    round trip against request size up to the 16 MiB message limit, with the
#                 transport-only ws-prebuilt-server as the per-byte baseline
# shellcheck shell=bash

seed_runs=$root/$build/test/bench/seed_runs
if $smoke; then
  curve_subs="1 4"; curve_turns=40; curve_conns="20"; curve_stored="100"; curve_rtt_n=200
  curve_sizes="1024 262144"; curve_size_budget=$((4 << 20)); curve_size_min=10
else
  curve_subs="1 10 100 300 1000"; curve_turns=2000; curve_conns="100 1000 3000 10000"
  curve_stored="100 1000 10000 100000"; curve_rtt_n=5000
  # 15.9 MiB: just under the daemon's 16 MiB (16,777,216-byte) message limit (ServerConfig).
  curve_sizes="1024 16384 262144 1048576 4194304 16672358"
  curve_size_budget=$((256 << 20)); curve_size_min=30
fi
# 10,000 idle connections need 10,000 descriptors in the daemon and in car-bench (which raises
# its own soft limit to the hard one). The daemon's own cap is given explicitly (--max-connections),
# since its default is 1,024 or the descriptor limit - 64, whichever is smaller.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
curve_max_conns=20000

echo "== curve: CPU per delivered event vs subscribers" >&2
# Server CPU comes from /proc in clock ticks (10 ms): the small fan-outs pool several runs (a run
# is capped at 2,000 turns) so that every point spends a few hundred ticks.
for s in $curve_subs; do
  runs=1
  ! $smoke && ((s < 100)) && runs=20
  ! $smoke && ((s >= 100 && s < 300)) && runs=5
  ! $smoke && ((s >= 300 && s < 1000)) && runs=2
  start_daemon --max-connections $curve_max_conns
  b fanout curve-fanout --target "ws-tcp:$SERVER_WS" --subscribers "$s" --batch 16 \
    --turns $curve_turns --runs $runs --server-pid $SERVER_PID --timeout 300
  stop_server
done

echo "== curve: memory per idle connection" >&2
for c in $curve_conns; do
  if (($(ulimit -n) < c + 100)); then
    echo "{\"scenario\":\"idle\",\"label\":\"curve-idle\",\"connections\":$c,\"skipped\":\"descriptor limit $(ulimit -n)\"}" >>"$results"
    continue
  fi
  start_daemon --max-connections $curve_max_conns
  b idle curve-idle --target "ws-tcp:$SERVER_WS" --connections "$c" --server-pid $SERVER_PID --timeout 300
  stop_server
done

echo "== curve: request cost vs stored runs" >&2
for n in $curve_stored; do
  state=$(mktemp -d "$state_root/stored.XXXXXX")
  seed_line=$("$seed_runs" --dir "$state" --runs "$n" --agents 100)
  # Start-up to listening, polled every 1 ms (start_server polls every 50 ms).
  log=$work/curve-store.log
  : >"$log"
  t0=$(date +%s%N)
  "${server_pin[@]}" "$daemon" --no-auth --listen 127.0.0.1:0 --state-dir "$state" --log-level error \
    --max-connections $curve_max_conns 2>"$log" &
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  for _ in $(seq 5000); do
    grep -q '^listening' "$log" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; echo "run-all: daemon died on $n runs" >&2; exit 1; }
    sleep 0.001
  done
  t1=$(date +%s%N)
  grep -q '^listening' "$log" || { echo "run-all: daemon did not start on $n runs" >&2; exit 1; }
  SERVER_WS=$(grep -o -m1 -E 'ws://127\.0\.0\.1:[0-9]+' "$log" | sed 's#^ws://##')
  startup_ms=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", ns / 1e6 }')
  echo "${seed_line%\}},\"label\":\"curve-store\",\"startup_ms\":$startup_ms}" | tee -a "$results" >&2
  # An existing run by id (the middle one), the first page of an agent's list, and — the
  # producer side — runs.start plus record_turns batches of 16 on a new run (fanout, 0 subscribers).
  mid=$((n / 2))
  echo "{\"jsonrpc\":\"2.0\",\"id\":100000,\"method\":\"runs.get_trace\",\"params\":{\"run_id\":\"seed-$mid\"}}" >"$work/get.json"
  echo "{\"jsonrpc\":\"2.0\",\"id\":100000,\"method\":\"runs.list\",\"params\":{\"agent_id\":\"agent-$((mid % 100))\",\"limit\":100}}" >"$work/list.json"
  b rtt curve-store-get --target "ws-tcp:$SERVER_WS" --body-file "$work/get.json" --stored-runs "$n" \
    --requests $curve_rtt_n --warmup 100 --server-pid $SERVER_PID
  b rtt curve-store-list --target "ws-tcp:$SERVER_WS" --body-file "$work/list.json" --stored-runs "$n" \
    --requests $curve_rtt_n --warmup 100 --server-pid $SERVER_PID
  b fanout curve-store-record --target "ws-tcp:$SERVER_WS" --subscribers 0 --batch 16 --turns 2000 \
    --stored-runs "$n" --server-pid $SERVER_PID
  stop_server
  rm -rf "$state"
done

echo "== curve: latency vs message size" >&2
# server.handshake with one extra string param of the request's size: the daemon parses and
# UTF-8-validates all of it and ignores the param, so the reply stays small; ws-prebuilt-server
# only decodes (unmasks) the frames and answers pre-encoded bytes.
size_curve() {  # size_curve LABEL
  local label=$1 sz n
  for sz in $curve_sizes; do
    n=$((curve_size_budget / sz))
    ((n > 2000)) && n=2000
    ((n < curve_size_min)) && n=$curve_size_min
    b rtt "$label" --target "ws-tcp:$SERVER_WS" --pad "$sz" --requests "$n" --warmup 3 \
      --server-pid $SERVER_PID --timeout 300
  done
}
start_daemon
size_curve curve-size-car
stop_server
start_server prebuilt-tcp "$bench" ws-prebuilt-server --tcp 0
size_curve curve-size-prebuilt
stop_server
