"""The worker's HTTP views (SPEC 10), registered on its faust app by ``register``.

Nothing here changes state. Every path is described in ``rater/worker/openapi.json``, served at
``/openapi.json``; ``tests/worker/test_web.py`` calls each path the document lists against a
real worker and checks the answer against the document's schema.

Errors have one shape on every 4xx (and on this module's 503s)::

    {"error": {"status": 400, "reason": "invalid_call_type", "detail": "call_type must be ..."}}

The views build it with ``error``; paths and methods that no view serves get it from the
``json_errors`` middleware, in place of aiohttp's plain-text 404 and 405. The 404 of an
authorization for an unknown tenant keeps the authorization's own fields beside it
(``allowed``, ``reason``, ``balance``), so a client that reads only those still works.

A tenant's questions are answered by the worker that owns the tenant's partition: the
others forward the request once (``X-Rater-Routed`` stops a second hop). A worker that
faust's router names as the owner answers only for the partitions assigned to it: a
worker restarted on the same address while its killed predecessor is still a member of
the group (until that member's session times out) is named for the predecessor's
partitions too, and would otherwise answer 404 for their tenants (a call refused as
``unknown_tenant``); it answers 503 until the group moves them.
"""

from __future__ import annotations

import time
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web as aioweb

from rater.core.authorize import CALL_TYPES, BadNumber, authorize, parse_to
from rater.core.codec import to_view
from rater.core.partitioning import partition_for
from rater.core.records import TENANT_RE

if TYPE_CHECKING:
    from rater.worker.app import RaterWorker

JSON = "application/json"
_REASONS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}


def error_body(status: int, reason: str, detail: str) -> dict[str, Any]:
    return {"error": {"status": status, "reason": reason, "detail": detail}}


@lru_cache(maxsize=1)
def openapi_document() -> bytes:
    """``rater/worker/openapi.json`` as shipped in the package."""
    return resources.files("rater.worker").joinpath("openapi.json").read_bytes()


@aioweb.middleware
async def json_errors(request: aioweb.Request, handler: Any) -> aioweb.StreamResponse:
    """aiohttp's own 4xx (no such path, a method no view serves) in the one error shape."""
    try:
        return await handler(request)
    except aioweb.HTTPException as exc:
        if not 400 <= exc.status < 500:
            raise
        reason = _REASONS.get(exc.status, "client_error")
        if exc.status == 404:
            detail = f"no such path: {request.path[:200]}"
        elif exc.status == 405:
            detail = f"{request.method} is not served here; allowed: {', '.join(sorted(getattr(exc, 'allowed_methods', ())))}"
        else:
            detail = exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return aioweb.Response(
            body=orjson.dumps(error_body(exc.status, reason, detail)), status=exc.status, content_type=JSON, headers=headers
        )


HERE, FORWARD, NOT_YET = "here", "forward", "not yet"


def where_answered(owner_url: str, own_url: str, partition: int, owned: set[int]) -> str:
    """Where a tenant's question is answered, from faust's router's answer (``owner_url``,
    the owner of the tenant's partition), this worker's URL, the tenant's ``partition``
    and the partitions assigned to this worker: ``HERE``; ``FORWARD`` to the owner; or
    ``NOT_YET`` (503), when the router names this worker's address for a partition not
    assigned to it (a killed predecessor on the same address still holds it; module
    docstring)."""
    if owner_url.rstrip("/") != own_url.rstrip("/"):
        return FORWARD
    return HERE if partition in owned else NOT_YET


def register(worker: RaterWorker) -> None:
    app = worker.app
    app.web.web_app.middlewares.append(json_errors)

    def error(web, status: int, reason: str, detail: str, fields: dict[str, Any] | None = None):
        body = {**(fields or {}), **error_body(status, reason, detail)}
        return web.bytes(orjson.dumps(body), content_type=JSON, status=status)

    def bad_tenant(web):
        return error(web, 400, "invalid_tenant_id", "a tenant id is 1 to 64 of A-Z a-z 0-9 . _ : -")

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web, request):
        ok, why = worker.ready()
        return web.json({"ready": ok, "reason": why}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web, request):
        # The format the scraper asks for (OpenMetrics or the text format 0.0.4), as
        # prometheus-client negotiates it (rater/worker/metrics.py).
        from rater.worker.metrics import render

        body, content_type = render(worker.registry, request.headers.get("Accept"))
        return web.bytes(body, headers={"Content-Type": content_type})  # it has a charset: not content_type=

    @app.page("/openapi.json")
    async def openapi(web, request):
        return web.bytes(openapi_document(), content_type=JSON)

    async def routed(web, request, tenant: str):
        """The response of the worker that owns the tenant, or None if that is us."""
        own = str(app.conf.canonical_url)
        owner = own  # forwarded here (X-Rater-Routed): no second hop
        if not request.headers.get("X-Rater-Routed"):
            try:
                dest = app.router.key_store(worker.accounts.name, tenant.encode())
            except KeyError:
                return error(web, 503, "unavailable", "the tenant's partition is not assigned yet")
            owner = str(dest)
        owned = {tp.partition for tp in worker.port.active()}
        answer = where_answered(owner, own, partition_for(tenant.encode(), worker.cfg.partitions), owned)
        if answer == HERE:
            return None
        if answer == NOT_YET:
            return error(web, 503, "unavailable", "the tenant's partition is not assigned here yet")
        try:
            async with app.http_client.request(
                method="GET",
                url=request.url.with_host(dest.host).with_port(dest.port),
                headers={"X-Rater-Routed": "1"},
            ) as response:
                return web.bytes(await response.read(), content_type=response.content_type, status=response.status)
        except Exception as exc:  # the owner is gone mid-rebalance
            return error(web, 503, "unavailable", f"the owning worker did not answer ({type(exc).__name__})")

    @app.page("/tenants/{tenant}")
    async def tenant_view(web, request, tenant):
        if not TENANT_RE.fullmatch(tenant):
            return bad_tenant(web)
        forwarded = await routed(web, request, tenant)
        if forwarded is not None:
            return forwarded
        acct = worker._read(tenant)
        if acct is None:
            return error(web, 404, "unknown_tenant", f"no account for {tenant!r}")
        return web.bytes(orjson.dumps(to_view(acct)), content_type=JSON)

    @app.page("/tenants/{tenant}/authorize")
    async def authorize_view(web, request, tenant):
        if not TENANT_RE.fullmatch(tenant):
            return bad_tenant(web)
        call_type = request.query.get("call_type")
        if call_type not in CALL_TYPES:
            return error(web, 400, "invalid_call_type", f"call_type must be one of {', '.join(CALL_TYPES)}")
        to = request.query.get("to")
        if to is not None:
            try:
                to = parse_to(to)
            except BadNumber as exc:
                return error(web, 400, "invalid_to", str(exc))
        forwarded = await routed(web, request, tenant)
        if forwarded is not None:
            return forwarded
        acct = worker._read(tenant)
        if acct is None:
            return error(
                web, 404, "unknown_tenant", f"no account for {tenant!r}", {"allowed": False, "reason": "unknown_tenant", "balance": None}
            )
        now = time.time_ns() // 1000  # the processing clock
        body = authorize(acct, call_type, to, worker.processor.tables, now)
        return web.bytes(orjson.dumps(body), content_type=JSON)
