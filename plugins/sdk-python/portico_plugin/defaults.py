"""The generic behaviour, as functions a plugin can call from its own hooks: the same rules as
the Rust SDK's `defaults` module."""

from __future__ import annotations

from collections.abc import Callable

from . import rewrite
from .records import (
    BodyRewrite,
    ChunkRewrite,
    Header,
    HeaderEdits,
    Request,
    Response,
    ResponsePlan,
    SubprotocolsPassThrough,
    UpstreamRequest,
    UpstreamWebsocket,
    header,
)

__all__ = [
    "forwarded_prefix",
    "media_type",
    "on_html_response",
    "on_request",
    "on_response",
    "on_websocket",
    "prefix_html",
    "prefix_html_chunk",
    "response_headers",
    "rewrite_chunk_with",
    "unchanged_chunk",
]


def on_request(req: Request, keep_prefix: bool) -> UpstreamRequest:
    """The path below the prefix (or the whole path with `keep_prefix`), the query unchanged,
    and `x-forwarded-prefix` when the prefix is stripped."""
    return UpstreamRequest(
        path=rewrite.upstream_path(req.path, req.prefix, keep_prefix),
        query=req.query,
        headers=forwarded_prefix(req, keep_prefix),
    )


def on_websocket(req: Request, keep_prefix: bool) -> UpstreamWebsocket:
    """The same path as `on_request`, subprotocols passed through unchanged."""
    return UpstreamWebsocket(
        path=rewrite.upstream_path(req.path, req.prefix, keep_prefix),
        query=req.query,
        protocols=SubprotocolsPassThrough(),
        headers=forwarded_prefix(req, keep_prefix),
    )


def forwarded_prefix(req: Request, keep_prefix: bool) -> HeaderEdits:
    """`x-forwarded-prefix: {prefix}` when the prefix is stripped; apps that honour it
    (NiceGUI, Spring, ProxyFix) then build correct links. A kept prefix is not announced
    twice."""
    edits = HeaderEdits()
    if not keep_prefix:
        edits.set.append(Header("x-forwarded-prefix", req.prefix))
    return edits


def on_response(resp: Response) -> ResponsePlan:
    """`location` kept under the prefix and `set-cookie` paths scoped to it; no body
    rewrite."""
    return ResponsePlan(headers=response_headers(resp), body=BodyRewrite.KEEP)


def on_html_response(resp: Response) -> ResponsePlan:
    """`on_response`'s header edits, and the body rewritten whole when it is an HTML page: for
    plugins whose framework writes root-relative URLs into its pages (`prefix_html`)."""
    whole = media_type(resp) == "text/html"
    return ResponsePlan(
        headers=response_headers(resp),
        body=BodyRewrite.WHOLE if whole else BodyRewrite.KEEP,
    )


def unchanged_chunk(chunk: bytes) -> ChunkRewrite:
    """A streamed chunk passed on unchanged: the default `rewrite_chunk`."""
    return ChunkRewrite(output=bytes(chunk), held=0, state=b"")


def rewrite_chunk_with(
    chunk: bytes, last: bool, rewrite_part: Callable[[bytes], bytes | None]
) -> ChunkRewrite:
    """One step of a streamed rewrite made of `rewrite_part`, a rewrite that works within a line
    or a tag (as `prefix_html` does): it gets the chunk up to its last line end or `>`
    (`rewrite.stream_cut`), and the rest is held back for the next chunk. `rewrite_part`
    returns `None` to leave its part unchanged. No state is kept.

    >>> step = rewrite_chunk_with(b'<a href="/x">1</a>\\n<img sr', False,
    ...                           lambda part: rewrite.prefix_html_urls(part, "/proxy/app"))
    >>> step.output, step.held
    (b'<a href="/proxy/app/x">1</a>\\n', 7)
    """
    cut = rewrite.stream_cut(chunk, last)
    part = bytes(chunk[:cut])
    output = rewrite_part(part)
    return ChunkRewrite(
        output=part if output is None else output,
        held=len(chunk) - cut,
        state=b"",
    )


def prefix_html(resp: Response, body: bytes) -> bytes | None:
    """An HTML page with its root-relative `href`, `src` and `action` URLs moved under the
    prefix; `None` when none needed to move."""
    return rewrite.prefix_html_urls(body, resp.request.prefix)


def prefix_html_chunk(resp: Response, chunk: bytes, last: bool) -> ChunkRewrite:
    """`prefix_html` as a streamed rewrite (`rewrite_chunk_with`): for pages larger than the
    plugin's `max_rewrite_bytes`, which Portico streams through `rewrite_chunk`."""
    return rewrite_chunk_with(chunk, last, lambda part: prefix_html(resp, part))


def response_headers(resp: Response) -> HeaderEdits:
    """The header edits of `on_response`."""
    req = resp.request
    edits = HeaderEdits()
    for location in (h.value for h in resp.headers if h.name == "location"):
        fixed = rewrite.prefix_location(location, req.prefix, req.public_host)
        if fixed is not None:
            edits.set.append(Header("location", fixed))
    cookies = [h.value for h in resp.headers if h.name == "set-cookie"]
    scoped = [rewrite.scope_cookie_path(cookie, req.prefix) for cookie in cookies]
    if any(fixed is not None for fixed in scoped):
        # `set` replaces every value of a name, so the unchanged cookies are sent again too.
        for cookie, fixed in zip(cookies, scoped, strict=True):
            edits.set.append(Header("set-cookie", cookie if fixed is None else fixed))
    return edits


def media_type(resp: Response) -> str:
    """The response's media type (`text/html`), lower case, or empty."""
    content_type = header(resp.headers, "content-type")
    return "" if content_type is None else rewrite.media_type(content_type)
