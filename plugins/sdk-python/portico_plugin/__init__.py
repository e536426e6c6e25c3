"""The Python plugin SDK: write a Portico framework plugin in Python and build it into a
component with componentize-py (`plugins/sdk-python/build.py`).

A plugin subclasses `Plugin`, overriding only the hooks its framework needs, and exports it
with one line. Every hook has a default that is Portico's generic behaviour, the same as the
Rust SDK's; the defaults are also functions in `portico_plugin.defaults`, and the rewriting
rules in `portico_plugin.rewrite`, so an override can build on them.

This SDK implements the contract `portico:plugin@0.3.0` (`wit/plugin.wit` here, a copy of the
repository's that a test keeps equal).

    from portico_plugin import OrphanRequest, Plugin, PluginInfo, claim_by_prefix, export

    CLAIMS = [("/_myframework/", 100)]

    class MyFramework(Plugin):
        def info(self) -> PluginInfo:
            return PluginInfo(
                "myframework", "0.1.0",
                service_types=["myframework"],
                default_port=9000,
                claim_prefixes=[prefix for prefix, _ in CLAIMS],
            )

        def claim(self, req: OrphanRequest) -> int:
            return claim_by_prefix(CLAIMS, req.path)

    WitWorld = export(MyFramework)
"""

from . import defaults, rewrite, testing
from .plugin import Plugin, claim_by_prefix
from .records import (
    BodyRewrite,
    ChunkRewrite,
    Header,
    HeaderEdits,
    OrphanRequest,
    PluginInfo,
    Request,
    Response,
    ResponsePlan,
    Service,
    Subprotocols,
    SubprotocolsPassThrough,
    SubprotocolsReplace,
    UpstreamRequest,
    UpstreamWebsocket,
    header,
)
from .world import export

CONTRACT = "portico:plugin@0.3.0"
"""The contract this SDK implements."""

__all__ = [
    "CONTRACT",
    "BodyRewrite",
    "ChunkRewrite",
    "Header",
    "HeaderEdits",
    "OrphanRequest",
    "Plugin",
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
    "claim_by_prefix",
    "defaults",
    "export",
    "header",
    "media_type",
    "rewrite",
    "testing",
]

media_type = defaults.media_type
"""The response's media type (`text/html`), lower case, or empty."""
