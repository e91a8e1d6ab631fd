"""A run on disk: where its files live (``directory``), the checkpoint format and the
one way to read and write it (``checkpoint``), and the lock that keeps one job per run
(``lock``)."""
