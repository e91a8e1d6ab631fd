"""Finding translations with a trained model (or an ensemble): greedy and corpus-level search
(``greedy``, ``corpus``), beam search over a running batch (``beam``), sampling (``sampling``),
target prefixes and terminology constraints (``constraints``), the per-step pieces they share
(``steps``) and what search returns (``hypothesis``)."""
