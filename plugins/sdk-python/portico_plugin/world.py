"""The component's side of the contract: `export` turns a `Plugin` class into the class
componentize-py calls the world's exports on, converting between the SDK's records and the
bindings it generates.

componentize-py (0.25) generates the bindings of the world `plugin` as the module `wit_world`
(records in `wit_world.imports.types`), imports the app module and instantiates its class
`WitWorld` while it builds the component (the instance is part of the component's snapshot),
and calls the exports as its methods. So the app module ends with
`WitWorld = export(MyPlugin)`. The generated modules exist only in the component, so they are
imported when `WitWorld` is instantiated, never before: tests import the app module and call
the plugin class directly.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from typing import Any

from . import records
from .plugin import Plugin

__all__ = ["ContractMismatch", "export"]

GENERATED_TYPES = "wit_world.imports.types"
"""The module componentize-py generates the records of `interface types` into."""


class ContractMismatch(TypeError):
    """The generated bindings and the SDK's records disagree: the WIT the component is built
    against is not the one this SDK implements."""


def export(plugin: type[Plugin]) -> type:
    """The class to bind as `WitWorld` in the app module, running `plugin`'s hooks:

        WitWorld = export(MyFramework)

    As in the Rust SDK, `info` reports `plugin.KEEP_PREFIX` as `keep_prefix`.
    """

    class WitWorld:
        __doc__ = f"The exports of the world `plugin`, run by `{plugin.__qualname__}`."

        def __init__(self) -> None:
            self._plugin = plugin()
            self._lift, self._lower = _conversions(importlib.import_module(GENERATED_TYPES))

        def info(self) -> Any:
            info = dataclasses.replace(self._plugin.info(), keep_prefix=plugin.KEEP_PREFIX)
            return self._lower(info)

        def on_request(self, req: Any) -> Any:
            return self._lower(self._plugin.on_request(self._lift(req)))

        def on_websocket(self, req: Any, protocols: list[str]) -> Any:
            return self._lower(self._plugin.on_websocket(self._lift(req), protocols))

        def claim(self, req: Any) -> int:
            return self._plugin.claim(self._lift(req))

        def on_response(self, resp: Any) -> Any:
            return self._lower(self._plugin.on_response(self._lift(resp)))

        def rewrite_body(self, resp: Any, body: bytes) -> bytes | None:
            return self._lower(self._plugin.rewrite_body(self._lift(resp), body))

        def rewrite_chunk(self, resp: Any, chunk: bytes, state: bytes, last: bool) -> Any:
            step = self._plugin.rewrite_chunk(self._lift(resp), chunk, state, last)
            return self._lower(step)

    WitWorld.__qualname__ = WitWorld.__name__ = "WitWorld"
    return WitWorld


def _is_record(kind: Any) -> bool:
    return isinstance(kind, type) and (
        dataclasses.is_dataclass(kind) or issubclass(kind, enum.Enum)
    )


def _shape(kind: type) -> list[tuple[str, Any]]:
    if issubclass(kind, enum.Enum):
        return [(member.name, member.value) for member in kind]
    return [(f.name, None) for f in dataclasses.fields(kind)]


def _conversions(generated: Any) -> tuple[Any, Any]:
    """The functions that convert generated records to the SDK's (`lift`) and back (`lower`),
    after checking that the two sets have the same names and shapes."""
    ours = {name: getattr(records, name) for name in records.__all__}
    ours = {name: kind for name, kind in ours.items() if _is_record(kind)}
    # componentize-py names a variant's cases `Variant_Case` (`Subprotocols_PassThrough`);
    # the SDK spells them `VariantCase`.
    theirs = {
        name.replace("_", ""): kind
        for name, kind in vars(generated).items()
        if _is_record(kind) and kind.__module__ == generated.__name__
    }
    if ours.keys() != theirs.keys():
        raise ContractMismatch(
            f"the contract's types {sorted(theirs)} are not the SDK's {sorted(ours)}: "
            "build with the WIT shipped in the SDK"
        )
    for name, kind in ours.items():
        if _shape(kind) != _shape(theirs[name]):
            raise ContractMismatch(
                f"{name} is {_shape(theirs[name])} in the contract but {_shape(kind)} in the SDK"
            )
    lift = _converter({theirs[name]: ours[name] for name in ours})
    lower = _converter({ours[name]: theirs[name] for name in ours})
    return lift, lower


def _converter(targets: dict[type, type]) -> Any:
    """A function that rebuilds a value with each record or enum of a type in `targets`
    replaced by its twin, recursively."""
    table: dict[type, tuple[Any, list[str] | None]] = {}
    for source, target in targets.items():
        fields = None if issubclass(source, enum.Enum) else dataclasses.fields(source)
        table[source] = (target, None if fields is None else [f.name for f in fields])

    def convert(value: Any) -> Any:
        entry = table.get(type(value))
        if entry is not None:
            target, fields = entry
            if fields is None:
                return target[value.name]
            return target(*[convert(getattr(value, name)) for name in fields])
        if isinstance(value, list):
            return [convert(item) for item in value]
        if isinstance(value, tuple):
            return tuple(convert(item) for item in value)
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        return value

    return convert
