"""The served champion under load: 50 concurrent clients, valid and invalid bodies mixed.

``mlflow models serve`` on 127.0.0.1 serves the toy tagger; every body of
:data:`benchmarks.load_serving.BODIES` must get its status (200, 400 naming the field, 415),
with no 5xx and no dropped connection, and the server must still answer afterwards. Latency and
throughput are measured by ``python -m benchmarks.load_serving`` (docs/reliability.md), not here.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from benchmarks.load_serving import BODIES, run_load, served

from complex_ner.adapters.http_serving import MAX_BODY_BYTES
from complex_ner.adapters.serving import LIMITS

pytestmark = pytest.mark.integration


def check_still_serving(url: str) -> None:
    req = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps({"dataframe_records": [{"text": "Luis vive en Quito"}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        ents = json.loads(r.read())["predictions"][0]["entities"]
    assert [e["type"] for e in ents] == ["PER", "LOC"]


@pytest.mark.parametrize(
    ("clients", "requests"),
    [
        pytest.param(50, 20, id="50x20"),
        pytest.param(50, 100, id="50x100", marks=pytest.mark.reliability_long),
    ],
)
def test_concurrent_mixed_requests_get_their_status(
    champion_url: str, clients: int, requests: int
) -> None:
    result = run_load(champion_url, clients=clients, requests=requests, seed=clients * requests)
    assert result.requests == clients * requests
    assert result.dropped == 0 and result.server_errors == 0, result.statuses
    assert result.unexpected == [], result.unexpected[:10]
    assert len(result.by_body) == len(BODIES)  # every kind of body was sent
    check_still_serving(champion_url)


def test_errors_name_the_field_or_the_limit(champion_url: str) -> None:
    for body in BODIES:
        if body.expect == 200:
            continue
        headers = {"Content-Type": body.content_type} if body.content_type else {}
        req = urllib.request.Request(f"{champion_url}/invocations", data=body.body, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=60)
        assert info.value.code == body.expect, body.name
        text = info.value.read().decode("utf-8", "replace")
        assert text.strip(), body.name
    for name, needle in (
        ("rows over the limit", f"at most {LIMITS.max_rows:,} are accepted"),
        ("characters in all over the limit", f"at most {LIMITS.max_total_chars:,} per request"),
        ("characters over the limit", f"row 0: 'text' has {LIMITS.max_chars + 1:,} characters"),
        ("non-string text", "text"),
        ("lone surrogate", "surrogate"),
        ("tokens as a string", "column tokens"),
        ("batch_size 0", "params.batch_size"),
    ):
        body = next(b for b in BODIES if b.name == name)
        req = urllib.request.Request(
            f"{champion_url}/invocations",
            data=body.body,
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=60)
        message = json.loads(info.value.read())["message"]
        assert needle in message, (name, message[-300:])
    check_still_serving(champion_url)


def test_complex_ner_serve_closes_mlflows_two_gaps(registry: Path) -> None:
    """``complex-ner serve``: the same scoring app, plus 415 without a content type (MLflow's
    own server answers 500) and 413 over the body limit; the load mix still gets its statuses."""
    tracking = f"sqlite:///{registry / 'mlruns' / 'mlflow.db'}"
    with served("models:/complex-ner-es@champion", tracking, guarded=True) as url:
        host, port = url.removeprefix("http://").split(":")
        for headers, body, status in (
            ({}, b'{"dataframe_records": [{"text": "hola"}]}', 415),
            ({"Content-Type": "application/json"}, b"x" * (MAX_BODY_BYTES + 1), 413),
        ):
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.request("POST", "/invocations", body=body, headers=headers)
            response = conn.getresponse()
            assert response.status == status and json.loads(response.read())["message"]
            conn.close()
        result = run_load(url, clients=50, requests=4, seed=7)
        assert result.dropped == 0 and result.server_errors == 0 and result.unexpected == []
        check_still_serving(url)
