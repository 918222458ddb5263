#!/bin/bash
# Walk through deployments/README.md on one machine: temp Prefect server + pool + deploy + worker + two runs.
# Everything lives in a temp dir and is stopped at the end. Run from anywhere: bash deployments/smoke_local.sh
set -u
W=$(mktemp -d -t ftpipe-deploy-XXXX)
cd "$(dirname "$0")/.." && source .venv/bin/activate
export PREFECT_HOME=$W/prefect-home PREFECT_SERVER_ANALYTICS_ENABLED=false
PORT=$(python -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
BPORT=$(python -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export FTPIPE_BACKEND_PORT=$BPORT FTPIPE_BACKEND_DATA_DIR=$W/backend FTPIPE_STATE_DIR=$W/state
prefect server start --host 127.0.0.1 --port $PORT > $W/server.log 2>&1 & SERVER=$!
echo "server pid $SERVER port $PORT"
for i in $(seq 60); do curl -sf $PREFECT_API_URL/health >/dev/null && break; sleep 1; done
echo "== health: $(curl -s $PREFECT_API_URL/health)"
ftpipe backend serve --port $BPORT --data-dir $W/backend --workers 2 > $W/backend.log 2>&1 & BACKEND=$!
echo "== work-pool create"; prefect work-pool create ftpipe-process --type process 2>&1 | tail -3
echo "== deploy"; prefect deploy --prefect-file deployments/prefect.yaml --all 2>&1 | tail -40
echo "== deployment ls"; prefect deployment ls 2>&1 | tail -8
(cd /tmp && exec prefect worker start --pool ftpipe-process --limit 2 > $W/worker.log 2>&1) & WORKER=$!
python - <<PY
import json
from pathlib import Path
d = Path("$W/ds"); d.mkdir(parents=True)
rows = [{"messages": [{"role": "user", "content": f"Colour of item {i}?"}, {"role": "assistant", "content": f"Item {i} is blue."}]} for i in range(12)]
(d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
P='{"dataset_dir": "'$W'/ds", "model": "local:micro-chat", "n_epochs": 1, "poll_interval_s": 0.5, "state_dir": "'$W'/state", "output_dir": "'$W'/out-manual"}'
echo "== run manual"; prefect deployment run 'fine-tune/manual' --params "$P" --watch --watch-timeout 300 2>&1 | tail -8
S='{"base": {"dataset_dir": "'$W'/ds", "model": "local:micro-chat", "n_epochs": 1, "poll_interval_s": 0.5, "state_dir": "'$W'/state"}, "grid": {"seed": [1, 2]}, "output_dir": "'$W'/out-sweep"}'
echo "== run sweep"; prefect deployment run 'fine-tune-sweep/sweep' --params "$S" --watch --watch-timeout 400 2>&1 | tail -8
echo "== flow runs"; prefect flow-run ls --limit 10 2>&1 | tail -14
ls $W/out-manual $W/out-sweep
echo "== worker log tail"; grep -E "Worker|Submitting|Completed|exited|ERROR" $W/worker.log | tail -12
kill -INT $WORKER; wait $WORKER; kill $BACKEND $SERVER; wait $BACKEND $SERVER 2>/dev/null
echo "done (kept logs in $W)"
