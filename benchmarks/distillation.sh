#!/usr/bin/env bash
# Sequence-level knowledge distillation on Multi30k en→de, as BENCHMARKS.md ("Small students")
# measured it: two teachers, the distilled corpus, five students, their test scores with paired
# bootstrap, and one speed sitting of all of them. Run each step alone on the machine:
#
#   bash benchmarks/distillation.sh teachers   # 2 × 30 minutes, 2 threads each
#   bash benchmarks/distillation.sh distill    # the teachers' ensemble, beam 5 (~5 minutes)
#   bash benchmarks/distillation.sh students   # 5 students, 6,000 steps, two at a time on 1 thread each
#   bash benchmarks/distillation.sh scores     # test BLEU/chrF and p against teacher and original
#   bash benchmarks/distillation.sh speed      # sentences/s, one thread pinned to core 1
#   bash benchmarks/distillation.sh sizes      # parameters and best.pt sizes
set -euo pipefail
cd "$(dirname "$0")/.."

TEACHER=configs/multi30k-en-de-cpu60.yaml
STUDENT=configs/multi30k-en-de-student.yaml
ORIGINAL="--set data.train=data/multi30k-en-de/train"
DISTILLED="--set data.train=data/multi30k-distilled/train"
# the other two sizes of the curve were measured with 6,000-piece vocabularies
SIX="--set vocab.src_size=6000 --set vocab.tgt_size=6000"
MID="$SIX --set model.embed_size=192 --set model.encoder_hidden=192 --set model.decoder_hidden=384"
TINY="$SIX --set model.embed_size=64 --set model.encoder_hidden=64 --set model.decoder_hidden=128"

# each student's run directory is runs/NAME; the one on the original pairs, the baseline, first
STUDENTS=(student-original student-distilled multi30k-en-de-student student-mid student-tiny)
# name, then the --set list that makes it from the student config (empty: the config as shipped)
declare -A SETS=(
    [student-original]="$ORIGINAL --set run_dir=runs/student-original"
    [student-distilled]="$DISTILLED --set run_dir=runs/student-distilled"
    [multi30k-en-de-student]=""
    [student-mid]="$MID --set run_dir=runs/student-mid"
    [student-tiny]="$TINY --set run_dir=runs/student-tiny"
)

teachers() {
    s2s prepare $TEACHER
    s2s train $TEACHER --set train.max_minutes=30
    s2s train $TEACHER --set train.max_minutes=30 --set train.seed=2 \
        --set run_dir=runs/multi30k-en-de-cpu60-s2
}

distill() {
    s2s distill $TEACHER --teacher runs/multi30k-en-de-cpu60 \
        --teacher runs/multi30k-en-de-cpu60-s2 --output data/multi30k-distilled --beam 5
}

train_pair() {  # two students side by side, one thread each: a fixed step budget keeps it fair
    local name
    for name in "$@"; do
        s2s prepare $STUDENT ${SETS[$name]}
    done
    for name in "$@"; do
        s2s train $STUDENT ${SETS[$name]} --set train.threads=1 > "runs/$name.train.log" 2>&1 &
    done
    wait
}

students() {
    train_pair student-original student-distilled
    train_pair multi30k-en-de-student student-mid
    train_pair student-tiny
}

scores() {
    # the baselines: the teacher (seed 1) and the student on the original pairs, beam 5 and greedy
    s2s evaluate $TEACHER
    cp runs/multi30k-en-de-cpu60/eval/test.best.hyp runs/teacher.beam5.hyp
    s2s evaluate $TEACHER --model runs/multi30k-en-de-cpu60-s2
    local name
    for name in "${STUDENTS[@]}"; do
        s2s evaluate $STUDENT ${SETS[$name]} --set decode.beam_size=5 --checkpoint best,last \
            --baseline runs/teacher.beam5.hyp
        cp "runs/$name/eval/test.best.hyp" "runs/$name.beam5.hyp"
        s2s evaluate $STUDENT ${SETS[$name]} --set decode.beam_size=1 --baseline runs/teacher.beam5.hyp
        cp "runs/$name/eval/test.best.hyp" "runs/$name.greedy.hyp"
        if [ "$name" != student-original ]; then
            s2s evaluate $STUDENT ${SETS[$name]} --set decode.beam_size=5 \
                --baseline runs/student-original.beam5.hyp
            s2s evaluate $STUDENT ${SETS[$name]} --set decode.beam_size=1 \
                --baseline runs/student-original.greedy.hyp
        fi
    done
}

speed() {
    taskset -c 1 python benchmarks/cpu_translation.py runs/multi30k-en-de-cpu60 \
        runs/multi30k-en-de-cpu60,runs/multi30k-en-de-cpu60-s2 "${STUDENTS[@]/#/runs/}" \
        --beams 1,5 --settings fp32,int8,int8+shortlist --rounds 2 --threads 1
}

sizes() {  # a tied output layer counts once (checkpoints saved before 2026-12-07 hold it twice)
    python - multi30k-en-de-cpu60 "${STUDENTS[@]}" <<'EOF'
import os
import sys
import torch
for run in sys.argv[1:]:
    path = f"runs/{run}/checkpoints/best.pt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    tied = checkpoint["config"]["model"]["tie_embeddings"]
    parameters = sum(tensor.numel() for name, tensor in checkpoint["model"].items()
                     if not (tied and name == "decoder.output.weight"))
    print(f"{run:24} {parameters / 1e6:6.2f}M parameters  "
          f"{os.path.getsize(path) / 1e6:6.1f} MB best.pt")
EOF
}

case "${1:-}" in
    teachers | distill | students | scores | speed | sizes) "$1" ;;
    *) echo "error: say which step: teachers, distill, students, scores, speed or sizes" >&2
       exit 2 ;;
esac
