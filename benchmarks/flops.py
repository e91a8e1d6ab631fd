"""Matmul FLOPs of the s2s model for one batch, counted from the architecture.

torch's FlopCounterMode does not see inside the fused LSTM kernels, so utilisation figures use
this count instead: 2 FLOPs per multiply-add, computed over what the code really computes
(packed source tokens in the encoder, padded positions in the decoder, real target positions
in the output layer). A training step is taken as 3x the forward pass.
"""

from __future__ import annotations

from s2s.batching import Batch
from s2s.config import ModelConfig
from s2s.vocab import PAD_ID


def forward_flops(config: ModelConfig, batch: Batch, tgt_vocab_size: int) -> float:
    embed, enc, dec = config.embed_size, config.encoder_hidden, config.decoder_hidden
    memory = 2 * enc
    out = embed if config.tie_embeddings else dec
    sentences, src_len = batch.src.shape
    tgt_len = batch.tgt_in.size(1)
    src_tokens = float(batch.src_lengths.sum())
    decoder_positions = float(sentences * tgt_len)
    real_targets = float((batch.tgt_out != PAD_ID).sum())

    encoder = 0.0
    for layer in range(config.encoder_layers):
        inputs = embed if layer == 0 else memory
        encoder += src_tokens * 2 * 2 * 4 * enc * (inputs + enc)  # two directions
    bridge = sentences * 2 * memory * 2 * config.decoder_layers * dec
    keys = 0.0 if config.attention == "dot" else sentences * src_len * 2 * memory * dec

    per_position = 0.0
    for layer in range(config.decoder_layers):
        if layer == 0:
            inputs = embed + (out if config.input_feeding else 0)
        else:
            inputs = dec
        per_position += 2 * 4 * dec * (inputs + dec)
    per_position += 2 * src_len * (dec + memory)  # scores and context
    if config.attention == "bahdanau":
        per_position += 2 * dec * dec + 2 * src_len * dec
    per_position += 2 * (memory + dec) * out  # attentional vector
    output = real_targets * 2 * out * tgt_vocab_size
    return encoder + bridge + keys + decoder_positions * per_position + output


def training_flops(config: ModelConfig, batch: Batch, tgt_vocab_size: int) -> float:
    return 3.0 * forward_flops(config, batch, tgt_vocab_size)
