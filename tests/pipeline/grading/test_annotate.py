"""`rnj grade annotate` against a loopback chat-completions server written here (127.0.0.1 only)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from pipeline.grading.annotate import (
    RUBRIC,
    AnnotateSettings,
    annotate,
    parse_answer,
    stratified_sample,
)
from pipeline.grading.fit import load_labels
from rnj.grade_cmd import grade_group


class Teacher:
    """A fake OpenAI-compatible server: scores a document by its length; fails on purpose when told to."""

    def __init__(self, fail_first: dict[str, list[int]] | None = None) -> None:
        self.fail_first = fail_first or {}
        """Document text prefix -> HTTP statuses to answer before the real answer."""
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()

    def answer(self, body: dict) -> tuple[int, dict]:
        text = body["messages"][1]["content"]
        with self.lock:
            self.requests.append(body)
            for prefix, statuses in self.fail_first.items():
                if text.startswith(prefix) and statuses:
                    return statuses.pop(0), {"error": "busy"}
        depth = min(5, 1 + len(text) // 40)
        content = f'Sure. {{"reasoning_depth": {depth}, "education_level": {min(5, depth + 1)}}}'
        return 200, {"choices": [{"message": {"role": "assistant", "content": content}}]}


@pytest.fixture
def server():
    servers = []

    def start(teacher: Teacher) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                assert self.path == "/v1/chat/completions"
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with teacher.lock:
                    teacher.in_flight += 1
                    teacher.max_in_flight = max(teacher.max_in_flight, teacher.in_flight)
                teacher.release.wait(5)
                status, reply = teacher.answer(body)
                with teacher.lock:
                    teacher.in_flight -= 1
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0.01")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def documents(n: int = 12) -> list[dict]:
    return [{"id": f"d{i}", "text": f"doc{i} " + "word " * (i * 8), "domain": ("math", "code", "general")[i % 3]}
            for i in range(n)]


def settings(endpoint: str, **kw) -> AnnotateSettings:
    return AnnotateSettings(endpoint=endpoint, model="teacher-1", per_domain=3, backoff=0.001, max_backoff=0.01,
                            timeout=10, **kw)


def test_sample_is_stratified_and_deterministic():
    docs = documents(30)
    sample = stratified_sample(docs, 4, seed=0)
    assert [d["domain"] for d in sample] == ["code"] * 4 + ["general"] * 4 + ["math"] * 4
    assert sample == stratified_sample(list(reversed(docs)), 4, seed=0)
    assert sample != stratified_sample(docs, 4, seed=1)


def test_answers_are_parsed_strictly():
    assert parse_answer('{"reasoning_depth": 2, "education_level": 4}') == {"reasoning_depth": 2,
                                                                            "education_level": 4}
    with pytest.raises(ValueError, match="education_level"):
        parse_answer('{"reasoning_depth": 2, "education_level": 9}')
    with pytest.raises(ValueError, match="no JSON"):
        parse_answer("I think it is hard.")


def test_concurrent_labels_a_fit_can_read(server, tmp_path):
    teacher = Teacher()
    teacher.release.clear()  # hold the first answers until several requests are in flight
    endpoint = server(teacher)
    threading.Timer(0.3, teacher.release.set).start()
    out, cache = tmp_path / "labels.jsonl", tmp_path / "cache.jsonl"
    stats = annotate(documents(), settings(endpoint, concurrency=4), str(out), str(cache))
    assert (stats.sampled, stats.labelled, stats.failed, stats.requests) == (9, 9, 0, 9)
    assert teacher.max_in_flight >= 2
    assert teacher.requests[0]["messages"][0]["content"] == RUBRIC and teacher.requests[0]["model"] == "teacher-1"
    examples, _ = load_labels([str(out)])
    assert len(examples) == 9 and {e.source for e in examples} == {"teacher:teacher-1"}
    first = json.loads(out.read_text().splitlines()[0])
    assert first["level"] == (first["reasoning_depth"] + first["education_level"]) / 2


def test_retries_with_backoff_on_429_and_500(server, tmp_path):
    teacher = Teacher(fail_first={"doc0 ": [429, 500], "doc1 ": [503]})
    endpoint = server(teacher)
    slept: list[float] = []
    stats = annotate(documents(), settings(endpoint, concurrency=1), str(tmp_path / "l.jsonl"),
                     str(tmp_path / "c.jsonl"), sleep=slept.append)
    assert stats.labelled == 9 and stats.failed == 0 and stats.requests == 12
    assert stats.errors == {"http 429": 1, "http 500": 1, "http 503": 1}
    # doc0: 429 with Retry-After 0.01 (honoured, within max_backoff), then 500 on the 2nd try (0.001 x 2);
    # doc1: 503 on the 1st try (0.001)
    assert sorted(slept) == [0.001, 0.002, 0.01]
    gives_up = Teacher(fail_first={"doc0 ": [500] * 10})
    stats = annotate(documents(3), settings(server(gives_up), retries=2), str(tmp_path / "g.jsonl"),
                     str(tmp_path / "g.cache.jsonl"), sleep=lambda s: None)
    assert stats.failed == 1 and stats.labelled == 2


def test_budget_stops_and_the_cache_resumes(server, tmp_path):
    teacher = Teacher()
    endpoint = server(teacher)
    out, cache = tmp_path / "labels.jsonl", tmp_path / "cache.jsonl"
    first = annotate(documents(), settings(endpoint, max_requests=4, concurrency=2), str(out), str(cache))
    assert (first.labelled, first.unanswered, first.requests) == (4, 5, 4)
    assert len(out.read_text().splitlines()) == 4
    second = annotate(documents(), settings(endpoint, max_requests=100), str(out), str(cache))
    assert (second.cached, second.labelled, second.requests) == (4, 5, 5)
    assert len(teacher.requests) == 9  # nothing was asked twice
    assert len(out.read_text().splitlines()) == 9


def test_cli_annotates_a_jsonl_file(server, tmp_path):
    endpoint = server(Teacher())
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in documents()))
    out = tmp_path / "teacher.jsonl"
    result = CliRunner().invoke(grade_group, ["annotate", str(source), "--endpoint", endpoint, "--model", "teacher-1",
                                              "--out", str(out), "--per-domain", "2"])
    assert result.exit_code == 0, result.output
    assert "6 labelled now" in result.output and (tmp_path / "teacher.cache.jsonl").is_file()
    assert len(out.read_text().splitlines()) == 6
