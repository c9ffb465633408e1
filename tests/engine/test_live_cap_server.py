"""The main job (``arctic-serve serve``) with n-gram speculation: the live speculation cap and the
admin API against a real vLLM server and the real SmolLM2 model.

One server serves the whole module (an engine start costs ~1 min on 2 cores); each test sets the
cap it needs first. Greedy outputs are compared with vanilla vLLM without speculation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.engine.prompts import MAX_TOKENS, PROMPTS
from tests.engine.server import Server, metric_sum, serve

pytestmark = pytest.mark.engine

DRAFTS = "vllm:spec_decode_num_drafts_total"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Iterator[Server]:
    with serve(
        tmp_path_factory.mktemp("serve"), "--speculation", "ngram", "--num-speculative-tokens", "3"
    ) as srv:
        yield srv


def set_cap(server: Server, soft: int | None, hard: int | None) -> None:
    status, body = server.request("PUT", "/arctic/v1/speculation", {"soft_cap": soft, "hard_cap": hard})
    assert status == 200, body
    assert (body["soft_cap"], body["hard_cap"]) == (soft, hard)
    assert [(w["speculation"]["soft_cap"], w["speculation"]["hard_cap"]) for w in body["workers"]] == [
        (soft, hard)
    ]


def run_batch(server: Server) -> list[str]:
    """All prompts at once, as concurrent requests (so several requests run in each step)."""
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(lambda p: server.complete(p, MAX_TOKENS), PROMPTS))


def fresh_metrics(server: Server, after: float) -> dict[str, float]:
    """/metrics once the arctic_* snapshot is newer than ``after`` (it is refreshed every second)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = server.metrics()
        if samples.get("arctic_state_timestamp_seconds", 0.0) > after:
            return samples
        time.sleep(0.3)
    raise AssertionError("arctic_* metrics were not refreshed within 30 s")


def phase(server: Server) -> tuple[list[str], dict[str, float]]:
    """Run the batch; return the outputs and how much each counter grew meanwhile."""
    before = fresh_metrics(server, time.time())
    texts = run_batch(server)
    after = fresh_metrics(server, time.time())
    keys = {
        "drafts": (DRAFTS, {}),
        "drafting_on": ("arctic_speculation_drafting_steps_total", {"drafting": "on"}),
        "open": ("arctic_speculation_steps_total", {"mode": "open"}),
        "soft_capped": ("arctic_speculation_steps_total", {"mode": "soft_capped"}),
        "hard_capped": ("arctic_speculation_steps_total", {"mode": "hard_capped"}),
        "drafted": ("arctic_speculation_request_steps_total", {"outcome": "drafted"}),
    }
    delta = {k: metric_sum(after, n, **lb) - metric_sum(before, n, **lb) for k, (n, lb) in keys.items()}
    delta["soft_cap"], delta["hard_cap"] = (
        after["arctic_speculation_soft_cap"],
        after["arctic_speculation_hard_cap"],
    )
    return texts, delta


def test_main_job_serves_the_real_model(server: Server) -> None:
    status, body = server.request(
        "POST",
        "/v1/chat/completions",
        {
            "model": "smollm2-135m-instruct",
            "temperature": 0,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        },
        token=None,
    )
    assert status == 200, body
    assert "Paris" in body["choices"][0]["message"]["content"]
    banner = server.log.read_text()
    assert f"{server.admin_base}/arctic/v1/speculation" in banner
    assert f"{server.base}/v1/chat/completions" in banner


def test_admin_api_answers_on_its_own_port_only(server: Server) -> None:
    for path in ("/arctic/v1/speculation", "/arctic/v1/parallel"):
        status, _ = server.request("GET", path, base=server.admin_base)
        assert status == 200, path
        status, body = server.request("GET", path, base=server.base)
        assert (status, body) == (404, {"detail": "Not Found"}), path
    status, _ = server.request("PUT", "/arctic/v1/speculation", {"soft_cap": 1}, base=server.base)
    assert status == 404  # vLLM's app has no such route, whatever the method
    status, _ = server.request("GET", "/metrics", base=server.admin_base, token=None)
    assert status == 404  # the admin listener serves the admin API and nothing else


