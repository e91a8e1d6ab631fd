"""Finding translations with a trained model (or an ensemble): greedy and corpus-level search
(``greedy``, ``corpus``), what a search is asked for (``options``), beam search over a running
batch (``beam``), sampling (``sampling``), target prefixes and terminology constraints
(``constraints``), the per-step pieces they share (``steps``) and what search returns
(``hypothesis``). Everything here decodes against one contract, ``s2s.model.decodable``."""
