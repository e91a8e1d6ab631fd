"""Text written the Moses way: tokenised ("it 's all taken care of .") and HTML-escaped
("it &apos;s"), as many published test sets are distributed (TVsub's English side, WMT's
processed sets).

A model trained on plain text should translate plain text, so the sources of such a set are
turned back into plain text (``plain_text``) before the model sees them, and references in
that form are detokenised the same way for sacreBLEU. The other direction, ``moses_tokens``,
tokenises plain hypotheses as Moses' ``tokenizer.perl -a`` does, so that BLEU can be computed
the way published tables computed it (multi-bleu.perl on tokenised text). sacremoses, a
faithful port of the Moses scripts, does both.
"""

from __future__ import annotations

import functools
import html
from typing import Any


def plain_text(line: str, language: str) -> str:
    """A Moses-tokenised, HTML-escaped line as plain text: unescaped, detokenised, and for a
    language with letter case its first letter upper-cased (truecased sets lower-case the first
    word of a sentence, which plain text never does)."""
    text = _detokenizer(language).detokenize(html.unescape(line).split())
    return text[:1].upper() + text[1:] if text[:1].islower() else text


def moses_tokens(line: str, language: str) -> str:
    """Plain text tokenised as ``tokenizer.perl -a -no-escape`` would (hyphens split as
    ``@-@``), with HTML entities in the input unescaped first."""
    return _tokenizer(language).tokenize(html.unescape(line), aggressive_dash_splits=True,
                                         return_str=True, escape=False)


@functools.lru_cache(maxsize=8)
def _detokenizer(language: str) -> Any:
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang=language)


@functools.lru_cache(maxsize=8)
def _tokenizer(language: str) -> Any:
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang=language)
