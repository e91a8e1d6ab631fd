"""The attentional recurrent encoder-decoder: what search may decode, the one contract
(``decodable``); the model itself (``seq2seq``); several models decoding as one
(``ensemble``); int8 weights for CPUs (``int8``); a model decoding over a vocabulary shortlist
(``shortlist``); its attention layer (``attention``), the recurrent cells it can use
(``cells``) and the step-wise layers that make decoding one token at a time fast
(``step_layers``); and its training objective on teacher-forced predictions (``loss``), which
training minimises and validation reports."""
