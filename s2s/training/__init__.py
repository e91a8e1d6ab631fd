"""`s2s train`: the loop (``loop``), one optimizer update (``learner``), the loss
(``loss``), the learning-rate schedule (``schedule``), several processes (``distributed``),
stopping cleanly on signals (``signals``) and TensorBoard (``board``)."""
