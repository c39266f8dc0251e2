#!/usr/bin/env bash
# docs/live-view.md's screenshot of Locust's LLM tab: `loadgen ui workloads/chat.yaml` (the emulated H100), Start pressed,
# the tab captured by headless Chromium 20 s into the run, 1,280 px wide. Needs chromium and curl; writes docs/figures/llm_tab.png.
set -euo pipefail
cd "$(dirname "$0")/.."
port=18089
out=$(mktemp -d)
loadgen ui workloads/chat.yaml --db "$out/ui.duckdb" --web-port $port >"$out/ui.out" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$port/ && break; sleep 0.2; done
# Start, once the UI takes it (its page may answer before the swarm route does).
for _ in $(seq 50); do curl -sf -X POST -d '' http://127.0.0.1:$port/swarm >/dev/null && break; sleep 0.2; done
sleep 20
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$out/chromium" \
    --window-size=1280,1000 --virtual-time-budget=3000 --screenshot=docs/figures/llm_tab.png \
    "http://127.0.0.1:$port/?tab=llm" 2>/dev/null
echo "docs/figures/llm_tab.png"
