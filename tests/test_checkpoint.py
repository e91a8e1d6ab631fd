"""Checkpoints written by earlier versions of s2s load and translate unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from s2s.translation.output import OutputFormat
from s2s.translation.translator import load_translator

# written by s2s at 687a08e (one flat package, before the sub-packages): a tiny model trained
# for 300 steps on the demo corpus; what that version printed for these lines with beam 3,
# n-best 2 and hard alignments
OLD_CHECKPOINT = Path(__file__).parent / "data" / "checkpoint-687a08e.pt"
LINES = ["The old dog sees a small cat.", "A happy woman buys the new car near the house.", ""]
PRINTED_THEN = [
    "Die Beun Bee Beun Bote Bee Bee Bee Bee Bee Bee\t-24.4075\t0-0 3-1 3-2 3-3 3-4 3-5 3-6 3-7 "
    "3-8 3-9 3-10\tDie Beun Bee Beun Bore Bee Bee Bee Bee Bee Bee\t-24.4144\t0-0 3-1 3-2 3-3 3-4 "
    "3-5 3-6 3-7 3-8 3-9 3-10",
    "Ein Beun Bee Beun Beun Bee Beun Beun Bee Beun Beun Bee Beun Beu\t-28.0460\t0-0 3-1 3-2 3-3 "
    "3-4 3-5 3-6 3-7 3-8 3-9 3-10 3-11 3-12 3-13\tEin Beun Bee Beun Beun Bee Beun Beun Bee Beun "
    "Beun Bee Beun Bee\t-28.8601\t0-0 3-1 3-2 3-3 3-4 3-5 3-6 3-7 3-8 3-9 3-10 3-11 3-12 3-13",
    ""]


def test_a_checkpoint_of_the_flat_package_translates_as_it_did(tmp_path: Path) -> None:
    translator = load_translator(tmp_path, str(OLD_CHECKPOINT), device="cpu",
                                 overrides=("decode.precision=fp32",))  # as it decoded then
    assert translator.loaded.step == 300
    translator = translator.with_decode(replace(translator.decode, beam_size=3, nbest=2))
    output = OutputFormat(nbest=2, alignment="hard")
    printed = [output.line(result)
               for result in translator.translate(LINES, with_attention=True)]
    for now, then in zip(printed, PRINTED_THEN, strict=True):
        now_columns, then_columns = now.split("\t"), then.split("\t")
        assert now_columns[0::3] == then_columns[0::3]  # translations
        assert now_columns[2::3] == then_columns[2::3]  # alignments
        # scores: other BLAS kernels may round the 4th decimal differently
        assert [float(s) for s in now_columns[1::3]] == pytest.approx(
            [float(s) for s in then_columns[1::3]], abs=2e-4)
