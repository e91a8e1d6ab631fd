"""s2s: attentional LSTM machine translation from raw parallel text to BLEU and a translator."""

__version__ = "0.1.0"