def test_live_cap_stops_and_resumes_drafting(server: Server, vanilla: dict[str, Any]) -> None:
    set_cap(server, None, None)
    texts, open_phase = phase(server)
    assert texts == vanilla["texts"]
    assert open_phase["drafts"] > 0 and open_phase["drafting_on"] > 0 and open_phase["open"] > 0
    assert open_phase["soft_cap"] == float("inf") and open_phase["hard_cap"] == float("inf")

    set_cap(server, None, 1)  # one running request is already too many: nobody drafts
    texts, capped = phase(server)
    assert texts == vanilla["texts"]
    assert capped["drafts"] == 0, "vLLM still verified drafts under a hard cap of 1"
    assert capped["drafting_on"] == 0 and capped["drafted"] == 0
    assert capped["hard_capped"] > 0 and capped["hard_cap"] == 1.0

    set_cap(server, 2, None)  # up to 2 requests draft, the others wait their turn
    texts, resumed = phase(server)
    assert texts == vanilla["texts"]
    assert resumed["drafts"] > 0 and resumed["drafting_on"] > 0
    assert resumed["soft_capped"] > 0 and resumed["soft_cap"] == 2.0 and resumed["hard_cap"] == float("inf")


def test_cap_changes_while_requests_run_lose_nothing(server: Server, vanilla: dict[str, Any]) -> None:
    set_cap(server, None, None)
    stop = threading.Event()
    changes: list[int] = []

    def flip() -> None:
        caps = [(None, 1), (2, None), (0, 0), (None, None)]
        i = 0
        while not stop.is_set():
            soft, hard = caps[i % len(caps)]
            status, _ = server.request("PUT", "/arctic/v1/speculation", {"soft_cap": soft, "hard_cap": hard})
            changes.append(status)
            i += 1
            time.sleep(0.2)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        texts = run_batch(server)
    finally:
        stop.set()
        flipper.join()
    assert texts == vanilla["texts"]
    assert len(changes) >= 3 and set(changes) == {200}


def test_admin_api_requires_the_token(server: Server) -> None:
    for token, why in ((None, "missing"), ("wrong-token", "wrong")):
        status, body = server.request("GET", "/arctic/v1/speculation", token=token)
        assert status == 401, (why, body)
    status, body = server.request("PUT", "/arctic/v1/speculation", {"soft_cap": 1}, token=None)
    assert status == 401
    status, body = server.request("GET", "/arctic/v1/speculation")
    assert status == 200 and body["method"] == "ngram" and body["num_speculative_tokens"] == 3


@pytest.mark.parametrize(
    ("body", "raw", "field", "words"),
    [
        ({"soft_cap": -1}, None, "soft_cap", ">= 0"),
        ({"hard_cap": 2.5}, None, "hard_cap", "whole number"),
        ({"hard_cap": "8"}, None, "hard_cap", "whole number"),
        ({"soft_cap": True}, None, "soft_cap", "whole number"),
        ({"soft_cap": 8, "hard_cap": 4}, None, "hard_cap", ">= soft_cap"),
        ({"soft_cap": 1, "hard_capp": 4}, None, "hard_capp", "unknown field"),
        (None, b"{not json", None, "invalid JSON"),
        (None, b"[1, 2]", None, "JSON object"),
    ],
)
def test_bad_cap_requests_are_rejected_and_change_nothing(
    server: Server, vanilla: dict[str, Any], body: Any, raw: bytes | None, field: str | None, words: str
) -> None:
    set_cap(server, 3, 9)
    status, reply = server.request("PUT", "/arctic/v1/speculation", body, raw=raw)
    assert status == 422, reply
    problems = reply["detail"]
    assert any(words in p["msg"] for p in problems), problems
    if field is not None:
        assert ["body", field] in [p["loc"] for p in problems]
    status, state = server.request("GET", "/arctic/v1/speculation")
    assert (state["soft_cap"], state["hard_cap"]) == (3, 9)
    assert server.complete(PROMPTS[1], MAX_TOKENS) == vanilla["texts"][1]


def test_patch_changes_only_the_given_field(server: Server) -> None:
    set_cap(server, 3, 9)
    status, body = server.request("PATCH", "/arctic/v1/speculation", {"hard_cap": 12})
    assert status == 200 and (body["soft_cap"], body["hard_cap"]) == (3, 12)
    status, body = server.request("PATCH", "/arctic/v1/speculation", {"hard_cap": 2})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "hard_cap"]
