"""The records of the contract (`interface types` of `wit/plugin.wit`), as the hooks take and
return them.

They mirror the WIT one for one: a record is a dataclass with the same fields in the same
order (kebab-case names in snake_case), the enum `body-rewrite` is `BodyRewrite`, and each case
of the variant `subprotocols` is a class of its own. `option<T>` is `T | None`, `list<u8>` is
`bytes`. The component's glue (`portico_plugin.world`) converts them to and from the bindings
componentize-py generates, and checks at build time that both still have the same shape, so
plugin code and its tests never depend on generated modules. `header` looks a header up in
a list of them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "BodyRewrite",
    "ChunkRewrite",
    "Header",
    "HeaderEdits",
    "OrphanRequest",
    "PluginInfo",
    "Request",
    "Response",
    "ResponsePlan",
    "Service",
    "Subprotocols",
    "SubprotocolsPassThrough",
    "SubprotocolsReplace",
    "UpstreamRequest",
    "UpstreamWebsocket",
    "header",
]


@dataclass
class Header:
    """One HTTP header. Portico passes names in lower case; values are passed as they arrived
    when they are valid UTF-8 and left out otherwise. A header a plugin sets should have a
    lower-case name."""

    name: str
    value: str


def header(headers: list[Header], name: str) -> str | None:
    """The value of the first header called `name` (lower case), if the host passed it."""
    return next((h.value for h in headers if h.name == name), None)


@dataclass
class PluginInfo:
    """What a plugin says about itself, asked once at load. `PluginInfo(name, version)` has the
    generic defaults (those of the Rust SDK's `PluginInfo::new`): no service types, no port or
    health path, prefix stripped, no un-prefixed paths claimed, no request headers read,
    `on_response` for `location` and `set-cookie`, no body rewriting. Set the rest by keyword:

        PluginInfo("gradio", "0.3.0", service_types=["gradio"], default_port=7860,
                   rewrite_content_types=["text/html"], max_rewrite_bytes=16 << 20)

    `keep_prefix` is filled in from `Plugin.KEEP_PREFIX` when the plugin is exported.
    """

    name: str
    """Short unique name, lower case; a plugin in the plugins directory replaces a bundled
    plugin of the same name."""
    version: str
    """The plugin's own version (semver)."""
    service_types: list[str] = field(default_factory=list)
    """The service types this plugin handles."""
    default_port: int | None = None
    """The port the framework listens on by default, for discovery."""
    health_path: str | None = None
    """A path that answers 2xx when the app is ready, relative to the app's root."""
    keep_prefix: bool = False
    """True when the app expects the `/proxy/{id}` prefix on upstream paths."""
    detect: list[str] = field(default_factory=list)
    """Substrings of a container's image name or command that identify the framework."""
    claim_prefixes: list[str] = field(default_factory=list)
    """The un-prefixed path prefixes `claim` answers for (`/_stcore/`); see `wit/plugin.wit`
    for the rules they must follow. Empty: `claim` is never called."""
    request_headers: list[str] = field(default_factory=list)
    """Names (lower case) of the request headers the plugin reads; `*` for all."""
    response_headers: list[str] = field(default_factory=lambda: ["location", "set-cookie"])
    """Names (lower case) of the response headers that trigger `on_response`; `*` for all."""
    rewrite_content_types: list[str] = field(default_factory=list)
    """Content types (`text/html`) whose bodies the plugin may rewrite."""
    max_rewrite_bytes: int = 0
    """The largest body, in bytes, buffered for `rewrite_body`."""


@dataclass
class Service:
    """The service a request is for."""

    id: str
    """The id in `/proxy/{id}`."""
    service_type: str
    """The service's type, as configured or detected."""
    labels: list[tuple[str, str]]
    """Labels from the configuration or the container."""
    upstream: str
    """The upstream base URL the request goes to (`http://10.0.0.5:8501`)."""


@dataclass
class Request:
    """A client request, as seen below the service's prefix."""

    method: str
    """Method, upper case (`GET`)."""
    path: str
    """The path below the prefix, starting with `/`, percent-encoding kept."""
    query: str | None
    """The query string without `?`, if any."""
    prefix: str
    """The prefix the service is served under, without trailing slash (`/proxy/sales`)."""
    public_host: str
    """The host the client addressed (its `Host` header)."""
    scheme: str
    """`http` or `https`, as the client sees it."""
    headers: list[Header]
    """The request headers the plugin asked for in `PluginInfo.request_headers`."""
    service: Service
    """The service."""


@dataclass
class HeaderEdits:
    """Header changes: removals apply first, then each name in `set` replaces every value of
    that name (a name may appear several times to send several values). `HeaderEdits()` is no
    change."""

    set: list[Header] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


@dataclass
class UpstreamRequest:
    """Where and how an HTTP request goes upstream."""

    path: str
    """The upstream path, origin-form, starting with `/`."""
    query: str | None
    """The upstream query string without `?`."""
    headers: HeaderEdits
    """Changes to the request headers."""


@dataclass
class SubprotocolsPassThrough:
    """Forward the client's `Sec-WebSocket-Protocol` list unchanged."""


@dataclass
class SubprotocolsReplace:
    """Offer this list upstream instead of the client's."""

    value: list[str]


Subprotocols = SubprotocolsPassThrough | SubprotocolsReplace
"""What to do with the client's `Sec-WebSocket-Protocol` list."""


@dataclass
class UpstreamWebsocket:
    """Where and how a WebSocket is opened upstream."""

    path: str
    """The upstream path, origin-form."""
    query: str | None
    """The upstream query string without `?`."""
    protocols: Subprotocols
    """The subprotocols offered upstream."""
    headers: HeaderEdits
    """Changes to the handshake's request headers."""


@dataclass
class OrphanRequest:
    """A request that arrived without any `/proxy/{id}` prefix, offered to `claim`."""

    method: str
    """Method, upper case."""
    path: str
    """The normalised path, starting with `/`."""
    query: str | None
    """The query string without `?`, if any."""


@dataclass
class Response:
    """An upstream response, before it is sent to the client."""

    request: Request
    """The request it answers."""
    status: int
    """Status code."""
    headers: list[Header]
    """The response headers the plugin asked for, plus `content-type` when present."""


class BodyRewrite(enum.Enum):
    """Whether and how a response body is rewritten (only for the content types in
    `PluginInfo.rewrite_content_types`)."""

    KEEP = 0
    """The body passes unchanged."""
    WHOLE = 1
    """The whole body is buffered and `rewrite_body` called once; a body larger than
    `PluginInfo.max_rewrite_bytes` goes to `rewrite_chunk` instead, as for `STREAMED`."""
    STREAMED = 2
    """`rewrite_chunk` is called for each piece of the body as it arrives."""


@dataclass
class ResponsePlan:
    """What to change in a response."""

    headers: HeaderEdits
    """Changes to the response headers."""
    body: BodyRewrite
    """Whether to rewrite the body, and how."""


@dataclass
class ChunkRewrite:
    """One step of a streamed rewrite."""

    output: bytes
    """The bytes to send now, in place of the chunk's first `len(chunk) - held` bytes."""
    held: int
    """How many bytes at the end of the chunk are left for the next call (at most 64 KiB)."""
    state: bytes
    """What the next call receives as `state` (at most 64 KiB)."""
