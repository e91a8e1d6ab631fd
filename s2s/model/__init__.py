"""The attentional recurrent encoder-decoder: the model itself (``seq2seq``), several models
decoding as one (``ensemble``), its attention layer (``attention``), the recurrent cells it can
use (``cells``), the step-wise layers that make decoding one token at a time fast
(``step_layers``), and its training objective on teacher-forced predictions (``loss``), which
training minimises and validation reports."""
