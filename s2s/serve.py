"""`s2s serve`: translations over HTTP, with concurrent requests translated together.

``create_app(translator)`` builds the FastAPI application around one loaded model. Requests
are decoded on one worker thread, off the event loop, so ``/health`` answers while they
translate; ``Batcher`` says how they share the work. Each request gets exactly its own lines
back, as `s2s translate` would give them for the same settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import re
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, AsyncIterator, Iterator, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, StrictInt

from s2s.beam import BeamBatch
from s2s.config import config_to_dict
from s2s.device import thread_scope
from s2s.errors import S2SError
from s2s.search import decode_corpus
from s2s.search_steps import Hypothesis
from s2s.translate import PreparedLines, TranslationResult, Translator

MAX_BEAM = 64
# lone surrogates (valid JSON, not encodable text) and control characters other than whitespace
_UNENCODABLE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_lines: int = 256
    max_chars: int = 100_000
    max_beam: int = MAX_BEAM


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Union[str, list[str]]
    beam: StrictInt | None = None
    nbest: StrictInt | None = None
    alignment: Union[bool, Literal["hard", "soft"]] = False


class OpenNMTItem(BaseModel):
    """OpenNMT-py's server request: a list of these."""

    model_config = ConfigDict(extra="allow")

    src: str
    id: int = 0


class BadRequest(Exception):
    """A request that is well-formed JSON but asks for something it may not."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Settings:
    """What a group of lines is translated with."""

    beam: int
    nbest: int
    alignment: str  # none, hard or soft


@dataclass
class _Job:
    """One request's lines on their way through the worker."""

    lines: list[str]
    settings: Settings
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    prepared: PreparedLines | None = None
    found: list[list[Hypothesis]] = field(default_factory=list)
    missing: int = 0  # source pieces still decoding


