"""The `Plugin` base class, whose methods are the hooks of `wit/plugin.wit`, and
`claim_by_prefix`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

from . import defaults
from .records import (
    ChunkRewrite,
    OrphanRequest,
    PluginInfo,
    Request,
    Response,
    ResponsePlan,
    UpstreamRequest,
    UpstreamWebsocket,
)

__all__ = ["Plugin", "claim_by_prefix"]


class Plugin(ABC):
    """A framework plugin. Each hook runs in the phase its name says; see `wit/plugin.wit` for
    when each one is called and what the host does with its answer. Every hook but `info` has
    a default that is Portico's generic behaviour, the same as the Rust SDK's; the defaults are
    also functions in `portico_plugin.defaults`, so an override can build on them.

    Instances may be reused between requests or made fresh for each call: keep nothing between
    calls on `self` or in globals.
    """

    KEEP_PREFIX: ClassVar[bool] = False
    """True when the app expects the `/proxy/{id}` prefix on upstream paths. Used by the
    default hooks and reported as `PluginInfo.keep_prefix`."""

    @abstractmethod
    def info(self) -> PluginInfo:
        """Describes the plugin; runs once, at load."""

    def on_request(self, req: Request) -> UpstreamRequest:
        """The upstream path, query and header edits of an HTTP request.
        Default: `defaults.on_request`."""
        return defaults.on_request(req, self.KEEP_PREFIX)

    def on_websocket(self, req: Request, protocols: list[str]) -> UpstreamWebsocket:
        """The upstream path, subprotocols and header edits of a WebSocket handshake;
        `protocols` is the client's offered list. Default: `defaults.on_websocket`
        (subprotocols passed through)."""
        return defaults.on_websocket(req, self.KEEP_PREFIX)

    def claim(self, req: OrphanRequest) -> int:
        """How sure the plugin is that an un-prefixed path is its framework's; 0 means not
        mine. Called only for paths that start with one of `PluginInfo.claim_prefixes`;
        `claim_by_prefix` scores a path from such a table. Default: 0."""
        return 0

    def on_response(self, resp: Response) -> ResponsePlan:
        """Header edits for a response and whether to rewrite its body.
        Default: `defaults.on_response` (`defaults.on_html_response` also rewrites pages)."""
        return defaults.on_response(resp)

    def rewrite_body(self, resp: Response, body: bytes) -> bytes | None:
        """The rewritten body, or `None` to leave it unchanged; called when `on_response`
        answered `BodyRewrite.WHOLE`. Default: `None`."""
        return None

    def rewrite_chunk(self, resp: Response, chunk: bytes, state: bytes, last: bool) -> ChunkRewrite:
        """One step of a streamed rewrite, called for each piece of the body when
        `on_response` answered `BodyRewrite.STREAMED` (or `BodyRewrite.WHOLE` for a body larger
        than `PluginInfo.max_rewrite_bytes`): `chunk` starts with the bytes the previous
        call held back, `state` is what it returned (empty on the first call), `last` is true
        on the final call. Calls may run in different instances, so keep what the next one
        needs in the returned `state`. `defaults.rewrite_chunk_with` turns a rewrite that works
        within a line or a tag into a streamed one (`defaults.prefix_html_chunk` is `prefix_html`
        made so). Default: the chunk unchanged."""
        return defaults.unchanged_chunk(chunk)


def claim_by_prefix(claims: Iterable[tuple[str, int]], path: str) -> int:
    """The score of the first `(prefix, score)` entry whose prefix starts `path`, or 0.

    A plugin that keeps its claims in one table can declare the prefixes and score paths from
    the same list, so the two never disagree:

    >>> CLAIMS = [("/_stcore/", 100), ("/static/", 40)]
    >>> claim_by_prefix(CLAIMS, "/static/js/main.js"), claim_by_prefix(CLAIMS, "/other")
    (40, 0)

    In `info`: `claim_prefixes=[prefix for prefix, _ in CLAIMS]`.
    """
    return next((score for prefix, score in claims if path.startswith(prefix)), 0)
