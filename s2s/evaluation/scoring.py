"""Corpus scores with sacrebleu, always reported with their signatures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF, TER

# sacrebleu tokenizers for scripts written without spaces between words
_TOKENIZER_BY_LANGUAGE = {"zh": "zh", "ja": "char", "ko": "char", "th": "char"}


def bleu_tokenizer(tgt_lang: str, setting: str = "auto") -> str:
    """The sacrebleu tokenizer for a target language: zh for Chinese, 13a for most others."""
    if setting != "auto":
        return setting
    return _TOKENIZER_BY_LANGUAGE.get(tgt_lang.split("-")[0].split("_")[0].lower(), "13a")


@dataclass(frozen=True)
class Scores:
    bleu: float
    chrf: float
    ter: float | None = None
    signatures: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"bleu": self.bleu, "chrf": self.chrf, "ter": self.ter,
                "signatures": self.signatures}


def score_corpus(hypotheses: Sequence[str], references: Sequence[str], tokenize: str,
                 with_ter: bool = False) -> Scores:
    """BLEU and chrF (and TER on request) of detokenised hypotheses against one reference."""
    refs = [list(references)]
    bleu = BLEU(tokenize=tokenize)
    chrf = CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), refs)
    chrf_score = chrf.corpus_score(list(hypotheses), refs)
    signatures = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    ter_value = None
    if with_ter:
        ter = TER(asian_support=tokenize in ("zh", "char"))
        ter_value = ter.corpus_score(list(hypotheses), refs).score
        signatures["ter"] = str(ter.get_signature())
    return Scores(bleu_score.score, chrf_score.score, ter_value, signatures)
