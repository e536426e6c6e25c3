"""Paths and loaders the tests share: the SDK on `sys.path`, the repository's files, and the
shapes of the contract read from its WIT."""

from __future__ import annotations

import re
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[1]
REPOSITORY = SDK.parents[1]
CONTRACT = REPOSITORY / "wit" / "plugin.wit"
SDK_CONTRACT = SDK / "wit" / "plugin.wit"
CASES = REPOSITORY / "plugins" / "rewrite" / "tests" / "cases.json"
PYTHON_GRADIO = REPOSITORY / "tests" / "fixtures" / "python-gradio"

if str(SDK) not in sys.path:
    sys.path.insert(0, str(SDK))

_TYPE = re.compile(r"\b(record|enum|variant)\s+(%?[\w-]+)\s*\{([^}]*)\}")


def camel(name: str) -> str:
    """`plugin-info` as Python spells a class: `PluginInfo`."""
    return "".join(word.capitalize() for word in name.lstrip("%").split("-"))


def snake(name: str) -> str:
    """`health-path` as Python spells a field: `health_path`."""
    return name.lstrip("%").replace("-", "_")


def contract_types(wit: str) -> dict[str, tuple[str, list[str]]]:
    """The records, enums and variants of a WIT file (one member a line, as the contract is
    written): class name -> (kind, member names as componentize-py spells them)."""
    code = "\n".join(line.split("//", 1)[0] for line in wit.splitlines())
    types = {}
    for kind, name, body in _TYPE.findall(code):
        members = [line.strip().rstrip(",") for line in body.splitlines() if line.strip()]
        if kind == "record":
            names = [snake(member.split(":", 1)[0].strip()) for member in members]
        elif kind == "enum":
            names = [snake(member).upper() for member in members]
        else:
            names = [member.split("(", 1)[0].strip() for member in members]
        types[camel(name)] = (kind, names)
    return types
