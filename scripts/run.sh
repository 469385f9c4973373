#!/usr/bin/env bash
# Starts the API (uvicorn) and one Celery worker; Ctrl-C stops both. With ENGINE=vllm and no
# VLLM_URLS, first a local vLLM server (its own venv, installed once) on the prepared model.
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

if [[ "${ENGINE:-local}" == "vllm" && -z "${VLLM_URLS:-}" ]]; then
  VLLM_PORT=${VLLM_PORT:-8100}
  make --no-print-directory install-vllm
  "$VENV/bin/python" -m app.engine.vllm.launch --port "$VLLM_PORT" &
  pids+=($!)
  echo "adaptd: starting vLLM on port $VLLM_PORT (pid ${pids[0]})"
  "$VENV/bin/python" -m app.engine.vllm.launch --wait "http://127.0.0.1:$VLLM_PORT"
  export VLLM_URLS="http://127.0.0.1:$VLLM_PORT"
fi

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
echo "adaptd: API on http://localhost:$PORT (${ENGINE:-local} engine; pids ${pids[*]})"
# Whichever process ends first ends the others.
wait -n
