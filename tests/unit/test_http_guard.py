"""The request guard in front of MLflow's scoring app: 415 without a content type, 413 over the
body limit (announced or chunked), everything else handed over unchanged."""

from __future__ import annotations

from collections.abc import Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from complex_ner.adapters.http_serving import RequestGuard


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body), "type": request.headers.get("content-type")})


CLIENT = TestClient(
    RequestGuard(Starlette(routes=[Route("/invocations", echo, methods=["POST", "GET"])]), 1000)
)


def test_a_post_without_content_type_gets_415() -> None:
    r = CLIENT.post("/invocations", content=b'{"a": 1}', headers={"content-type": ""})
    assert r.status_code == 415 and "Content-Type header is required" in r.json()["message"]


def test_a_body_over_the_limit_gets_413_announced_or_chunked() -> None:
    r = CLIENT.post("/invocations", content=b"x" * 1001, headers={"content-type": "text/plain"})
    assert r.status_code == 413 and "at most 1,000" in r.json()["message"]

    def chunks() -> Iterator[bytes]:
        yield from [b"x" * 600, b"x" * 600]

    r = CLIENT.post("/invocations", content=chunks(), headers={"content-type": "text/plain"})
    assert r.status_code == 413


def test_everything_else_reaches_the_app_unchanged() -> None:
    r = CLIENT.post("/invocations", content=b"x" * 1000, headers={"content-type": "text/csv"})
    assert r.json() == {"bytes": 1000, "type": "text/csv"}

    def chunks() -> Iterator[bytes]:
        yield from [b"x" * 400, b"x" * 400]

    r = CLIENT.post("/invocations", content=chunks(), headers={"content-type": "application/json"})
    assert r.json() == {"bytes": 800, "type": "application/json"}
    assert CLIENT.get("/invocations").json() == {"bytes": 0, "type": None}