class Batcher:
    """Translates concurrent requests together on one worker thread (continuous batching).

    Requests wait in an inbox. When nothing is decoding, the worker takes the first and
    whatever else arrives within ``max_wait_ms``; while it decodes, new requests join the
    running batch at the next step, and each request is answered as soon as its own lines are
    done, not when the slowest sentence beside it is. The batch holds at most
    ``max_batch_sentences`` source pieces (a larger request runs alone). Beam search runs one
    batch per setting (beam, n-best, alignment); greedy requests are translated together
    between steps.
    """

    def __init__(self, translator: Translator, *, max_batch_sentences: int = 64,
                 max_wait_ms: float = 10.0) -> None:
        self.translator = translator
        self.max_batch_sentences = max_batch_sentences
        self.max_wait = max_wait_ms / 1000
        self.inbox: queue.Queue[_Job | None] = queue.Queue()
        self.waiting: deque[_Job] = deque()  # out of the inbox, waiting for room
        self.closing = False
        self._translators: dict[Settings, Translator] = {}
        self._batches: dict[Settings, BeamBatch] = {}
        self._jobs: dict[int, _Job] = {}
        self._job_ids = itertools.count()
        self.steps = 0  # beam search steps run (for /info and tests)
        self.sentences_stepped = 0  # the sum over those steps of the sentences decoded
        self.worker = threading.Thread(target=self._work, name="s2s-translate", daemon=True)

    def start(self) -> None:
        self.worker.start()

    def close(self) -> None:
        """Finish what was asked, then stop the worker."""
        self.inbox.put(None)
        if self.worker.is_alive():
            self.worker.join()

    async def translate(self, lines: list[str], settings: Settings) -> list[TranslationResult]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.inbox.put(_Job(lines, settings, future, loop))
        return await future

    def _work(self) -> None:
        with thread_scope(self.translator.threads):
            while not (self.closing and self._idle()):
                if self._idle():
                    self._gather()
                else:
                    self._take_waiting(block_until=None)
                self._admit()
                self.advance()

    def _idle(self) -> bool:
        return not self.waiting and not self._jobs

    def _gather(self) -> None:
        """Nothing runs: wait for a request, then up to ``max_wait`` for company."""
        first = self.inbox.get()
        if first is None:
            self.closing = True
            return
        self.waiting.append(first)
        self._take_waiting(block_until=time.monotonic() + self.max_wait)

    def _take_waiting(self, block_until: float | None) -> None:
        """Move requests from the inbox to ``waiting``: those already there, and (with a
        deadline) those that arrive before it while the batch has room."""
        while True:
            if block_until is None or self._waiting_pieces() >= self.max_batch_sentences:
                block_until = None
            try:
                if block_until is None:
                    job = self.inbox.get_nowait()
                else:
                    job = self.inbox.get(timeout=max(block_until - time.monotonic(), 0))
            except queue.Empty:
                return
            if job is None:
                self.closing = True
                return
            self.waiting.append(job)

    def _waiting_pieces(self) -> int:
        return sum(len(job.lines) for job in self.waiting)

    def _running_sentences(self) -> int:
        return sum(len(batch) for batch in self._batches.values())

    def _admit(self) -> None:
        """Start waiting requests, in order, while the batch has room."""
        greedy: dict[Settings, list[_Job]] = {}
        while self.waiting:
            job = self.waiting[0]
            try:
                if job.prepared is None:
                    job.prepared = self._translator(job.settings).prepare(job.lines)
            except Exception as error:  # this request fails, the server goes on
                self.waiting.popleft()
                _settle(job, error=error)
                continue
            pieces = len(job.prepared.pieces)
            running = self._running_sentences()
            if running and running + pieces > self.max_batch_sentences:
                break
            self.waiting.popleft()
            job.found, job.missing = [[] for _ in range(pieces)], pieces
            if not pieces:
                _settle(job, self._translator(job.settings).assemble(job.prepared, []))
            elif job.settings.beam == 1 and job.settings.nbest == 1:
                greedy.setdefault(job.settings, []).append(job)
            else:
                self._start_beam_search(job)
        self._decode_greedy(greedy)

    def _start_beam_search(self, job: _Job) -> None:
        assert job.prepared is not None
        translator = self._translator(job.settings)
        if job.settings not in self._batches:
            self._batches[job.settings] = BeamBatch(
                translator.model, translator.decode, translator.device,
                with_attention=job.prepared.with_attention)
        number = next(self._job_ids)
        self._jobs[number] = job
        try:
            self._batches[job.settings].add(job.prepared.sources,
                                            [(number, index) for index in range(job.missing)])
        except Exception as error:
            self._fail_batch(job.settings, error)

    def _decode_greedy(self, groups: dict[Settings, list[_Job]]) -> None:
        """Greedy requests of one setting as one batch (greedy search does not take joiners)."""
        for settings, jobs in groups.items():
            translator = self._translator(settings)
            sources = [ids for job in jobs for ids in job.prepared.sources]  # type: ignore
            try:
                found = decode_corpus(translator.model, sources, translator.decode,
                                      translator.device,
                                      with_attention=jobs[0].prepared.with_attention)
            except Exception as error:
                for job in jobs:
                    _settle(job, error=error)
                continue
            start = 0
            for job in jobs:
                _settle(job, translator.assemble(job.prepared, found[start:start + job.missing]))
                start += job.missing

    def advance(self) -> None:
        """One beam search step for every running batch; answer the requests it completes."""
        for settings, batch in list(self._batches.items()):
            if not len(batch):
                continue
            self.steps += 1
            self.sentences_stepped += len(batch)
            try:
                done = batch.step()
            except Exception as error:
                self._fail_batch(settings, error)
                continue
            for (number, index), hypotheses in done:
                job = self._jobs[number]
                job.found[index] = hypotheses
                job.missing -= 1
                if not job.missing:
                    del self._jobs[number]
                    _settle(job, self._translator(settings).assemble(job.prepared, job.found))

    def _fail_batch(self, settings: Settings, error: Exception) -> None:
        """A batch that failed answers all its requests with the error and starts afresh."""
        self._batches.pop(settings, None)
        for number, job in list(self._jobs.items()):
            if job.settings == settings:
                del self._jobs[number]
                _settle(job, error=error)

    def _translator(self, settings: Settings) -> Translator:
        """The translator for ``settings``: the same model, other decoding settings."""
        if settings not in self._translators:
            base = self.translator
            decode = replace(base.decode, beam_size=settings.beam, nbest=settings.nbest)
            self._translators[settings] = Translator(
                base.loaded, decode=decode, device=base.device, threads=base.threads,
                alignment=settings.alignment, reporter=base.reporter)
        return self._translators[settings]


def _settle(job: _Job, results: list[TranslationResult] | None = None, *,
            error: Exception | None = None) -> None:
    """Answer a request from the worker thread (its client may have gone away)."""
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(results)

    with contextlib.suppress(RuntimeError):  # the event loop has closed
        job.loop.call_soon_threadsafe(settle)


