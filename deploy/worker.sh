#!/usr/bin/env bash
# One Celery worker per GPU: deploy/worker.sh <gpu index> [queue]   (queue: gpu, the default, or cpu)
# Pinned to its GPU with CUDA_VISIBLE_DEVICES (the run sees it as cuda:0); --pool=solo: the worker's
# own process executes one run at a time (the prefork pool's daemonic children cannot start the
# processes some runs start). A CPU worker: deploy/worker.sh none cpu.
set -euo pipefail
gpu="${1:?usage: deploy/worker.sh <gpu index|none> [queue]}"
queue="${2:-gpu}"
if [ "$gpu" = none ]; then export CUDA_VISIBLE_DEVICES=""; name="cpu-$$"; else export CUDA_VISIBLE_DEVICES="$gpu"; name="gpu$gpu"; fi
exec celery -A synground_assets.ops.scale.worker worker --pool=solo --concurrency=1 -Q "$queue" \
    -n "$name@%h" --loglevel=INFO
