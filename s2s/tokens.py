"""The special pieces every s2s vocabulary starts with, and their ids: one home for what
sentencepiece is trained to reserve (s2s.data.vocab), what a corpus tag may not be
(s2s.config) and what every shortlist keeps (s2s.model.shortlist)."""

from __future__ import annotations

SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")  # in id order
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_PIECES))