def create_app(translator: Translator, *, max_batch_sentences: int = 64,
               max_wait_ms: float = 10.0, limits: Limits = Limits()) -> FastAPI:
    """The HTTP application serving ``translator``'s model."""
    batcher = Batcher(translator, max_batch_sentences=max_batch_sentences,
                      max_wait_ms=max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    app = FastAPI(title="s2s", lifespan=lifespan)
    app.state.batcher = batcher
    defaults = translator.decode
    _add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {**_model_info(translator), "batching": {
            "max_batch_sentences": max_batch_sentences, "max_wait_ms": max_wait_ms,
            "steps_run": batcher.steps, "sentences_stepped": batcher.sentences_stepped}, "limits": {
            "max_lines": limits.max_lines, "max_chars": limits.max_chars,
            "max_beam": limits.max_beam}}

    @app.post("/translate")
    async def translate(request: TranslateRequest) -> dict[str, Any]:
        lines = [request.text] if isinstance(request.text, str) else request.text
        settings = _settings(request.beam, request.nbest, request.alignment, defaults, limits)
        results = await batcher.translate(_checked_lines(lines, limits), settings)
        return _response(results, settings, single=isinstance(request.text, str))

    @app.post("/translator/translate")
    async def opennmt(items: list[OpenNMTItem]) -> list[list[dict[str, Any]]]:
        settings = _settings(None, None, False, defaults, limits)
        results = await batcher.translate(_checked_lines([i.src for i in items], limits),
                                          settings)
        return [[{"src": item.src, "tgt": result.text, "n_best": 1,
                  "pred_score": result.scores[0] if result.scores else 0.0}
                 for item, result in zip(items, results)]]

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("s2s").joinpath("page.html").read_text(encoding="utf-8")

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error a client causes is JSON ``{"error": one line}`` with a 4xx status."""
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(error)}, status_code=422)

    @app.exception_handler(S2SError)
    async def s2s_error(request: Request, error: S2SError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)


def _model_info(translator: Translator) -> dict[str, Any]:
    loaded = translator.loaded
    config = loaded.config
    metric, best = config.train.early_stopping_metric, loaded.best_score
    return {
        "src_lang": config.data.src_lang, "tgt_lang": config.data.tgt_lang,
        "model": config_to_dict(config.model),
        "vocab_sizes": {"src": len(loaded.src_tokenizer), "tgt": len(loaded.tgt_tokenizer)},
        "checkpoint": str(loaded.path) if loaded.path else None,
        "checkpoint_step": loaded.step,
        "decode": config_to_dict(translator.decode),
        # the checkpoint keeps the best score negated for loss (higher is better there)
        "validation": {"metric": metric, "best": None if best is None else (
            -best if metric == "loss" else best)},
    }


def _settings(beam: int | None, nbest: int | None, alignment: bool | str,
              defaults: Any, limits: Limits) -> Settings:
    beam = defaults.beam_size if beam is None else beam
    if not 1 <= beam <= limits.max_beam:
        raise BadRequest(f"beam: {beam} is out of range; choose 1 to {limits.max_beam}")
    nbest = 1 if nbest is None else nbest
    if not 1 <= nbest <= beam:
        raise BadRequest(f"nbest: {nbest} is out of range; choose 1 to the beam size ({beam})")
    mode = "hard" if alignment is True else "none" if alignment is False else alignment
    return Settings(beam, nbest, mode)


def _checked_lines(lines: list[str], limits: Limits) -> list[str]:
    """Lines within the limits, with text that cannot be translated made harmless."""
    if len(lines) > limits.max_lines:
        raise BadRequest(f"text: {len(lines)} lines in one request; at most {limits.max_lines}",
                         413)
    characters = sum(len(line) for line in lines)
    if characters > limits.max_chars:
        raise BadRequest(f"text: {characters} characters in one request; at most "
                         f"{limits.max_chars}", 413)
    return [_CONTROL.sub(" ", _UNENCODABLE.sub("\ufffd", line)) for line in lines]


def _response(results: list[TranslationResult], settings: Settings, *, single: bool
              ) -> dict[str, Any]:
    """N lines in, N translations out; with n-best, a list of hypotheses per line."""
    def per_line(result: TranslationResult, values: list[Any], empty: Any = "") -> Any:
        return values if settings.nbest > 1 else (values[0] if values else empty)

    translations = [per_line(r, r.texts) for r in results]
    scores = [per_line(r, r.scores) if r.scores else (0.0 if settings.nbest == 1 else [])
              for r in results]
    body: dict[str, Any] = {"translations": translations, "scores": scores}
    if settings.alignment != "none":
        empty = "" if settings.alignment == "hard" else []
        body["alignments"] = [per_line(r, [_alignment(a, settings.alignment)
                                           for a in (r.attentions or [])], empty)
                              for r in results]
    if single:
        body = {key: value[0] for key, value in body.items()}
    return body


def _alignment(attention: Any, mode: str) -> Any:
    return attention.hard() if mode == "hard" else attention.words.round(4).tolist()


def _validation_message(error: RequestValidationError) -> str:
    """One line naming the first bad field and what was wrong with it."""
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return (f"the body is not valid JSON (at character {location[0] if location else '?'}: "
                f"{first.get('ctx', {}).get('error', 'invalid')})")
    if location[:1] == ["text"] and first.get("type") in ("string_type", "list_type"):
        return "text: must be a string or a list of strings"
    if not location:
        return ("body: expected a JSON object (send Content-Type: application/json), "
                f"{first.get('msg', 'invalid').lower()}")
    return f"{'.'.join(location)}: {first.get('msg', 'invalid')}"


def serve(app: FastAPI, host: str, port: int, *, on_ready: Any = None) -> None:
    """Run uvicorn until SIGINT/SIGTERM, then finish the requests in flight and return (the
    command exits 0; uvicorn itself would re-raise the signal). ``on_ready(url)`` is called
    once the socket listens."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {number: signal.signal(number, self.handle_exit)
                        for number in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                   lifespan="on"))

    async def main() -> None:
        async def announce() -> None:
            while not server.started:
                await asyncio.sleep(0.02)
            if on_ready is not None:
                on_ready(f"http://{host}:{port}/")
        announcer = asyncio.create_task(announce())
        await server.serve()
        announcer.cancel()

    asyncio.run(main())
