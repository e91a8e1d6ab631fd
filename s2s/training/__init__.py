"""`s2s train`: the loop (``loop``), one optimizer update (``learner``), the learning-rate
schedule (``schedule``), several processes (``distributed``), stopping cleanly on signals
(``signals``) and TensorBoard (``board``). The loss it minimises is s2s.model.loss's."""
