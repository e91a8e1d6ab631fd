"""Corpus scores with sacrebleu, always reported with their signatures, against one reference
or several per line.

``Scorer`` is the one scoring rule: validation during training, `s2s evaluate`, the
significance tests and the benchmarks all ask it, so the number that picks ``best.pt`` is the
number a report shows. BLEU and chrF compare detokenised text (references written the Moses
way are detokenised first, as the sources are: s2s.data.moses). With ``decode.tokenized_bleu``
it also gives the BLEU of many published tables: hypotheses tokenised as Moses'
``tokenizer.perl -a`` does, compared with the references' tokens split on spaces (what
multi-bleu.perl does), lowercased with ``decode.bleu_lowercase``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF, TER

from s2s.config import Config
from s2s.data.moses import moses_tokens, plain_text
from s2s.data.text import base_language

# sacrebleu tokenizers for scripts written without spaces between words
_TOKENIZER_BY_LANGUAGE = {"zh": "zh", "ja": "char", "ko": "char", "th": "char"}


def bleu_tokenizer(tgt_lang: str, setting: str = "auto") -> str:
    """The sacrebleu tokenizer for a target language: zh for Chinese, 13a for most others."""
    if setting != "auto":
        return setting
    return _TOKENIZER_BY_LANGUAGE.get(base_language(tgt_lang), "13a")


@dataclass(frozen=True)
class Scores:
    bleu: float
    chrf: float
    ter: float | None = None
    signatures: dict[str, str] = field(default_factory=dict)
    tokenized_bleu: float | None = None  # on Moses-tokenised text (decode.tokenized_bleu)

    def as_dict(self) -> dict:
        return {"bleu": self.bleu, "chrf": self.chrf, "ter": self.ter,
                "tokenized_bleu": self.tokenized_bleu, "signatures": self.signatures}


@dataclass(frozen=True)
class Scorer:
    """How a run's translations are scored."""

    language: str  # of the hypotheses and references
    tokenize: str  # sacrebleu's tokenizer for BLEU
    lowercase: bool = False
    moses_references: bool = False  # references are Moses-tokenised and escaped
    tokenized_bleu: bool = False  # also BLEU on Moses-tokenised text

    @classmethod
    def of(cls, config: Config) -> "Scorer":
        data, decode = config.data, config.decode
        return cls(data.tgt_lang, bleu_tokenizer(data.tgt_lang, decode.bleu_tokenize),
                   decode.bleu_lowercase, data.tgt_lang in data.moses_tokenized,
                   decode.tokenized_bleu)

    def metrics(self) -> dict[str, BLEU | CHRF]:
        """The metrics on detokenised text, as sacrebleu objects (for significance tests)."""
        return {"bleu": BLEU(tokenize=self.tokenize, lowercase=self.lowercase),
                "chrf": CHRF(lowercase=self.lowercase)}

    def detokenized(self, references: Sequence[Sequence[str]]) -> list[list[str]]:
        """The references as plain text: as distributed, or detokenised when written the
        Moses way."""
        if not self.moses_references:
            return [list(stream) for stream in references]
        return [[plain_text(line, self.language) for line in stream] for stream in references]

    def score(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]],
              with_ter: bool = False) -> Scores:
        """BLEU and chrF (and TER on request, and tokenised BLEU when asked for) of
        ``hypotheses`` against ``references``: one list per reference translation, each
        aligned with the hypotheses."""
        hypotheses = list(hypotheses)
        refs = self.detokenized(references)
        metrics = self.metrics()
        values = {name: metric.corpus_score(hypotheses, refs).score
                  for name, metric in metrics.items()}
        signatures = {name: str(metric.get_signature()) for name, metric in metrics.items()}
        ter_value = None
        if with_ter:
            ter = TER(asian_support=self.tokenize in ("zh", "char"), case_sensitive=not
                      self.lowercase)
            ter_value = ter.corpus_score(hypotheses, refs).score
            signatures["ter"] = str(ter.get_signature())
        tokenized = None
        if self.tokenized_bleu:
            tokenized, signatures["tokenized_bleu"] = self._tokenized_bleu(hypotheses,
                                                                           references)
        return Scores(values["bleu"], values["chrf"], ter_value, signatures, tokenized)

    def _tokenized_bleu(self, hypotheses: list[str], references: Sequence[Sequence[str]]
                        ) -> tuple[float, str]:
        """BLEU as multi-bleu.perl computes it on Moses-tokenised text."""
        tokens = [moses_tokens(line, self.language) for line in hypotheses]
        refs = [[html.unescape(line) if self.moses_references
                 else moses_tokens(line, self.language) for line in stream]
                for stream in references]
        bleu = BLEU(tokenize="none", lowercase=self.lowercase, force=True)
        score = bleu.corpus_score(tokens, refs).score
        return score, f"moses-tokenized -a|{bleu.get_signature()}"

