"""``s2s export``: a run's checkpoint as ONNX graphs in a self-contained folder.

The folder holds ``encoder.onnx`` (source ids and lengths -> encoder states, attention keys,
mask and the decoder's first state), ``step.onnx`` (one decoder step for N rows over B
sentences, N a multiple of B: next-token log-probabilities, the new state and the attention
weights), both with dynamic batch and source length; ``source.model`` and ``target.model``
(sentencepiece); ``settings.json`` (decoding settings, special ids, the graphs' input names);
and ``translate.py``, the torch-free reader (``s2s.export.reader``).

The encoder graph cannot use packed sequences, so each direction of each layer runs as a
one-direction fused RNN over the padded batch: the backward one over each sentence reversed
within its length, then put back in order. Padding never reaches a real position's state.
``--int8`` quantises the graphs' matmuls with onnxruntime's dynamic quantisation (weights per
channel, 8-bit activations). The folder appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from s2s.data.text import side_normalization
from s2s.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from s2s.errors import UsageError
from s2s.model.cells import CELLS
from s2s.model.seq2seq import DecoderState, Encoded, Seq2Seq
from s2s.report import Reporter
from s2s.run.checkpoint import LoadedModel, load_model, resolve_checkpoint

OPSET = 17
READER = Path(__file__).with_name("reader.py")


class _EncoderGraph(nn.Module):
    """The encoder over a padded batch, without packed sequences (module docstring)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        encoder, config = model.encoder, model.config
        self.model = model
        cell = CELLS[config.cell]
        self.directions = nn.ModuleList()
        for layer in range(config.encoder_layers):
            for suffix in ("", "_reverse"):
                size = config.embed_size if layer == 0 else 2 * config.encoder_hidden
                one = cell.module(size, config.encoder_hidden, 1, batch_first=True)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    setattr(one, f"{name}_l0", getattr(encoder.rnn, f"{name}_l{layer}{suffix}"))
                self.directions.append(one)

    def forward(self, src_ids: Tensor, src_lengths: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        encoder = self.model.encoder
        positions = torch.arange(src_ids.size(1))[None, :]  # (1, S)
        live = positions < src_lengths[:, None]  # (B, S)
        # position t of a sentence reversed within its length (padding stays where it is)
        reverse = torch.where(live, src_lengths[:, None] - 1 - positions, positions)
        layer_input = encoder.embedding(src_ids)  # (B, S, E)
        for layer in range(len(self.directions) // 2):
            forward = self.directions[2 * layer](layer_input)[0]
            backward = _gather_time(self.directions[2 * layer + 1](
                _gather_time(layer_input, reverse))[0], reverse)
            layer_input = torch.cat([forward, backward], dim=-1) * live[..., None]
        states = layer_input  # (B, S, M)
        last = (src_lengths - 1)[:, None, None].expand(-1, 1, states.size(-1) // 2)
        top = torch.cat([forward.gather(1, last)[:, 0], backward[:, 0]], dim=1)  # (B, M)
        batch = src_ids.size(0)
        init = torch.tanh(encoder.bridge(top)).view(batch, *encoder.decoder_shape)
        hidden = init[:, 0].transpose(0, 1)  # (L, B, H)
        cell = init[:, -1].transpose(0, 1)  # the LSTM's; a copy of hidden for other cells
        keys = self.model.decoder.attention.keys(states)
        return states, keys, src_ids != PAD_ID, hidden, cell


def _gather_time(tensor: Tensor, index: Tensor) -> Tensor:
    """``tensor`` (B, S, D) with each row's time steps reordered by ``index`` (B, S)."""
    return tensor.gather(1, index[..., None].expand(-1, -1, tensor.size(-1)))


class _StepGraph(nn.Module):
    """One decoder step, log-probabilities out; every cell takes (and gives) a cell state, and
    a model without input feeding a feed of width one, so that every graph has one signature."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model
        self.has_cell = CELLS[model.config.cell].has_cell_state
        self.feeds = model.config.input_feeding

    def forward(self, prev_tokens: Tensor, hidden: Tensor, cell: Tensor, feed: Tensor,
                states: Tensor, keys: Tensor, mask: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        decoder = self.model.decoder
        encoded = Encoded(states, keys, mask, decoder.search_layers())
        state = DecoderState(hidden, cell if self.has_cell else None,
                             feed if self.feeds else feed[:, :0])
        log_probs, state, attention = self.model.decode_step(prev_tokens, state, encoded)
        new_cell = state.cell if state.cell is not None else cell
        new_feed = state.feed if self.feeds else feed
        return log_probs, state.hidden, new_cell, new_feed, attention


def export_run(run_dir: Path, checkpoint: str = "best", *, output: Path | None = None,
               int8: bool = False, reporter: Reporter = Reporter()) -> Path:
    """Write the export folder of a run's checkpoint (module docstring); return its path.

    ``output`` defaults to RUN_DIR/export/CHECKPOINT (``-int8`` added with ``int8``); a folder
    that exists already is refused.
    """
    path = resolve_checkpoint(run_dir, checkpoint, reporter=reporter)
    loaded = load_model(path)
    if output is None:
        output = Path(run_dir) / "export" / (Path(checkpoint).stem + ("-int8" if int8 else ""))
    if output.exists():
        raise UsageError(f"{output}: the export folder exists; remove it or choose another "
                         "--output")
    if int8:
        _check_quantizer()
    output.parent.mkdir(parents=True, exist_ok=True)
    with _folder_appearing_whole(output) as folder:
        _write_graphs(loaded, folder, int8)
        (folder / "source.model").write_bytes(loaded.src_tokenizer.model_proto)
        (folder / "target.model").write_bytes(loaded.tgt_tokenizer.model_proto)
        (folder / "settings.json").write_text(json.dumps(_settings(loaded, path, int8),
                                                         indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(READER, folder / "translate.py")
    reporter.info(f"exported {path} to {output}")
    return output


@contextlib.contextmanager
def _folder_appearing_whole(output: Path) -> Iterator[Path]:
    """A temporary folder beside ``output``, renamed to it when the block succeeds and
    removed when it fails or is interrupted."""
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp",
                                      dir=output.parent))
    try:
        yield temporary
        temporary.chmod(0o755)  # mkdtemp's folders are private; an export is for sharing
        os.rename(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _check_quantizer() -> None:
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        raise UsageError("--int8 needs onnxruntime's quantisation tools: "
                         "pip install 's2s[export]'") from None


def _write_graphs(loaded: LoadedModel, folder: Path, int8: bool) -> None:
    model = loaded.model.float().eval()
    config = model.config
    batch, length, rows = 2, 5, 4  # example shapes: two sentences, two beams each
    src_ids = torch.randint(4, 10, (batch, length))
    src_lengths = torch.tensor([length, length - 2])
    with torch.no_grad():
        states, keys, mask, hidden, cell = _EncoderGraph(model)(src_ids, src_lengths)
    beams = torch.arange(batch).repeat_interleave(rows // batch)
    feed_width = model.decoder.out_size if config.input_feeding else 1
    step_inputs = (torch.full((rows,), BOS_ID), hidden[:, beams], cell[:, beams],
                   torch.zeros(rows, feed_width), states, keys, mask)
    sentence, row, source = "sentences", "rows", "source_length"
    graphs = {
        "encoder": (_EncoderGraph(model), (src_ids, src_lengths), {
            "src_ids": {0: sentence, 1: source}, "src_lengths": {0: sentence}},
            ["states", "keys", "mask", "hidden", "cell"],
            {"states": {0: sentence, 1: source}, "keys": {0: sentence, 1: source},
             "mask": {0: sentence, 1: source}, "hidden": {1: sentence}, "cell": {1: sentence}}),
        "step": (_StepGraph(model), step_inputs, {
            "prev_tokens": {0: row}, "hidden": {1: row}, "cell": {1: row}, "feed": {0: row},
            "states": {0: sentence, 1: source}, "keys": {0: sentence, 1: source},
            "mask": {0: sentence, 1: source}},
            ["log_probs", "new_hidden", "new_cell", "new_feed", "attention"],
            {"log_probs": {0: row}, "new_hidden": {1: row}, "new_cell": {1: row},
             "new_feed": {0: row}, "attention": {0: row, 2: source}}),
    }
    for name, (graph, inputs, input_axes, output_names, output_axes) in graphs.items():
        target = folder / f"{name}.onnx"
        _export(graph, inputs, target, list(input_axes), output_names,
                {**input_axes, **output_axes})
        if int8:
            _quantized_in_place(target)


def _export(graph: nn.Module, inputs: tuple[Tensor, ...], target: Path, input_names: list[str],
            output_names: list[str], axes: dict[str, dict[int, str]]) -> None:
    """Trace ``graph`` to ``target`` with torch's TorchScript-based ONNX exporter: it keeps the
    fused RNNs as ONNX LSTM/GRU/RNN operators. Its deprecation notices are torch's concern,
    not the user's, and are kept from the console."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.eval(), inputs, str(target), input_names=input_names,
                          output_names=output_names, dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)


def _quantized_in_place(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process image models, on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(path), str(quantized), per_channel=True, reduce_range=False,
                             weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    os.replace(quantized, path)


def _settings(loaded: LoadedModel, checkpoint: Path, int8: bool) -> dict:
    config = loaded.config
    decode = config.decode
    return {
        "format": 1,
        "checkpoint": checkpoint.name, "step": loaded.step, "int8": int8,
        "source_language": config.data.src_lang, "target_language": config.data.tgt_lang,
        "source_normalization": side_normalization(config.data.normalization,
                                                   config.data.src_lang),
        "ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
        "decoder_layers": config.model.decoder_layers,
        "decoder_hidden": config.model.decoder_hidden,
        "feed_width": loaded.model.decoder.out_size if config.model.input_feeding else 1,
        "decode": {"beam_size": decode.beam_size, "length_penalty": decode.length_penalty,
                   "alpha": decode.alpha, "max_len_a": decode.max_len_a,
                   "max_len_b": decode.max_len_b, "batch_tokens": decode.batch_tokens},
    }
