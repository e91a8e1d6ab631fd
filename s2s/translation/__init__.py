"""Text in, translations out: the translator and the one function that builds it
(``translator``), streaming `s2s translate` (``stream``), prefixes and constraints as users
write them (``terms``), lines over the model's limit (``splitting``), word alignments from
attention (``alignment``) and the output formats the CLI and the server share (``output``)."""
