"""Exporting a trained model to run without PyTorch: ONNX graphs of the encoder and of one
decoder step (``s2s.export.graphs``), written as a self-contained folder with the
sentencepiece models, the settings and a reader (``s2s.export.reader``) that translates with
onnxruntime, sentencepiece and numpy alone."""
