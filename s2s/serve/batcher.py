"""Concurrent requests translated together: a queue, batches closed by size or time, one
worker thread off the event loop."""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from s2s.config import DecodeConfig
from s2s.errors import S2SError
from s2s.translation.terms import NO_LINE_TERMS, LineTerms
from s2s.translation.translator import TranslationResult, Translator

# translators kept for the option sets clients sent last: a client that sends a fresh sampling
# seed with every request must not grow the server (each costs a search model's buffers)
TRANSLATORS_KEPT = 16


@dataclass(frozen=True)
class RequestOptions:
    """What a request asks its lines to be translated with; requests with the same options
    are translated as one group."""

    decode: DecodeConfig  # the server's decode settings with the request's changes
    alignment: str = "none"  # none, hard or soft


@dataclass
class _Job:
    lines: list[str]
    options: RequestOptions
    future: asyncio.Future
    terms: list[LineTerms]


class Batcher:
    """Collects concurrent requests into batches and translates them on one worker thread."""

    def __init__(self, translator: Translator, *, max_batch_sentences: int = 64,
                 max_wait_ms: float = 10.0) -> None:
        self.translator = translator
        self.max_batch_sentences = max_batch_sentences
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2s-translate")
        self._translators: collections.OrderedDict[RequestOptions, Translator] = (
            collections.OrderedDict())
        self.batches = 0  # how many batches ran (for /info and tests)

    async def translate(self, lines: list[str], options: RequestOptions,
                        terms: list[LineTerms] | None = None) -> list[TranslationResult]:
        """``lines`` translated as ``options`` say, each with its ``terms`` (checked by the
        caller: ``Translator.check_terms``)."""
        future = asyncio.get_running_loop().create_future()
        terms = [NO_LINE_TERMS] * len(lines) if terms is None else terms
        await self.queue.put(_Job(lines, options, future, terms))
        return await future

    async def run(self) -> None:
        """Forever: wait for a request, gather more until the batch is full or its time is up,
        translate, answer."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while sum(len(job.lines) for job in jobs) < self.max_batch_sentences:
                if not self.queue.empty():  # what is already waiting joins without delay
                    jobs.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            for options in dict.fromkeys(job.options for job in jobs):
                group = [job for job in jobs if job.options == options]
                await self._run_group(loop, group, options)

    async def _run_group(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job],
                         options: RequestOptions) -> None:
        lines = [line for job in jobs for line in job.lines]
        terms = [line_terms for job in jobs for line_terms in job.terms]
        try:
            results = await loop.run_in_executor(self.worker, self.translate_lines, lines,
                                                 options, terms)
        except Exception as error:  # the requests fail, the server goes on
            if len(jobs) > 1 and isinstance(error, S2SError):  # one request's: the others go on
                for job in jobs:
                    await self._run_group(loop, [job], options)
                return
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.batches += 1
        start = 0
        for job in jobs:
            if not job.future.done():  # a client that went away leaves a cancelled future
                job.future.set_result(results[start:start + len(job.lines)])
            start += len(job.lines)

    def translate_lines(self, lines: list[str], options: RequestOptions,
                        terms: list[LineTerms] | None = None) -> list[TranslationResult]:
        """Translate one group of lines (on the worker thread)."""
        return self.translator_for(options).translate(
            lines, with_attention=options.alignment != "none", terms=terms)

    def translator_for(self, options: RequestOptions) -> Translator:
        """The translator for ``options``: the same model, other decoding options. The
        ``TRANSLATORS_KEPT`` most recently used are kept; an older one is made again when
        asked for (the same translations: decoding depends on the options alone)."""
        if options in self._translators:
            self._translators.move_to_end(options)
        else:
            self._translators[options] = self.translator.with_decode(options.decode)
            if len(self._translators) > TRANSLATORS_KEPT:
                self._translators.popitem(last=False)
        return self._translators[options]

    @property
    def translators_kept(self) -> int:
        """How many option sets have a translator kept now (at most TRANSLATORS_KEPT)."""
        return len(self._translators)

    def close(self) -> None:
        self.worker.shutdown(wait=True)
