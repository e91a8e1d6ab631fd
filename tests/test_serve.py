"""`s2s serve`: the JSON API, dynamic batching, clean stops and the web page."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from s2s.config import load_config
from s2s.serve.app import Limits, create_app
from s2s.serve.batcher import Batcher, RequestOptions
from s2s.translation.translator import Translator, load_translator

LINES = ["The old dog sees a small cat.", "", "A happy woman buys the new car.", "The dog."]


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return load_translator(load_config(trained_run).run_dir, "best", device="cpu")


@pytest.fixture(scope="module")
def client(translator: Translator):
    app = create_app(translator, limits=Limits(max_lines=8, max_chars=500, max_beam=8))
    with TestClient(app) as test_client:
        yield test_client


def _expected(translator: Translator, lines: list[str], beam: int, nbest: int = 1):
    return translator.with_decode(replace(translator.decode, beam_size=beam, nbest=nbest)
                                  ).translate(lines)


def test_health_and_info(client: TestClient, translator: Translator) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert (info["src_lang"], info["tgt_lang"]) == ("en", "de")
    assert info["checkpoint_step"] == translator.loaded.step == 150
    assert info["decode"]["beam_size"] == 3 and info["model"]["decoder_hidden"] == 64
    assert info["validation"]["metric"] == "bleu"
    assert info["validation"]["best"] == pytest.approx(translator.loaded.best_score)
    assert info["checkpoint"] == "best"  # named, not where it lies on the server's disk


@pytest.mark.parametrize("method,path,body,status,message", [
    ("POST", "/translate", b'{"text": "\xff\xfe"}', 400, "body: not readable as JSON"),
    ("POST", "/translate", b"[" * 100_000 + b"]" * 100_000, 400, "body: not readable as JSON"),
    ("GET", "/nope", None, 404, "GET /nope: no such path; s2s serves POST /translate"),
    ("GET", "/translate", None, 405, "GET /translate: method not allowed; use POST"),
    ("DELETE", "/info", None, 405, "DELETE /info: method not allowed; use GET"),
])
def test_what_the_framework_refuses_gets_the_same_error_shape(
        client: TestClient, method: str, path: str, body: bytes | None, status: int,
        message: str) -> None:
    response = client.request(method, path, content=body,
                              headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert list(response.json()) == ["error"] and response.json()["error"].startswith(message)


def test_n_lines_in_n_translations_out_as_translate_gives_them(
        client: TestClient, translator: Translator) -> None:
    body = client.post("/translate", json={"text": LINES}).json()
    expected = _expected(translator, LINES, beam=3)
    assert body["translations"] == [result.text for result in expected]
    assert body["translations"][1] == "" and len(body["scores"]) == len(LINES)
    assert body["scores"][0] == pytest.approx(expected[0].scores[0], abs=1e-4)
    one = client.post("/translate", json={"text": LINES[0], "beam": 1}).json()
    assert one["translations"] == _expected(translator, LINES[:1], beam=1)[0].text


def test_nbest_and_alignments(client: TestClient, translator: Translator) -> None:
    body = client.post("/translate", json={"text": LINES, "beam": 4, "nbest": 2,
                                           "alignment": "hard"}).json()
    expected = _expected(translator, LINES, beam=4, nbest=2)
    assert body["translations"] == [result.texts for result in expected]
    assert [len(links) for links in body["alignments"]] == [len(r.texts) for r in expected]
    links = body["alignments"][0][0].split()
    assert len(links) == len(body["translations"][0][0].split())
    soft = client.post("/translate", json={"text": "The dog.", "alignment": "soft"}).json()
    assert len(soft["alignments"]) == len(soft["translations"].split())
    assert all(len(row) == 2 for row in soft["alignments"])  # "The", "dog."


@pytest.mark.parametrize("body,status,message", [
    ('{"text": ', 422, "not valid JSON"),
    ('{"text": 5}', 422, "text: must be a string or a list of strings"),
    ('{"text": ["a", 5]}', 422, "text: must be a string or a list of strings"),
    ('{"txt": "a"}', 422, "text: Field required"),
    ('{"text": "a", "colour": 1}', 422, "colour: Extra inputs are not permitted"),
    ('{"text": "a", "beam": 0}', 400, "beam: 0 is out of range; choose 1 to 8"),
    ('{"text": "a", "beam": 9}', 400, "beam: 9 is out of range"),
    ('{"text": "a", "beam": "5"}', 422, "beam: Input should be a valid integer"),
    ('{"text": "a", "beam": 2, "nbest": 3}', 400, "nbest: 3 is out of range"),
    ('{"text": "a", "alignment": "fuzzy"}', 422, "alignment"),
    (json.dumps({"text": ["a"] * 9}), 413, "9 lines in one request; at most 8"),
    (json.dumps({"text": "a" * 501}), 413, "501 characters in one request; at most 500"),
    ("[1, 2]", 422, "body: expected a JSON object"),
    ('{"text": "A man.", "constraints": ["Mann", " "]}', 400, "line 1: constraint 2 is empty"),
    ('{"text": ["A man.", "A dog."], "constraints": [["a"], ["b", "c", "d", "e", "f", "g"]]}',
     400, "line 2: 6 constraints, more than the beam holds"),
    (json.dumps({"text": "A man.", "prefix": "Hund " * 30}), 400,
     "line 1: the prefix and constraints take"),
    ('{"text": ["a", "b"], "prefix": ["x"]}', 400, "prefix: 1 prefixes for 2 lines"),
    ('{"text": ["a", "b"], "constraints": [["x"]]}', 400, "constraints: 1 lists for 2 lines"),
    ('{"text": "a", "prefix": ["x"]}', 400, "lists per line go with a list of texts"),
    ('{"text": "a", "constraints": [1]}', 422, "constraints"),
])
def test_bad_requests_get_a_json_error_and_a_4xx(client: TestClient, body: str, status: int,
                                                 message: str) -> None:
    response = client.post("/translate", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_lone_surrogates_and_control_characters_are_translated_not_refused(
        client: TestClient, translator: Translator) -> None:
    body = '{"text": ["The dog\\ud800.", "The\\u0000 cat\\u0007.", "\\u001b[31m"]}'
    response = client.post("/translate", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    # a lone surrogate becomes U+FFFD, a control character a space
    made_harmless = ["The dog\ufffd.", "The  cat .", " [31m"]
    assert response.json()["translations"] == [
        result.text for result in _expected(translator, made_harmless, beam=3)]


def test_opennmt_clients_work_unchanged(client: TestClient, translator: Translator) -> None:
    response = client.post("/translator/translate",
                           json=[{"src": LINES[0], "id": 100}, {"src": LINES[3], "id": 100}])
    assert response.status_code == 200, response.text
    (results,) = response.json()
    expected = _expected(translator, [LINES[0], LINES[3]], beam=3)
    assert [r["tgt"] for r in results] == [e.text for e in expected]
    assert [r["src"] for r in results] == [LINES[0], LINES[3]]
    assert all(r["n_best"] == 1 and isinstance(r["pred_score"], float) for r in results)


def test_the_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/").text
    assert "<textarea" in page and "/translate" in page and "ctrlKey" in page
    assert "http://" not in page and "https://" not in page  # no CDN, no external fonts


# ------------------------------------------------------------- a real server on 127.0.0.1

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Server:
    """``serve`` in a thread on a free local port, stopped by the test."""

    def __init__(self, app) -> None:
        self.app, self.port = app, _free_port()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import uvicorn
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        import asyncio
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        import asyncio
        task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.02)
        self.ready.set()
        await task

    def __enter__(self) -> str:
        self.thread.start()
        assert self.ready.wait(30), "the server did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exception) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def test_concurrent_requests_are_batched_and_each_gets_its_own_lines(
        translator: Translator) -> None:
    app = create_app(translator, max_batch_sentences=64, max_wait_ms=300)
    words = ("dog", "woman", "man", "girl", "boy", "cat", "bird", "teacher")
    adjectives = ("old", "small", "happy", "new")
    requests = [[f"The {adjective} {word} sees a small cat.", "", f"A {word} buys the car."]
                for word in words for adjective in adjectives]  # 32 distinct requests
    with _Server(app) as url:
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(
                lambda lines: httpx.post(f"{url}/translate", json={"text": lines},
                                         timeout=60).json(), requests))
    for lines, answer in zip(requests, answers):
        assert answer["translations"] == [r.text for r in _expected(translator, lines, 3)]
    assert app.state.batcher.batches < len(requests)  # some requests shared a batch


@pytest.mark.parametrize("max_batch,sizes", [(64, [10]), (6, [6, 4])])
def test_requests_already_waiting_share_a_batch_without_any_wait(
        translator: Translator, max_batch: int, sizes: list[int]) -> None:
    """With max_wait_ms=0 a batch takes no time to gather, but still takes every request
    queued while the previous batch ran (else closed-loop clients get batches of one), up to
    max_batch_sentences; whole requests only."""
    batcher = Batcher(translator, max_batch_sentences=max_batch, max_wait_ms=0)
    batches: list[list[str]] = []

    def record(lines: list[str], options: RequestOptions, terms: object = None) -> list[str]:
        batches.append(lines)
        return [line.upper() for line in lines]

    batcher.translate_lines = record  # type: ignore[method-assign]
    options = RequestOptions(replace(translator.decode, beam_size=1, nbest=1))

    async def main() -> list[list[str]]:
        requests = [asyncio.create_task(batcher.translate([f"line {n}", f"more {n}"], options))
                    for n in range(5)]
        await asyncio.sleep(0)  # all five are queued before the batcher looks
        runner = asyncio.create_task(batcher.run())
        answers = await asyncio.gather(*requests)
        runner.cancel()
        return answers

    try:
        answers = asyncio.run(main())
    finally:
        batcher.close()
    assert answers == [[f"LINE {n}", f"MORE {n}"] for n in range(5)]
    assert [len(batch) for batch in batches] == sizes


def test_health_answers_while_a_batch_translates(translator: Translator) -> None:
    app = create_app(translator, max_wait_ms=0)
    batcher = app.state.batcher
    started, release = threading.Event(), threading.Event()
    real = batcher.translate_lines

    def held(lines, settings, terms=None):  # the batch waits, on the worker thread
        started.set()
        assert release.wait(30)
        return real(lines, settings, terms)

    batcher.translate_lines = held
    with _Server(app) as url, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{url}/translate", json={"text": "The dog."},
                              timeout=60)
        assert started.wait(30)
        assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
        assert not pending.done()  # the batch is still running
        release.set()
        assert pending.result().status_code == 200


@pytest.mark.slow
def test_serve_command_prints_its_url_and_stops_cleanly_on_sigterm(trained_run: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "s2s", "serve", str(trained_run), "--port", str(port),
         "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = process.stdout.readline()
        assert line.strip().endswith(f"at http://127.0.0.1:{port}/"), line
        answer = httpx.post(f"http://127.0.0.1:{port}/translate", json={"text": "The dog."},
                            timeout=60)
        assert answer.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr.read()
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_sigterm_during_load_lets_the_requests_in_flight_finish(trained_run: Path,
                                                                translator: Translator) -> None:
    port = _free_port()
    # a long batch window: the requests are still waiting in it when SIGTERM comes
    process = subprocess.Popen(
        [sys.executable, "-m", "s2s", "serve", str(trained_run), "--port", str(port),
         "--device", "cpu", "--max-wait-ms", "4000"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert "serving" in process.stdout.readline()
        lines = [f"The {word} sees a cat." for word in ("dog", "man", "woman", "boy") * 4]
        with ThreadPoolExecutor(len(lines)) as pool:
            pending = [pool.submit(httpx.post, f"http://127.0.0.1:{port}/translate",
                                   json={"text": line}, timeout=60) for line in lines]
            time.sleep(1.0)  # let them arrive; the batch closes after 4 s
            process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in pending]
        assert [answer.status_code for answer in answers] == [200] * len(lines)
        assert [answer.json()["translations"] for answer in answers] == [
            result.text for result in _expected(translator, lines, beam=3)]
        assert process.wait(60) == 0, process.stderr.read()
    finally:
        process.kill()
        process.wait()


# ------------------------------------------------------------------ a real browser

def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no chromium and chromedriver installed "
                    "(Debian: apt-get install chromium chromium-driver)")
def test_the_page_translates_in_a_real_browser(translator: Translator) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = _browser()  # type: ignore[misc]
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=driver_path)
    expected = _expected(translator, LINES[:1], beam=3)[0].text
    with _Server(create_app(translator)) as url:
        browser = webdriver.Chrome(options=options, service=service)
        try:
            browser.get(url + "/")
            box = browser.find_element(By.ID, "source")
            box.send_keys(LINES[0])
            browser.find_element(By.ID, "translate").click()
            WebDriverWait(browser, 30).until(
                lambda b: b.find_elements(By.CSS_SELECTOR, "#output li"))
            assert browser.find_element(By.CSS_SELECTOR, "#output li").text == expected
            assert browser.find_element(By.ID, "heatmap").size["width"] > 50  # drawn
            box.send_keys(Keys.ENTER, "The dog.", Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter
            WebDriverWait(browser, 30).until(
                lambda b: len(b.find_elements(By.CSS_SELECTOR, "#output li")) == 2)
            box.clear()
            browser.execute_script(
                "document.getElementById('source').value = 'x'.repeat(200000)")
            browser.find_element(By.ID, "translate").click()
            WebDriverWait(browser, 30).until(
                lambda b: b.find_element(By.ID, "error").text)
            assert "characters in one request" in browser.find_element(By.ID, "error").text
            # a prefix and a phrase for every line, from the fields under "Prefix and ..."
            browser.execute_script("document.getElementById('source').value = 'A man.'")
            browser.find_element(By.CSS_SELECTOR, "#terms summary").click()
            browser.find_element(By.ID, "prefix").send_keys("Ein ")
            browser.find_element(By.ID, "constraints").send_keys("Frau")
            browser.find_element(By.ID, "translate").click()
            WebDriverWait(browser, 30).until(lambda b: b.find_element(
                By.CSS_SELECTOR, "#output li").text.startswith("Ein "))
            text = browser.find_element(By.CSS_SELECTOR, "#output li").text
            assert "Frau" in text and browser.find_element(By.ID, "error").text == ""
        finally:
            browser.quit()


def test_prefix_and_constraints_as_translate_keeps_them(client: TestClient,
                                                        translator: Translator) -> None:
    from s2s.translation.terms import LineTerms
    body = {"text": ["The dog sees a cat.", "", "A man."], "prefix": ["Der Hund", "", "Ein "],
            "constraints": [["Katze"], [], ["Frau", "sieht"]], "beam": 4, "nbest": 2}
    response = client.post("/translate", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()["translations"]
    expected = _translator_with(translator, 4, 2).translate(body["text"], terms=[
        LineTerms(prefix, tuple(phrases)) for prefix, phrases in zip(body["prefix"],
                                                                      body["constraints"])])
    assert answer == [result.texts for result in expected]
    assert all(text.startswith("Der Hund") and "Katze" in text for text in answer[0])
    assert answer[1] == [] and all(text.startswith("Ein ") for text in answer[2])
    single = client.post("/translate", json={"text": "A man.", "prefix": "Ein ",
                                             "constraints": ["Frau"]}).json()
    assert single["translations"].startswith("Ein ") and "Frau" in single["translations"]


def _translator_with(translator: Translator, beam: int, nbest: int) -> Translator:
    return translator.with_decode(replace(translator.decode, beam_size=beam, nbest=nbest))


def test_sampling_requests_agree_with_translate(client: TestClient, trained_run: Path) -> None:
    from typer.testing import CliRunner

    from s2s.cli import app
    lines = ["The dog sees a cat.", "A man.", "The old woman has a small house."]
    response = client.post("/translate", json={"text": lines, "sampling": True, "nbest": 3,
                                               "top_p": 0.9, "seed": 4})
    assert response.status_code == 200, response.text
    result = CliRunner().invoke(app, ["translate", str(trained_run), "--sampling", "--nbest",
                                      "3", "--top-p", "0.9", "--seed", "4"],
                                input="".join(f"{line}\n" for line in lines))
    assert result.exit_code == 0, result.output
    expected = [line.split("\t")[0::2] for line in result.stdout.splitlines()]
    assert response.json()["translations"] == expected


@pytest.mark.parametrize("body,message", [
    ({"text": "a", "sampling": True, "beam": 4}, "beam: sampling draws one token at a time"),
    ({"text": "a", "sampling": True, "temperature": -1}, "temperature: must be greater than 0"),
    ({"text": "a", "sampling": True, "top_p": 1.5}, "top_p: must be at most 1.0, got 1.5"),
    ({"text": "a", "sampling": True, "seed": -1}, "seed: must be at least 0, got -1"),
    ({"text": "a", "sampling": True, "top_k": 0}, "top_k: must be at least 1"),
    ({"text": "a", "top_k": 5}, "top_k: applies to sampling only"),
    ({"text": "a", "sampling": True, "constraints": ["b"]}, "constraints: they need beam search"),
])
def test_bad_sampling_requests_get_a_400(client: TestClient, body: dict, message: str) -> None:
    response = client.post("/translate", json=body)
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_info_names_an_ensembles_models_without_paths(trained_run: Path) -> None:
    from s2s.translation.translator import ModelRef
    run_dir = load_config(trained_run).run_dir
    ensemble = load_translator(run_dir, "best", device="cpu",
                               ensemble=[ModelRef(run_dir, "last")], weights=[3.0, 1.0])
    with TestClient(create_app(ensemble)) as client:
        info = client.get("/info").json()
        answer = client.post("/translate", json={"text": "A man."}).json()
    assert [model["checkpoint"] for model in info["ensemble"]["models"]] == ["best", "last"]
    assert info["ensemble"]["weights"] == [3.0, 1.0] and info["ensemble"]["combine"] == "prob"
    assert str(run_dir) not in json.dumps(info)
    assert answer["translations"] == ensemble.translate(["A man."])[0].text


def test_a_fresh_seed_per_request_does_not_grow_the_server(client: TestClient,
                                                           translator: Translator) -> None:
    """The server keeps translators for the option sets sent last, not one per seed forever;
    a request whose translator was dropped gets the same translation when it comes again."""
    from s2s.serve.batcher import TRANSLATORS_KEPT
    body = {"text": "A man.", "sampling": True, "seed": 0}
    first = client.post("/translate", json=body).json()["translations"]
    batcher = Batcher(translator)
    for seed in range(2000):
        options = RequestOptions(replace(translator.decode, beam_size=1, nbest=1,
                                         sampling=True, seed=seed))
        batcher.translator_for(options)
        assert batcher.translators_kept <= TRANSLATORS_KEPT
    for seed in range(1, 3 * TRANSLATORS_KEPT):  # through the app: seed 0's translator goes
        response = client.post("/translate", json={**body, "seed": seed})
        assert response.status_code == 200
    assert client.post("/translate", json=body).json()["translations"] == first
