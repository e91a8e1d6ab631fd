"""Concurrent requests translated together: a queue, batches closed by size or time, one
worker thread off the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from s2s.translation.translator import TranslationResult, Translator


@dataclass(frozen=True)
class RequestOptions:
    """What a request asks its lines to be translated with; requests with the same options
    are translated as one group."""

    beam: int
    nbest: int
    alignment: str  # none, hard or soft


@dataclass
class _Job:
    lines: list[str]
    options: RequestOptions
    future: asyncio.Future


class Batcher:
    """Collects concurrent requests into batches and translates them on one worker thread."""

    def __init__(self, translator: Translator, *, max_batch_sentences: int = 64,
                 max_wait_ms: float = 10.0) -> None:
        self.translator = translator
        self.max_batch_sentences = max_batch_sentences
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2s-translate")
        self._translators: dict[RequestOptions, Translator] = {}
        self.batches = 0  # how many batches ran (for /info and tests)

    async def translate(self, lines: list[str], options: RequestOptions) -> list[TranslationResult]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(lines, options, future))
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
        try:
            results = await loop.run_in_executor(self.worker, self.translate_lines, lines,
                                                 options)
        except Exception as error:  # the requests fail, the server goes on
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

    def translate_lines(self, lines: list[str], options: RequestOptions
                        ) -> list[TranslationResult]:
        """Translate one group of lines (on the worker thread)."""
        return self._translator(options).translate(
            lines, with_attention=options.alignment != "none")

    def _translator(self, options: RequestOptions) -> Translator:
        """The translator for ``options``: the same model, other decoding options."""
        if options not in self._translators:
            decode = replace(self.translator.decode, beam_size=options.beam,
                             nbest=options.nbest)
            self._translators[options] = self.translator.with_decode(decode)
        return self._translators[options]

    def close(self) -> None:
        self.worker.shutdown(wait=True)
