"""Finding translations with a trained model: greedy and corpus-level search (``greedy``),
beam search over a running batch (``beam``), the per-step pieces both share (``steps``) and
what search returns (``hypothesis``)."""
