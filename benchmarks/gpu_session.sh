#!/usr/bin/env bash
# The paper budget on a lent GPU machine: all three heads x both languages, trained side by side
# on the one GPU (each run is launch-bound, so six processes share it well), each scored on the
# held-out split at the end. Each run stops at train.time_budget_minutes (the best model so far
# is kept and scored), so the whole script ends inside BUDGET seconds.
#
#   here:   .venv/bin/python -m benchmarks.device_pack pack --out .devcarry
#   there:  bash benchmarks/gpu_session.sh 540        (carry: .devcarry, data/processed)
#   rehearsal on this CPU (real encoder and data, a tiny budget, no wheels):
#           QUICK=1 PY=.venv/bin/python OUT=/tmp/gpu-rehearsal bash benchmarks/gpu_session.sh 600
#
# Results: $OUT/results.tgz: paper_<name>.json per run (rewritten after every epoch, so a run cut
# short keeps what it measured), the environment and every run's log; refreshed every 30 s.
set -u
START=$(date +%s)
BUDGET=${1:-540}
OUT=${OUT:-/tmp/gpu-session}
PY=${PY:-python3}
LOGS=$(mktemp -d)
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD:$WORK/site:$PWD/.devcarry/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
ENC=$WORK/trimmed
ARCHS=${ARCHS:-bert_crf bert_bilstm_crf bert_linear}
LANGS=${LANGS:-es zh}

elapsed() { echo $(($(date +%s) - START)); }
trap 'echo "== done in $(elapsed) s"' EXIT

{
    nvidia-smi -L 2>&1
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1
    nproc
} >"$LOGS/env.log" 2>&1

if [ "${QUICK:-0}" = 1 ]; then
    DEVICE=cpu THREADS=1
    BUDGET_SET=(--set train.max_train_sentences=48 --set train.max_val_sentences=24
        --set train.epochs=2 --set train.batch_size=16)
else
    DEVICE=cuda THREADS=2
    BUDGET_SET=()
    # The image lacks pydantic and holds transformers 5.17: the lock's versions travel as wheels.
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
        .devcarry/whl/*.whl >>"$LOGS/env.log" 2>&1 || { echo "wheels failed"; tail "$LOGS/env.log"; exit 1; }
fi
$PY - >>"$LOGS/env.log" 2>&1 <<'EOF' || { echo "imports failed"; tail -20 "$LOGS/env.log"; exit 1; }
import pydantic, torch, torchcrf, seqeval, transformers, tokenizers
import benchmarks.recipe  # every module a run needs
print("torch", torch.__version__, torch.version.cuda, "cuda", torch.cuda.is_available())
print("transformers", transformers.__version__, "tokenizers", tokenizers.__version__,
      "pydantic", pydantic.__version__)
EOF
cat "$LOGS/env.log"
$PY -m benchmarks.device_pack unpack --pack .devcarry --out "$ENC" >/dev/null \
    || { echo "unpack failed"; exit 1; }
echo "== unpacked at $(elapsed) s"

# Minutes each run may train: what is left, less ~100 s for the held-out scoring, the ONNX
# export and its check after the last epoch.
MINUTES=$(awk -v left=$((BUDGET - $(elapsed) - 100)) 'BEGIN { printf "%.2f", left / 60 }')
echo "== launching at $(elapsed) s, train.time_budget_minutes=$MINUTES"
# name lang arch variant: the paper's six runs; PLUS_LANGS="es zh" adds the best CPU recipe
# changes (mention replacement, weight averaging) on BERT+CRF per language. Off by default: eight
# processes made a CRF epoch 60-90 s and cut the paper runs to 4-6 of 10 epochs (2026-12-04).
RUNS=()
for lang in $LANGS; do
    for arch in $ARCHS; do
        RUNS+=("${lang}_${arch} $lang $arch --variants base")
    done
done
for lang in ${PLUS_LANGS-}; do
    RUNS+=("${lang}_bert_crf_plus $lang bert_crf --variants --variant plus=augment.mention_replace=0.25,average=swa")
done
mkdir -p "$WORK/json"
pids=()
for run in "${RUNS[@]}"; do
    read -r name lang arch variant <<<"$run"
    # shellcheck disable=SC2086  # the variant options split into words on purpose
    timeout $((BUDGET - $(elapsed) - 5)) $PY -m benchmarks.recipe --lang "$lang" --arch "$arch" \
        $variant --eval-split heldout --config configs/experiments/paper.yaml \
        --set "trim.output_dir=$ENC" --set "train.device=$DEVICE" \
        --set "train.threads=$THREADS" --set "train.time_budget_minutes=$MINUTES" \
        "${BUDGET_SET[@]}" \
        --models "$WORK/models/$name" --out "$WORK/json/paper_$name.json" \
        >"$LOGS/$name.log" 2>&1 &
    pids+=($!)
done
# $OUT keeps few files: one archive of the results so far, refreshed while the runs go on (a
# run rewrites its JSON after every epoch), so a session cut short still returns them.
snapshot() {
    tar czf "$WORK/results.tgz.tmp" -C "$WORK/json" . -C "$LOGS" . 2>/dev/null &&
        mv "$WORK/results.tgz.tmp" "$OUT/results.tgz"
}
(while sleep 30; do snapshot; done) &
snapper=$!
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
kill "$snapper" 2>/dev/null
snapshot
echo "== runs ended at $(elapsed) s, $failed failed"
for log in "$LOGS"/*_*.log; do
    echo "-- $(basename "$log")"
    grep -E "epoch [0-9]+/[0-9]+ step [0-9]+/[0-9]+ .*val|Error|error|Traceback" "$log" | tail -n 3
done
$PY - "$WORK/json" <<'EOF'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    for r in json.loads(path.read_text())["rows_detail"]:
        print(path.stem, r["variant"], "val", r["val_macro_f1"], "heldout", r.get("eval_macro_f1"),
              "epochs", r.get("epochs_run"), r.get("stopped_by", ""))
EOF
