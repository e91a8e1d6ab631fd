"""s2s: attentional recurrent machine translation (LSTM, GRU or tanh RNN cells), from raw
parallel text to BLEU and a translator."""

__version__ = "0.1.0"
