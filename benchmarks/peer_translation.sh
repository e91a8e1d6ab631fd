#!/usr/bin/env bash
# CPU translation beside the peers, in one sitting (BENCHMARKS.md, "Side by side"): fairseq 0.12
# and OpenNMT-py 3.5 decode Multi30k test2016 before and after s2s's settings, each on core 0
# with one thread and its own timer; BLEU and chrF by sacreBLEU against the raw references.
#
# Usage: benchmarks/peer_translation.sh S2S_RUN FAIRSEQ_VENV FAIRSEQ_DATA FAIRSEQ_CHECKPOINT \
#            ONMT_VENV ONMT_MODEL SPM_MODEL [S2S_SETTINGS]
#   FAIRSEQ_DATA: fairseq-preprocess's folder; SPM_MODEL: the sentencepiece model both peers
#   were trained on (the source side of test2016 is encoded with it for OpenNMT-py).
set -euo pipefail
[ $# -ge 7 ] || { sed -n 2,9p "$0" | sed 's/^# \{0,1\}//'; exit 2; }
run=$1 fairseq=$2 fairseq_data=$3 fairseq_checkpoint=$4 onmt=$5 onmt_model=$6 spm=$7
settings=${8:-fp32,bf16,int8,int8+shortlist,onnx,onnx-int8}
data=$(dirname "$0")/../../shared/data/multi30k-en-de
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1

score() {  # hypotheses file -> "BLEU / chrF"
    python3 -c 'import sys, sacrebleu
hyps = open(sys.argv[1]).read().splitlines(); refs = open(sys.argv[2]).read().splitlines()
print(f"{sacrebleu.corpus_bleu(hyps, [refs]).score:.2f} / {sacrebleu.corpus_chrf(hyps, [refs]).score:.2f}")' \
        "$1" "$data/test.de"
}

peers() {
    for beam in 1 5; do
        taskset -c 0 "$fairseq/bin/fairseq-generate" "$fairseq_data" --path "$fairseq_checkpoint" \
            --gen-subset test --beam "$beam" --batch-size 128 --cpu \
            --post-process sentencepiece > "$work/fairseq.out" 2> "$work/fairseq.err"
        grep '^H-' "$work/fairseq.out" | sort -t- -k2 -n | cut -f3 > "$work/fairseq.hyp"
        speed=$(grep -o '[0-9.]* sentences/s' "$work/fairseq.err" | cut -d' ' -f1)
        echo "fairseq    beam $beam: $speed sent/s, BLEU / chrF $(score "$work/fairseq.hyp")"

        "$onmt/bin/python" -c 'import sentencepiece as s, sys
p = s.SentencePieceProcessor(model_file=sys.argv[1])
for line in open(sys.argv[2]): print(" ".join(p.encode(line.strip(), out_type=str)))' \
            "$spm" "$data/test.en" > "$work/test.pieces.en"
        taskset -c 0 "$onmt/bin/onmt_translate" -model "$onmt_model" -src "$work/test.pieces.en" \
            -output "$work/onmt.pieces" -beam_size "$beam" -batch_size 128 -gpu -1 -report_time \
            > "$work/onmt.err" 2>&1
        "$onmt/bin/python" -c 'import sentencepiece as s, sys
p = s.SentencePieceProcessor(model_file=sys.argv[1])
for line in open(sys.argv[2]): print(p.decode(line.split()))' \
            "$spm" "$work/onmt.pieces" > "$work/onmt.hyp"
        seconds=$(grep -o 'Total translation time (s): [0-9.]*' "$work/onmt.err" | grep -o '[0-9.]*$')
        speed=$(python3 -c "print(f'{$(wc -l < "$data/test.en") / $seconds:.1f}')")
        echo "OpenNMT-py beam $beam: $speed sent/s, BLEU / chrF $(score "$work/onmt.hyp")"
    done
}

peers
taskset -c 0 python3 "$(dirname "$0")/cpu_translation.py" "$run" --beams 1,5 --rounds 2 \
    --settings "$settings"
peers
