"""The component glue: `export` converts between the SDK's records and bindings shaped as
componentize-py generates them, and refuses bindings of another shape.

The bindings here are made from the contract's WIT as componentize-py 0.25 lays them out
(`wit_world.imports.types`: a dataclass per record, an `Enum` per enum, a `Variant_Case`
dataclass per variant case), since the real ones only exist while a component is built.
"""

import dataclasses
import enum
import sys
import types
import unittest

from support import CONTRACT, camel, contract_types  # first: puts the SDK on sys.path

# isort: split
from portico_plugin import (
    BodyRewrite,
    ChunkRewrite,
    Plugin,
    PluginInfo,
    Request,
    ResponsePlan,
    SubprotocolsReplace,
    UpstreamWebsocket,
    defaults,
    export,
    testing,
)
from portico_plugin.world import GENERATED_TYPES, ContractMismatch


def generated_bindings(rename: dict[str, str] | None = None) -> types.ModuleType:
    """A module shaped like componentize-py's `wit_world.imports.types` for the contract;
    `rename` changes field names, to make a contract the SDK does not match."""
    module = types.ModuleType(GENERATED_TYPES)
    for name, (kind, members) in contract_types(CONTRACT.read_text()).items():
        members = [(rename or {}).get(member, member) for member in members]
        if kind == "record":
            made = dataclasses.make_dataclass(name, members)
        elif kind == "enum":
            made = enum.Enum(name, [(member, index) for index, member in enumerate(members)])
        else:
            for case in members:
                fields = ["value"] if case == "replace" else []
                case_class = dataclasses.make_dataclass(f"{name}_{camel(case)}", fields)
                case_class.__module__ = module.__name__
                setattr(module, case_class.__name__, case_class)
            continue
        made.__module__ = module.__name__
        setattr(module, name, made)
    return module


class Streaming(Plugin):
    KEEP_PREFIX = True

    def info(self) -> PluginInfo:
        return PluginInfo("streaming", "1.0.0", service_types=["streaming"])

    def on_websocket(self, req: Request, protocols: list[str]) -> UpstreamWebsocket:
        socket = defaults.on_websocket(req, self.KEEP_PREFIX)
        socket.protocols = SubprotocolsReplace(["v2", *protocols])
        return socket

    def on_response(self, resp) -> ResponsePlan:
        return ResponsePlan(headers=defaults.response_headers(resp), body=BodyRewrite.STREAMED)

    def rewrite_chunk(self, resp, chunk, state, last) -> ChunkRewrite:
        return ChunkRewrite(output=bytearray(chunk.upper()), held=0, state=state + b"+")


class WorldTest(unittest.TestCase):
    def setUp(self):
        self.bindings = generated_bindings()
        sys.modules[GENERATED_TYPES] = self.bindings
        self.addCleanup(sys.modules.pop, GENERATED_TYPES, None)
        self.lower = export(Streaming)()._lower

    def generated_request(self):
        """The request as the component receives it: built of generated records."""
        return self.lower(
            testing.request(
                "streaming", "/ws", query="a=1", headers=[("cookie", "c=1")], labels=[("k", "v")]
            )
        )

    def test_the_export_is_named_as_componentize_py_looks_it_up(self):
        self.assertEqual(export(Streaming).__name__, "WitWorld")

    def test_info_reports_keep_prefix_from_the_class(self):
        info = export(Streaming)().info()
        self.assertIs(type(info), self.bindings.PluginInfo)
        self.assertTrue(info.keep_prefix)
        self.assertEqual(info.response_headers, ["location", "set-cookie"])

    def test_hooks_receive_sdk_records_and_return_generated_ones(self):
        world = export(Streaming)()
        req = self.generated_request()
        self.assertIs(type(req), self.bindings.Request)
        self.assertIs(type(req.headers[0]), self.bindings.Header)
        self.assertEqual(req.service.labels, [("k", "v")])
        upstream = world.on_request(req)
        self.assertIs(type(upstream), self.bindings.UpstreamRequest)
        self.assertIs(type(upstream.headers), self.bindings.HeaderEdits)
        self.assertEqual((upstream.path, upstream.query), ("/proxy/app/ws", "a=1"))

    def test_variant_cases_become_the_generated_classes(self):
        socket = export(Streaming)().on_websocket(self.generated_request(), ["v1"])
        self.assertIs(type(socket.protocols), self.bindings.Subprotocols_Replace)
        self.assertEqual(socket.protocols.value, ["v2", "v1"])

    def test_enums_and_bytes_become_what_the_runtime_reads(self):
        world = export(Streaming)()
        resp = self.lower(testing.response(testing.request("streaming", "/"), 200))
        plan = world.on_response(resp)
        self.assertIs(plan.body, self.bindings.BodyRewrite.STREAMED)
        step = world.rewrite_chunk(resp, b"abc", b"s", True)
        self.assertIs(type(step), self.bindings.ChunkRewrite)
        self.assertIs(type(step.output), bytes)
        self.assertEqual((step.output, step.held, step.state), (b"ABC", 0, b"s+"))
        self.assertIsNone(world.rewrite_body(resp, b"x"))
        self.assertEqual(world.claim(self.lower(testing.orphan("/x"))), 0)

    def test_bindings_of_another_shape_are_refused(self):
        sys.modules[GENERATED_TYPES] = generated_bindings(rename={"held": "kept"})
        with self.assertRaisesRegex(ContractMismatch, "ChunkRewrite"):
            export(Streaming)()


if __name__ == "__main__":
    unittest.main()
