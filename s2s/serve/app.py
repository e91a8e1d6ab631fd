"""`s2s serve`: translations over HTTP, with concurrent requests translated together.

``create_app(translator)`` builds the FastAPI application around one loaded model. Requests
wait in a queue; a batch closes when it holds ``max_batch_sentences`` lines or ``max_wait_ms``
after its first request arrived, and runs on one worker thread, off the event loop, so
``/health`` answers while a batch translates. Each request gets exactly its own lines back, as
`s2s translate` would give them for the same settings. Requests with different settings (beam,
n-best, alignment) share a batch window but are translated in separate groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any, AsyncIterator, Iterator, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from s2s.config import DecodeConfig, Override, changed_decode, config_to_dict
from s2s.errors import ConfigError, S2SError
from s2s.serve.batcher import Batcher, RequestOptions
from s2s.translation.output import alignment_value
from s2s.translation.terms import LineTerms
from s2s.translation.translator import TranslationResult, Translator

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
    # what translations start with: one for every line, or one per line
    prefix: Union[str, list[str], None] = None
    # phrases translations contain: one list for every line, or a list per line
    constraints: Union[list[str], list[list[str]], None] = None
    # sampling search: nbest samples per line, as `s2s translate --sampling` draws them
    sampling: bool = False
    temperature: float | None = None
    top_k: StrictInt | None = None
    top_p: float | None = None
    seed: StrictInt | None = None


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


def create_app(translator: Translator, *, max_batch_sentences: int = 64,
               max_wait_ms: float = 10.0, limits: Limits = Limits()) -> FastAPI:
    """The HTTP application serving ``translator``'s model."""
    batcher = Batcher(translator, max_batch_sentences=max_batch_sentences,
                      max_wait_ms=max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            batcher.close()

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
            "batches_run": batcher.batches}, "limits": {
            "max_lines": limits.max_lines, "max_chars": limits.max_chars,
            "max_beam": limits.max_beam}}

    @app.post("/translate")
    async def translate(request: TranslateRequest) -> dict[str, Any]:
        lines, options, terms = _checked_request(request, batcher, defaults, limits)
        results = await batcher.translate(lines, options, terms)
        return _response(results, options, single=isinstance(request.text, str))

    @app.post("/translator/translate")
    async def opennmt(items: list[OpenNMTItem]) -> list[list[dict[str, Any]]]:
        options = _options(TranslateRequest(text=""), defaults, limits)
        results = await batcher.translate(_checked_lines([i.src for i in items], limits),
                                          options)
        return [[{"src": item.src, "tgt": result.text, "n_best": 1,
                  "pred_score": result.scores[0] if result.scores else 0.0}
                 for item, result in zip(items, results)]]

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("s2s.serve").joinpath("page.html").read_text(encoding="utf-8")

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error a client causes is JSON ``{"error": one line}`` with a 4xx status, the
    framework's own (unknown path or method, an unreadable body) too."""
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(error)}, status_code=422)

    @app.exception_handler(S2SError)
    async def s2s_error(request: Request, error: S2SError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": _http_message(request, error)},
                            status_code=error.status_code, headers=error.headers)


def _http_message(request: Request, error: StarletteHTTPException) -> str:
    """The one-line error of what the framework refuses before s2s sees the request."""
    where = f"{request.method} {request.url.path}"
    if error.status_code == 404:
        return (f"{where}: no such path; s2s serves POST /translate, POST "
                "/translator/translate, GET /info, GET /health and the page at GET /")
    if error.status_code == 405:
        headers = {name.lower(): value for name, value in (error.headers or {}).items()}
        allowed = headers.get("allow", "")
        return f"{where}: method not allowed" + (f"; use {allowed}" if allowed else "")
    if error.status_code == 400:
        return ("body: not readable as JSON (not UTF-8, malformed, or nested too deeply); send "
                'one JSON object such as {"text": "..."}')
    return f"{where}: {error.detail}"


def _model_info(translator: Translator) -> dict[str, Any]:
    loaded = translator.loaded
    config = loaded.config
    metric, best = config.train.early_stopping_metric, loaded.best_score
    ensemble = [{"checkpoint": member.path.stem if member.path else None, "step": member.step}
                for member in translator.members]
    return {
        "src_lang": config.data.src_lang, "tgt_lang": config.data.tgt_lang,
        # the models decoding together (one unless an ensemble), with their weights
        "ensemble": {"models": ensemble, "weights": translator.weights,
                     "combine": translator.decode.ensemble_combine} if len(ensemble) > 1
        else None,
        "model": config_to_dict(config.model),
        "vocab_sizes": {"src": len(loaded.src_tokenizer), "tgt": len(loaded.tgt_tokenizer)},
        # its name (best, last, avg, step-N), not where it lies on the server's disk
        "checkpoint": loaded.path.stem if loaded.path else None,
        "checkpoint_step": loaded.step,
        "decode": config_to_dict(translator.decode),
        # the checkpoint keeps the best score negated for loss (higher is better there)
        "validation": {"metric": metric, "best": None if best is None else (
            -best if metric == "loss" else best)},
    }


