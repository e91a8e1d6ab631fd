"""Scores: sacrebleu BLEU, chrF and TER (``scoring``), paired significance tests between
systems (``significance``), validation as training and `s2s evaluate` both compute it
(``validation``), and `s2s evaluate` itself (``evaluate``)."""
