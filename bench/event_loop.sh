#!/bin/bash
# The broker's event loop (issue 19): W1 = e2e.py produce-100b, W2 = consume-100b,
# W3 = latency, against `pystream serve` on asyncio and on uvloop (event.loop), and
# optionally a second checkout (an older commit, built in place) on its default loop.
# Every round starts fresh brokers side by side; the order rotates between rounds.
#
#   bench/event_loop.sh [ROUNDS=3] [BASE_CHECKOUT]
#
# Results: one table per round from e2e.py, and JSON, in $OUT (printed at the end).
set -u
ROUNDS=${1:-3}
BASE=${2:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d /tmp/pystream-event-loop.XXXXXX)
start() { # name checkout port extra-override
  local data=$OUT/data-$1
  rm -rf "$data" && mkdir -p "$data"
  (cd "$2" && PYTHONPATH=src exec python -m pystream serve --log-level warning \
     --override log.dirs="$data" --override listeners=PLAINTEXT://127.0.0.1:"$3" \
     --override metrics.enable=false $4) > "$OUT/$1.log" 2>&1 &
  echo $!
}
ports=(19302 19303)
[ -n "$BASE" ] && ports=(19301 19302 19303)
for round in $(seq 1 "$ROUNDS"); do
  pids=()
  [ -n "$BASE" ] && pids+=("$(start base "$BASE" 19301 "")")
  pids+=("$(start asyncio "$HERE" 19302 "--override event.loop=asyncio")")
  pids+=("$(start uvloop "$HERE" 19303 "--override event.loop=uvloop")")
  sleep 4
  n=${#ports[@]}
  args=""
  for i in $(seq 0 $((n - 1))); do
    args="$args --bootstrap 127.0.0.1:${ports[$(((i + round - 1) % n))]}"
  done
  timeout 900 python "$HERE/bench/e2e.py" $args --scenario produce-100b,consume-100b,latency \
    --json "$OUT/round$round.json" > "$OUT/round$round.txt" 2>&1
  kill "${pids[@]}"
  # The brokers are not this shell's children (started in $(...)): poll until gone.
  for _ in $(seq 1 300); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.1
  done
done
rm -rf "$OUT"/data-*
echo "ports: 19301 base ${BASE:-(none)}, 19302 asyncio, 19303 uvloop; results in $OUT"
