"""Records for unit tests of a plugin's hooks, run under plain Python without Portico: a
request for service `app` of a type under `/proxy/app`, a response to it, an un-prefixed
request. The same records as the Rust SDK's `testing` module.

>>> req = request("myframework", "/page", headers=[("Accept", "text/html")])
>>> req.prefix, req.headers[0].name
('/proxy/app', 'accept')
>>> response(req, 302, headers=[("location", "/login")]).status
302
"""

from __future__ import annotations

from collections.abc import Iterable

from .records import Header, OrphanRequest, Request, Response, Service

__all__ = ["SERVICE_ID", "orphan", "request", "response"]

SERVICE_ID = "app"
"""The id of the service the records describe: the prefix is `/proxy/app`."""


def request(
    service_type: str,
    path: str,
    *,
    method: str = "GET",
    query: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    labels: Iterable[tuple[str, str]] = (),
    scheme: str = "http",
    public_host: str = "localhost:8080",
) -> Request:
    """A request for `path` (below the prefix) to a service of `service_type`, by default a
    `GET` from a browser at `http://localhost:8080` with no headers. Header names are made
    lower case, as Portico passes them; `labels` are the service's labels."""
    return Request(
        method=method,
        path=path,
        query=query,
        prefix=f"/proxy/{SERVICE_ID}",
        public_host=public_host,
        scheme=scheme,
        headers=_headers(headers),
        service=Service(
            id=SERVICE_ID,
            service_type=service_type,
            labels=list(labels),
            upstream="http://127.0.0.1:8000",
        ),
    )


def response(request: Request, status: int, *, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """The upstream's answer `status` to `request`, with `headers` (names made lower case)."""
    return Response(request=request, status=status, headers=_headers(headers))


def orphan(path: str, *, method: str = "GET", query: str | None = None) -> OrphanRequest:
    """A request for `path` that arrived without any prefix, as the `claim` hook sees it."""
    return OrphanRequest(method=method, path=path, query=query)


def _headers(pairs: Iterable[tuple[str, str]]) -> list[Header]:
    return [Header(name.lower(), value) for name, value in pairs]
