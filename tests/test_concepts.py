"""Concept banks on disk and the OpenAI-compatible client against a local fake server."""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from texter_jax.concepts import banks
from texter_jax.concepts.llm import (
    ChatClient,
    ConceptGenerator,
    LLMConfig,
    LLMError,
    llm_configured,
    parse_concepts,
)


# ----------------------------------------------------------------------------- banks
def test_generic_bank_is_large_and_clean():
    g = banks.generic_bank()
    assert len(g) >= 300
    assert len(g) == len(banks.dedupe_exact(g))
    assert all(1 <= len(c.split()) <= 3 for c in g)


def test_release_layout_json_and_text_files(tmp_path):
    root = tmp_path / "Concepts"
    banks.save_concepts(banks.class_bank_path(root, "lemur"), ["long tail", "gray fur"])
    assert (root / "per_class" / "lemur" / "concepts_100.json").is_file()
    p = banks.image_bank_path(root, "img_01.JPEG", "lemur")
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps([{"concept": "ringed tail"}, "trees"]))
    assert banks.load_image_bank(root, "img_01.JPEG", "lemur") == ["ringed tail", "trees"]
    assert banks.load_class_bank(root, "lemur") == ["long tail", "gray fur"]
    assert banks.load_class_bank(root, "koala") is None
    txt = tmp_path / "mine.txt"
    txt.write_text("# my bank\nwet rocks\n\n  moss \n")
    assert banks.load_concepts(txt) == ["wet rocks", "moss"]
    with pytest.raises(banks.ConceptBankError):
        banks.load_concepts(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(banks.ConceptBankError):
        banks.load_concepts(bad)


def test_dedupe_and_merge_follow_the_release():
    assert banks.dedupe_similar(["Long tail", "long tails", "LONG TAIL", "fur"]) == [
        "Long tail", "fur"]
    # threshold is strict '>': ratio of "abcd" / "abce" is 0.75 -> both kept at 0.75
    assert banks.similarity("abcd", "abce") == pytest.approx(0.75)
    assert banks.dedupe_similar(["abcd", "abce"], threshold=0.75) == ["abcd", "abce"]
    merged = banks.merge_banks(["Trees", "lemur face", "tail"], ["trees", "branches"],
                               exclude_names=["lemur", ""])
    assert merged == ["Trees", "tail", "branches"]


def test_resolve_bank_sources(tmp_path):
    generic = banks.resolve_bank("dog")
    assert len(generic) >= 300
    banks.save_concepts(banks.class_bank_path(tmp_path, "dog"), ["wet nose", "dog collar"])
    assert banks.resolve_bank("dog", root=tmp_path) == ["wet nose"]  # class name filtered
    both = banks.resolve_bank("dog", root=tmp_path, use_generic=True)
    assert both[0] == "wet nose" and len(both) > 300
    with pytest.raises(banks.ConceptBankError):
        banks.resolve_bank("cat", root=tmp_path, use_generic=False)


def test_parse_concepts():
    reply = ("Here are features:\n- Long tail\n- 2. the gray fur\n* trees and branches\n"
             "- a very long sentence that is not a concept\n- \"ringed pattern\".")
    assert parse_concepts(reply) == ["long tail", "gray fur", "trees", "branches",
                                     "ringed pattern"]


# ----------------------------------------------------------------------------- fake server
class _Fake:
    def __init__(self, replies, fail_first=1, slow_first=0):
        self.replies = list(replies)
        self.fail_first = fail_first
        self.slow_first = slow_first  # first N requests answer after 1 s (client timeout)
        self.requests = []  # (headers, json) of every request, failures included


def _serve(fake):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep pytest output clean
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append((dict(self.headers), body))
            if self.path != "/v1/chat/completions":
                self.send_response(404)
                self.end_headers()
                return
            if fake.slow_first > 0:
                fake.slow_first -= 1
                time.sleep(1.0)  # the client has given up by now: answer nothing
                return
            if fake.fail_first > 0:
                fake.fail_first -= 1
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"transient")
                return
            if body.get("model") == "bad-model":
                self.send_response(400)
                self.end_headers()
                self.wfile.write(b'{"error": "unknown model"}')
                return
            text = fake.replies.pop(0) if fake.replies else "- nothing new"
            out = json.dumps({"choices": [{"message": {"role": "assistant",
                                                       "content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def fake_server():
    servers = []

    def make(replies, fail_first=1, slow_first=0, timeout=5.0):
        fake = _Fake(replies, fail_first, slow_first)
        server = _serve(fake)
        servers.append(server)
        cfg = LLMConfig(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                        model="test-llm", vlm_model="test-vlm", api_key="test-key",
                        timeout=timeout, max_retries=3, backoff=0.0)
        return fake, ChatClient(cfg, sleep=lambda s: None)

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def test_class_bank_with_retry_dedupe_and_cache(tmp_path, fake_server):
    fake, client = fake_server([
        "- long tail\n- long tails\n- gray fur\n- lemur face\n- large eyes",
        "- long tail\n- trees\n- branches; forest\n- ringed pattern",
    ])
    gen = ConceptGenerator(tmp_path, client=client)
    got = gen.class_concepts("lemur", n=6)
    # 500 first (retried), then two rounds; near-duplicate and class-name items dropped
    assert got == ["long tail", "gray fur", "large eyes", "trees", "branches", "forest"]
    assert len(fake.requests) == 3 and client.requests == 3
    headers, body = fake.requests[-1]
    assert headers["Authorization"] == "Bearer test-key" and body["model"] == "test-llm"
    prompt = body["messages"][0]["content"]
    assert "lemur" in prompt and "Already listed" in prompt and "- gray fur" in prompt
    path = tmp_path / "per_class" / "lemur" / "concepts_6.json"
    assert json.loads(path.read_text()) == got
    # second call: served from the cache, no request (even with a fresh generator)
    again = ConceptGenerator(tmp_path, client=client).class_concepts("lemur", n=6)
    assert again == got and len(fake.requests) == 3


def test_image_bank_sends_the_image_and_merges(tmp_path, fake_server):
    fake, client = fake_server(["- long tail\n- gray fur", "- orange eyes\n- gray fur\n- rock"],
                               fail_first=0)
    gen = ConceptGenerator(tmp_path, client=client, max_stalls=1)
    image = np.linspace(0, 1, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)
    bank = gen.image_bank(image, "img_7.JPEG", "lemur", n_llm=2, n_vlm=3)
    assert bank == ["long tail", "gray fur", "orange eyes", "rock"]
    _, body = fake.requests[-1]
    assert body["model"] == "test-vlm"
    parts = body["messages"][0]["content"]
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1])[:2] == b"\xff\xd8"  # a JPEG
    assert (tmp_path / "per_image" / "img_7.JPEG" / "lemur" / "concepts_all.json").is_file()
    assert (tmp_path / "per_image" / "img_7.JPEG" / "lemur" / "concepts_vlm_3.json").is_file()
    n = len(fake.requests)
    assert gen.image_bank(image, "img_7.JPEG", "lemur", n_llm=2, n_vlm=3) == bank
    assert len(fake.requests) == n


def test_errors_and_gave_up(fake_server):
    fake, client = fake_server([], fail_first=10)
    with pytest.raises(LLMError, match="4 tries"):
        client.chat([{"role": "user", "content": "hi"}])
    assert len(fake.requests) == 4  # 1 try + 3 retries
    fake2, client2 = fake_server([], fail_first=0)
    with pytest.raises(LLMError, match="HTTP 400"):
        client2.chat([{"role": "user", "content": "hi"}], model="bad-model")
    assert len(fake2.requests) == 1  # 4xx other than 429 is not retried


def test_timeout_is_retried(fake_server):
    fake, client = fake_server(["- wet rocks"], fail_first=0, slow_first=1, timeout=0.3)
    assert client.chat([{"role": "user", "content": "hi"}]) == "- wet rocks"
    assert client.requests == 2


def test_config_from_env():
    env = {"TEXTER_LLM_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "k1"}
    cfg = LLMConfig.from_env(env, model="m")
    assert (cfg.base_url, cfg.api_key, cfg.model, cfg.image_model) == (
        "http://127.0.0.1:9/v1", "k1", "m", "m")
    assert LLMConfig.from_env({"TEXTER_LLM_API_KEY": "k2", "OPENAI_API_KEY": "k1"}).api_key == "k2"
    assert llm_configured(env) and not llm_configured({})
