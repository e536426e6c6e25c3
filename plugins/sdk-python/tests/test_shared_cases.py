"""The cases of `plugins/rewrite/tests/cases.json`, which the Rust crate's tests run too, run
against `portico_plugin.rewrite`: both implementations give the same answers."""

import json
import random
import unittest

from support import CASES  # first: puts the SDK on sys.path

# isort: split
from portico_plugin import rewrite

SECTIONS = {
    "upstream_path": lambda c: rewrite.upstream_path(c["path"], c["prefix"], c["keep_prefix"]),
    "has_prefix": lambda c: rewrite.has_prefix(c["path"], c["prefix"]),
    "prefix_location": lambda c: rewrite.prefix_location(
        c["location"], c["prefix"], c["public_host"]
    ),
    "scope_cookie_path": lambda c: rewrite.scope_cookie_path(c["set_cookie"], c["prefix"]),
    "scope_cookie_path_always": lambda c: rewrite.scope_cookie_path_always(
        c["set_cookie"], c["prefix"]
    ),
    "replace_bytes": lambda c: rewrite.replace_bytes(
        as_bytes(c["haystack"]), as_bytes(c["from"]), as_bytes(c["to"])
    ),
    "prefix_html_urls": lambda c: rewrite.prefix_html_urls(as_bytes(c["html"]), c["prefix"]),
    "json_string_body": lambda c: rewrite.json_string_body(c["text"]),
    "media_type": lambda c: rewrite.media_type(c["content_type"]),
    "stream_cut": lambda c: rewrite.stream_cut(as_bytes(c["chunk"]), c["last"]),
}
"""How each section's cases call their function."""

RETURNS_BYTES = {"replace_bytes", "prefix_html_urls"}


def as_bytes(value) -> bytes:
    """A bytes value as the file writes it: a string, a repeated string, hex, or a list of
    those."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return b"".join(as_bytes(piece) for piece in value)
    if "repeat" in value:
        return value["repeat"].encode() * value["times"]
    return bytes.fromhex(value["hex"])


class SharedCasesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cases = json.loads(CASES.read_text(encoding="utf-8"))

    def test_the_file_has_a_runner_for_each_section(self):
        self.assertEqual(set(self.cases) - {"about"}, set(SECTIONS))

    def test_every_case(self):
        for section, call in SECTIONS.items():
            self.assertTrue(self.cases[section], f"{section} has no cases")
            for case in self.cases[section]:
                expect = case["expect"]
                if section in RETURNS_BYTES and expect is not None:
                    expect = as_bytes(expect)
                shown = {k: v for k, v in case.items() if k != "chunk"}
                with self.subTest(section=section, case=shown):
                    self.assertEqual(call(case), expect)


if __name__ == "__main__":
    unittest.main()


def scanned_html_urls(html: bytes, prefix: str) -> bytes | None:
    """`prefix_html_urls` as the Rust crate writes it, a byte scan, line for line: the
    reference the regular-expression form is compared with."""
    attrs = [b"href", b"src", b"action", b"formaction"]
    prefix_bytes = prefix.encode()
    out, last, index = [], 0, 0
    while index < len(html):
        byte = html[index : index + 1]
        index += 1
        if byte not in (b" ", b"\t", b"\n", b"\x0c", b"\r"):
            continue
        for attr in attrs:
            end = index + len(attr)
            name = html[index:end]
            if len(name) != len(attr) or name.lower() != attr:
                continue
            if html[end : end + 1] != b"=" or html[end + 1 : end + 2] not in (b'"', b"'"):
                continue
            start = end + 2
            value = html[start:]
            root_relative = value[:1] == b"/" and value[1:2] != b"/"
            already = value.startswith(prefix_bytes) and value[len(prefix_bytes) :][:1] in (
                b"",
                b"/",
                b"?",
                b"#",
                b'"',
                b"'",
            )
            if root_relative and not already:
                out += [html[last:start], prefix_bytes]
                last = start
            index = start
            break
    if last == 0:
        return None
    out.append(html[last:])
    return b"".join(out)


class HtmlScanTest(unittest.TestCase):
    def test_the_fast_form_answers_as_the_byte_scan(self):
        tokens = [
            b" ",
            b"\t",
            b"\x0b",
            b"\n",
            b"href",
            b"HrEf",
            b"src",
            b"action",
            b"formaction",
            b"data-",
            b"=",
            b'"',
            b"'",
            b"/",
            b"//",
            b"/p",
            b"/p/",
            b"/P",
            b"?",
            b"#",
            b"x",
            b"<a",
            b">",
            b"\xe9",
        ]
        generator = random.Random(7)
        for _ in range(5000):
            html = b"".join(generator.choices(tokens, k=generator.randrange(1, 24)))
            for prefix in ("/p", "/proxy/a.p"):
                with self.subTest(html=html, prefix=prefix):
                    self.assertEqual(
                        rewrite.prefix_html_urls(html, prefix), scanned_html_urls(html, prefix)
                    )
