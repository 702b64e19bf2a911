"""``complex-ner serve``: MLflow's scoring server with the two gaps of ``mlflow models serve``
closed.

MLflow 3.17's scoring app (``mlflow.pyfunc.scoring_server.init``) answers a POST without a
``Content-Type`` header with 500 and reads a body of any size. :class:`RequestGuard`, an ASGI
middleware in front of the same app, answers those with 415 and 413; everything else (routes,
formats, statuses, the 60 s timeout) is MLflow's. The server binds 127.0.0.1 unless told
otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The largest request body read (bytes): 256 rows of 1,000 characters of 4-byte UTF-8 with
#: their JSON fit in 1.1 MiB; more is refused before it is read.
MAX_BODY_BYTES = 2 * 1024 * 1024


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Refuse, before MLflow's app sees them, POSTs without a content type (415) and bodies over
    ``max_body_bytes`` (413; by ``Content-Length``, or counted as a chunked body arrives)."""

    def __init__(self, app: App, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not headers.get(b"content-type", b"").strip():
            await _reply(
                send, 415, "BAD_REQUEST", "a Content-Type header is required (application/json)"
            )
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _reply(
                send,
                413,
                "REQUEST_LIMIT_EXCEEDED",
                f"the body has {length.decode(errors='replace')} bytes; "
                f"at most {self.max_body_bytes:,} are accepted",
            )
            return
        if length is None:  # chunked: read it here, within the limit, then hand it over
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.max_body_bytes:
                    await _reply(
                        send,
                        413,
                        "REQUEST_LIMIT_EXCEEDED",
                        f"the body has over {self.max_body_bytes:,} bytes; at most "
                        f"{self.max_body_bytes:,} are accepted",
                    )
                    return
            body = b"".join(chunks)
            sent = False

            async def replay() -> MutableMapping[str, Any]:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 5001) -> None:
    """Load the pyfunc model and serve MLflow's scoring app behind :class:`RequestGuard`."""
    import mlflow.pyfunc
    import uvicorn
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise LookupError(f"{model_uri}: {exc.message}") from None
    uvicorn.run(RequestGuard(scoring_server.init(model)), host=host, port=port, log_level="warning")
