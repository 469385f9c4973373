#!/usr/bin/env bash
# Starts the API (uvicorn) and one Celery worker; Ctrl-C stops both.
set -euo pipefail
VENV=${VENV:-.venv}
PORT=${PORT:-8000}

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$VENV/bin/celery" -A workers.celery_app worker --loglevel=INFO --concurrency=1 &
pids+=($!)
# WORKERS > 1: several API processes; their metrics meet in one folder, emptied first.
WORKERS=${WORKERS:-1}
if [ "$WORKERS" -gt 1 ]; then
  export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-${DATA_DIR:-data}/metrics}
  rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
"$VENV/bin/uvicorn" app.asgi:app --host "${HOST:-0.0.0.0}" --port "$PORT" --workers "$WORKERS" &
pids+=($!)
echo "adaptd: API on http://localhost:$PORT (worker pid ${pids[0]}, api pid ${pids[1]})"
# Whichever process ends first ends the other.
wait -n
