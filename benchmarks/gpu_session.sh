#!/usr/bin/env bash
# One GPU session on a lent device machine: unpack the encoder, run the benchmarks' CUDA rows,
# then paper-budget training runs, each step capped so the whole script ends inside BUDGET.
#
#   here:   .venv/bin/python -m benchmarks.device_pack pack --out .devcarry
#   there:  bash benchmarks/gpu_session.sh 560        (carry: .devcarry, data/processed)
#   quick check on a CPU (tiny settings, no GPU rows): QUICK=1 bash benchmarks/gpu_session.sh 300
#   only some steps: STEPS="env unpack train_es_crf train_es_linear" bash benchmarks/gpu_session.sh 540
#
# Results: $OUT/*.json (one per step) and $OUT/logs.tgz (every step's log).
set -u
START=$(date +%s)
BUDGET=${1:-560}
OUT=${OUT:-/tmp/gpu-session}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH="$PWD/src:$PWD:$PWD/.devcarry/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
ENC=models/encoders/e5-trim
MODELS=$(mktemp -d)

elapsed() { echo $(($(date +%s) - START)); }

# step NAME CAP_SECONDS CMD...: run CMD with a limit of min(CAP, what is left - 20 s).
step() {
    local name=$1 cap=$2 left limit rc
    shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then
        return
    fi
    left=$((BUDGET - $(elapsed) - 20))
    limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 15 ]; then
        echo "SKIP $name (budget spent at $(elapsed) s)"
        return
    fi
    echo "== $name: limit ${limit} s, at $(elapsed) s"
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    echo "-- $name: rc=$rc after $(elapsed) s"
    grep -v '^\s*$' "$LOGS/$name.log" | tail -n "${TAIL:-14}"
}

finish() {
    tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null
    echo "== done in $(elapsed) s"
}
trap finish EXIT

if [ "${QUICK:-0}" = 1 ]; then
    CRF=(--quick) INF=(--quick) TRN=(--quick) DEV=cpu
    TRAIN=(--set train.max_train_sentences=64 --set train.max_val_sentences=32 --set train.epochs=1)
else
    CRF=(--devices cuda --repeats 30 --random-inputs 500)
    INF=(--devices cuda --threads 0 --sentences 5000 --ours-batch-sizes 32 128 512
        --hf-batch-sizes 8 32 128 --no-int8)
    TRN=(--devices cuda --threads 0 --sentences 1024 --val-sentences 64)
    DEV=cuda
    TRAIN=(--set train.max_train_sentences=0 --set train.epochs=10)
fi
COMMON=(--set "model.encoder=$ENC" --set train.batch_size=32 --set "train.device=$DEV"
    --set train.freeze_embeddings=false --set train.keep_checkpoint=false)

step env 60 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv; nproc; $PY -c 'import torch, transformers, tokenizers, numpy; print(torch.__version__, torch.version.cuda, transformers.__version__, tokenizers.__version__, numpy.__version__, torch.cuda.is_available())'; $PY -c 'import complex_ner.engines.train, complex_ner.domain.metrics, complex_ner.domain.models.tagger, torchcrf, seqeval; print(\"imports ok\")'"
step unpack 90 $PY -m benchmarks.device_pack unpack --pack .devcarry --out "$ENC"
step bench_inference 110 $PY -m benchmarks.bench_inference "${INF[@]}" --encoder "$ENC" \
    --json "$OUT/bench_inference.json"
step bench_training 60 $PY -m benchmarks.bench_training "${TRN[@]}" --encoder "$ENC" \
    --json "$OUT/bench_training.json"
step bench_crf 45 $PY -m benchmarks.bench_crf "${CRF[@]}" --json "$OUT/bench_crf.json"
step train_es_crf 290 $PY -m benchmarks.bench_quality --langs es --archs bert_crf "${COMMON[@]}" \
    "${TRAIN[@]}" --out "$MODELS" --json "$OUT/train_es_crf.json"
step train_es_linear 240 $PY -m benchmarks.bench_quality --langs es --archs bert_linear \
    "${COMMON[@]}" "${TRAIN[@]}" --out "$MODELS" --json "$OUT/train_es_linear.json"
step train_es_bilstm 300 $PY -m benchmarks.bench_quality --langs es --archs bert_bilstm_crf \
    "${COMMON[@]}" "${TRAIN[@]}" --out "$MODELS" --json "$OUT/train_es_bilstm.json"
step train_zh_crf 70 $PY -m benchmarks.bench_quality --langs zh --archs bert_crf "${COMMON[@]}" \
    "${TRAIN[@]}" --out "$MODELS" --json "$OUT/train_zh_crf.json"
step train_heads 240 $PY -m benchmarks.bench_quality --langs zh es \
    --archs bert_bilstm_crf bert_linear "${COMMON[@]}" "${TRAIN[@]}" --out "$MODELS" \
    --json "$OUT/train_heads.json"
