"""Text in, translations out: the translator and the one function that builds it
(``translator``), streaming `s2s translate` (``stream``), prefixes and constraints as users
write them and as search takes them (``terms``), what a translator returns (``result``), lines
over the model's limit (``splitting``), word alignments from attention (``alignment``), the
output formats the CLI and the server share (``output``), and a teacher's translations of a
training corpus (``distill``)."""