def _checked_request(request: TranslateRequest, batcher: Batcher, defaults: DecodeConfig,
                     limits: Limits) -> tuple[list[str], RequestOptions, list[LineTerms]]:
    """A /translate request's lines, options and terms, each checked (a 4xx otherwise)."""
    lines = [request.text] if isinstance(request.text, str) else request.text
    options = _options(request, defaults, limits)
    lines = _checked_lines(lines, limits)
    terms = _terms(request, len(lines))
    if options.decode.sampling and any(t.constraints for t in terms):
        raise BadRequest("constraints: they need beam search; sampling cannot keep them")
    checker = batcher.translator_for(options)
    for number, (line, line_terms) in enumerate(zip(lines, terms), 1):
        checker.check_terms(line, line_terms, number)  # a TermsError is a 400
    return lines, options, terms


def _options(request: TranslateRequest, defaults: DecodeConfig, limits: Limits
             ) -> RequestOptions:
    """The request's decode settings: the server's, changed by the request's fields and
    checked by the config's rules (``s2s.config.changed_decode``), within the server's
    limits."""
    sampling = {"temperature": request.temperature, "top_k": request.top_k,
                "top_p": request.top_p, "seed": request.seed}
    if not request.sampling:
        named = [name for name, value in sampling.items() if value is not None]
        if named:
            raise BadRequest(f"{named[0]}: applies to sampling only; add \"sampling\": true")
    elif request.beam not in (None, 1):
        raise BadRequest(f"beam: sampling draws one token at a time, not a beam of "
                         f"{request.beam}; leave beam out and ask for several samples with "
                         "nbest")
    if request.top_k is not None and request.top_k < 1:  # 0, "no cut", is the server's to set
        raise BadRequest(f"top_k: must be at least 1, got {request.top_k}")
    beam = 1 if request.sampling else defaults.beam_size if request.beam is None else request.beam
    if not 1 <= beam <= limits.max_beam:
        raise BadRequest(f"beam: {beam} is out of range; choose 1 to {limits.max_beam}")
    nbest = 1 if request.nbest is None else request.nbest
    most = limits.max_beam if request.sampling else beam
    if not 1 <= nbest <= most:
        raise BadRequest(f"nbest: {nbest} is out of range; choose 1 to "
                         + (f"{most} samples" if request.sampling else f"the beam size ({most})"))
    given = {"beam_size": beam, "nbest": nbest, "sampling": request.sampling, **sampling}
    names = {"beam_size": "beam"}
    try:
        decode = changed_decode(defaults, [
            Override(f"decode.{key}", value, names.get(key, key))
            for key, value in given.items() if value is not None])
    except ConfigError as error:
        field, _, problem = str(error).splitlines()[0].partition(": ")
        raise BadRequest(f"{field}: {problem.partition(': ')[2]}") from None
    alignment = request.alignment
    mode = "hard" if alignment is True else "none" if alignment is False else alignment
    return RequestOptions(decode, mode)


def _terms(request: TranslateRequest, count: int) -> list[LineTerms]:
    """Each line's prefix and constraints from the request (one for all lines, or one per
    line)."""
    prefixes: list[str] = [request.prefix or ""] * count if not isinstance(
        request.prefix, list) else request.prefix
    given = request.constraints or []
    per_line = bool(given) and isinstance(given[0], list)
    if isinstance(request.text, str) and (isinstance(request.prefix, list) or per_line):
        raise BadRequest("prefix, constraints: for one text give a string and a list of "
                         "strings; lists per line go with a list of texts")
    if len(prefixes) != count:
        raise BadRequest(f"prefix: {len(prefixes)} prefixes for {count} lines; give one per "
                         "line or one string for all")
    phrases = list(given) if per_line else [given] * count
    if len(phrases) != count:
        raise BadRequest(f"constraints: {len(phrases)} lists for {count} lines; give one per "
                         "line or one list for all")
    return [LineTerms(_CONTROL.sub(" ", prefix), tuple(_CONTROL.sub(" ", p) for p in of_line))
            for prefix, of_line in zip(prefixes, phrases)]


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


def _response(results: list[TranslationResult], options: RequestOptions, *, single: bool
              ) -> dict[str, Any]:
    """N lines in, N translations out; with n-best, a list of hypotheses per line."""
    def per_line(values: list[Any], empty: Any = "") -> Any:
        return values if options.decode.nbest > 1 else (values[0] if values else empty)

    translations = [per_line(r.texts) for r in results]
    scores = [per_line(r.scores) if r.scores else (0.0 if options.decode.nbest == 1 else [])
              for r in results]
    body: dict[str, Any] = {"translations": translations, "scores": scores}
    if options.alignment != "none":
        empty = "" if options.alignment == "hard" else []
        body["alignments"] = [per_line([alignment_value(a, options.alignment)
                                        for a in (r.alignments or [])], empty)
                              for r in results]
    if single:
        body = {key: value[0] for key, value in body.items()}
    return body


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
