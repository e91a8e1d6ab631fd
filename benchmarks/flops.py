"""Matmul FLOPs of the s2s model for one batch, counted from the architecture.

torch's FlopCounterMode does not see inside the fused RNN kernels, so utilisation figures use
this count instead: 2 FLOPs per multiply-add, computed over what the code really computes
(packed source tokens in the encoder, padded positions in the decoder, real target positions
in the output layer, and the GRU's joined step matrix with its zero blocks). A training step is
taken as 3x the forward pass.
"""

from __future__ import annotations

from s2s.config import ModelConfig
from s2s.data.batching import Batch
from s2s.data.vocab import PAD_ID
from s2s.model.cells import CELLS


def forward_flops(config: ModelConfig, batch: Batch, tgt_vocab_size: int) -> float:
    embed, enc, dec = config.embed_size, config.encoder_hidden, config.decoder_hidden
    cell = CELLS[config.cell]
    fused_gates = cell.input_width  # torch's fused modules: 4 (LSTM), 3 (GRU), 1 (RNN)
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
        encoder += src_tokens * 2 * 2 * fused_gates * enc * (inputs + enc)  # two directions
    states = 2 if cell.has_cell_state else 1
    bridge = sentences * 2 * memory * states * config.decoder_layers * dec
    keys = 0.0 if config.attention == "dot" else sentences * src_len * 2 * memory * dec

    per_position = 0.0
    for layer in range(config.decoder_layers):
        if not config.input_feeding:  # one fused module
            per_position += 2 * fused_gates * dec * ((embed if layer == 0 else dec) + dec)
            continue
        if layer == 0:  # the embeddings' part, then the joined matrix over [feed, hidden]
            per_position += 2 * cell.input_width * dec * embed
        per_position += 2 * cell.joined_width * dec * ((out if layer == 0 else dec) + dec)
    per_position += 2 * src_len * (dec + memory)  # scores and context
    if config.attention == "bahdanau":
        per_position += 2 * dec * dec + 2 * src_len * dec
    per_position += 2 * (memory + dec) * out  # attentional vector
    output = real_targets * 2 * out * tgt_vocab_size
    return encoder + bridge + keys + decoder_positions * per_position + output


def training_flops(config: ModelConfig, batch: Batch, tgt_vocab_size: int) -> float:
    return 3.0 * forward_flops(config, batch, tgt_vocab_size)
