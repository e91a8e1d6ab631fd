"""A run's checkpoints: the checkpoint format and the one way to read and write it
(``checkpoint``), and the lock that keeps one job per run (``lock``). Where a run's files live
is s2s.rundir's, a room below data so that prepared data and checkpoints can both ask it."""
