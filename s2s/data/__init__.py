"""Text to prepared arrays: reading and normalising corpora (``text``), sentencepiece
vocabularies (``vocab``), `s2s prepare` (``prepare``), the prepared files of a run and their
manifest (``store``), token-budget batches for training and search (``batching``), and the
built-in demo corpus (``demo``)."""
