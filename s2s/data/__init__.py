"""Text to prepared arrays and training batches: reading and normalising corpora (``text``),
sentencepiece vocabularies (``vocab``), `s2s prepare` (``prepare``) over a streamed training
corpus (``chunks``), the prepared files of a run and their manifest (``store``), token-budget
batches for training and search and the epochs of weighted corpora (``batching``), subword
regularisation's training batches (``resegment``), the vocabulary shortlist's table counted from
the prepared pairs (``shortlist_table``), and the built-in demo corpus (``demo``)."""
