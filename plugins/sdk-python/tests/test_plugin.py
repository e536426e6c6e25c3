"""The `Plugin` defaults, `PluginInfo` and the helpers, with the cases of the Rust SDK's tests
and the host's fallback (which applies the same generic rules)."""

import unittest

from support import SDK  # noqa: F401  (first: puts the SDK on sys.path)

# isort: split
from portico_plugin import (
    BodyRewrite,
    ChunkRewrite,
    Header,
    HeaderEdits,
    OrphanRequest,
    Plugin,
    PluginInfo,
    Request,
    Service,
    SubprotocolsPassThrough,
    claim_by_prefix,
    defaults,
    header,
    media_type,
    rewrite,
    testing,
)


class Sample(Plugin):
    def info(self) -> PluginInfo:
        return PluginInfo("sample", "1.0.0", service_types=["sample"])


class KeepsPrefix(Sample):
    KEEP_PREFIX = True


def notebook_request() -> Request:
    """The request of the host fallback's tests."""
    return Request(
        method="GET",
        path="/lab/tree",
        query="a=1",
        prefix="/proxy/nb",
        public_host="portal.example",
        scheme="http",
        headers=[],
        service=Service(
            id="nb", service_type="jupyter", labels=[], upstream="http://127.0.0.1:8888"
        ),
    )


def set_headers(edits: HeaderEdits) -> list[tuple[str, str]]:
    return [(h.name, h.value) for h in edits.set]


class PluginInfoTest(unittest.TestCase):
    def test_defaults_are_the_generic_ones(self):
        info = PluginInfo("sample", "1.0.0")
        self.assertEqual(info.service_types, [])
        self.assertIsNone(info.default_port)
        self.assertIsNone(info.health_path)
        self.assertFalse(info.keep_prefix)
        self.assertEqual(info.detect, [])
        self.assertEqual(info.claim_prefixes, [])
        self.assertEqual(info.request_headers, [])
        self.assertEqual(info.response_headers, ["location", "set-cookie"])
        self.assertEqual(info.rewrite_content_types, [])
        self.assertEqual(info.max_rewrite_bytes, 0)

    def test_defaults_are_not_shared_between_infos(self):
        first = PluginInfo("a", "1")
        first.response_headers.append("x")
        self.assertEqual(PluginInfo("b", "1").response_headers, ["location", "set-cookie"])

    def test_a_plugin_must_describe_itself(self):
        class Nameless(Plugin):
            pass

        with self.assertRaises(TypeError):
            Nameless()


class DefaultHooksTest(unittest.TestCase):
    def test_the_records_drive_the_default_hooks(self):
        req = testing.request("sample", "/items", query="page=2")
        upstream = Sample().on_request(req)
        self.assertEqual(upstream.path, "/items")
        self.assertEqual(upstream.query, "page=2")
        self.assertEqual(header(upstream.headers.set, "x-forwarded-prefix"), "/proxy/app")
        plan = Sample().on_response(testing.response(req, 302, headers=[("Location", "/login")]))
        self.assertEqual(header(plan.headers.set, "location"), "/proxy/app/login")
        self.assertEqual(plan.body, BodyRewrite.KEEP)
        self.assertEqual(Sample().claim(testing.orphan("/static/x.js")), 0)

    def test_strips_the_prefix_and_announces_it(self):
        upstream = Sample().on_request(notebook_request())
        self.assertEqual(upstream.path, "/lab/tree")
        self.assertEqual(upstream.query, "a=1")
        self.assertEqual(set_headers(upstream.headers), [("x-forwarded-prefix", "/proxy/nb")])
        self.assertEqual(upstream.headers.remove, [])

    def test_keeps_the_prefix_for_plugins_that_keep_it(self):
        socket = KeepsPrefix().on_websocket(notebook_request(), ["a", "b"])
        self.assertEqual(socket.path, "/proxy/nb/lab/tree")
        self.assertEqual(socket.query, "a=1")
        self.assertEqual(socket.headers.set, [])
        self.assertEqual(socket.protocols, SubprotocolsPassThrough())
        self.assertEqual(KeepsPrefix().on_request(notebook_request()).path, "/proxy/nb/lab/tree")

    def test_websockets_get_the_request_path_and_pass_protocols_through(self):
        socket = Sample().on_websocket(notebook_request(), ["v1.chat"])
        self.assertEqual(socket.path, "/lab/tree")
        self.assertIsInstance(socket.protocols, SubprotocolsPassThrough)
        self.assertEqual(set_headers(socket.headers), [("x-forwarded-prefix", "/proxy/nb")])

    def test_locations_on_the_public_host_stay_under_the_prefix(self):
        req = testing.request("sample", "/")
        for location, fixed in [
            ("/login", "/proxy/app/login"),
            ("http://localhost:8080/items/", "http://localhost:8080/proxy/app/items/"),
        ]:
            plan = Sample().on_response(
                testing.response(req, 302, headers=[("location", location)])
            )
            self.assertEqual(set_headers(plan.headers), [("location", fixed)])
        for location in ["/proxy/app/x", "https://elsewhere.example/", "next"]:
            plan = Sample().on_response(
                testing.response(req, 302, headers=[("location", location)])
            )
            self.assertEqual(plan.headers, HeaderEdits(), location)

    def test_cookies_are_scoped_and_all_sent_again_when_one_changes(self):
        req = testing.request("sample", "/")
        cookies = [("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2; HttpOnly")]
        plan = Sample().on_response(testing.response(req, 200, headers=cookies))
        self.assertEqual(
            set_headers(plan.headers),
            [("set-cookie", "a=1; Path=/proxy/app"), ("set-cookie", "b=2; HttpOnly")],
        )
        unchanged = [("set-cookie", "b=2; HttpOnly"), ("set-cookie", "c=3; Path=/proxy/app")]
        plan = Sample().on_response(testing.response(req, 200, headers=unchanged))
        self.assertEqual(plan.headers, HeaderEdits())

    def test_bodies_are_left_alone(self):
        resp = testing.response(
            testing.request("sample", "/"), 200, headers=[("content-type", "text/html")]
        )
        self.assertEqual(Sample().on_response(resp).body, BodyRewrite.KEEP)
        self.assertIsNone(Sample().rewrite_body(resp, b'<a href="/x">'))
        step = Sample().rewrite_chunk(resp, b'<a href="/x">', b"", False)
        self.assertEqual(step, ChunkRewrite(output=b'<a href="/x">', held=0, state=b""))


class DefaultsTest(unittest.TestCase):
    def page(self, content_type: str):
        return testing.response(
            testing.request("sample", "/"), 200, headers=[("content-type", content_type)]
        )

    def test_html_responses_are_rewritten_whole(self):
        self.assertEqual(
            defaults.on_html_response(self.page("Text/HTML; charset=utf-8")).body,
            BodyRewrite.WHOLE,
        )
        self.assertEqual(defaults.on_html_response(self.page("text/css")).body, BodyRewrite.KEEP)

    def test_media_type_is_empty_without_a_content_type(self):
        self.assertEqual(media_type(self.page("Text/HTML; charset=utf-8")), "text/html")
        self.assertEqual(media_type(testing.response(testing.request("s", "/"), 200)), "")

    def test_prefix_html_moves_root_relative_urls(self):
        resp = self.page("text/html")
        self.assertEqual(
            defaults.prefix_html(resp, b'<a href="/about">'), b'<a href="/proxy/app/about">'
        )
        self.assertIsNone(defaults.prefix_html(resp, b"<p>no links</p>"))

    def test_a_streamed_rewrite_holds_what_follows_the_last_line_or_tag(self):
        step = defaults.rewrite_chunk_with(
            b'<a href="/x">1</a>\n<img sr',
            False,
            lambda part: rewrite.prefix_html_urls(part, "/proxy/app"),
        )
        self.assertEqual(step, ChunkRewrite(b'<a href="/proxy/app/x">1</a>\n', 7, b""))

    def test_a_streamed_rewrite_passes_its_part_unchanged_on_none(self):
        seen = []

        def rewrite_part(part):
            seen.append(part)

        step = defaults.rewrite_chunk_with(b"line one\nline tw", False, rewrite_part)
        self.assertEqual(seen, [b"line one\n"])
        self.assertEqual(step, ChunkRewrite(b"line one\n", 7, b""))

    def test_the_last_chunk_is_rewritten_whole(self):
        step = defaults.prefix_html_chunk(self.page("text/html"), b'<img src="/a.png', True)
        self.assertEqual(step, ChunkRewrite(b'<img src="/proxy/app/a.png', 0, b""))

    def test_a_page_streamed_in_pieces_comes_out_as_rewritten_whole(self):
        resp = self.page("text/html")
        page = b'<html>\n<a href="/one">1</a> <img src="/two.png">\n<form action="/three">'
        whole = defaults.prefix_html(resp, page)
        for size in (1, 5, 16, len(page)):
            with self.subTest(size=size):
                held, out = b"", []
                pieces = [page[at : at + size] for at in range(0, len(page), size)]
                for index, piece in enumerate(pieces):
                    chunk = held + piece
                    step = defaults.prefix_html_chunk(resp, chunk, index == len(pieces) - 1)
                    out.append(step.output)
                    held = chunk[len(chunk) - step.held :] if step.held else b""
                self.assertEqual(b"".join(out), whole)
                self.assertEqual(held, b"")


class HelpersTest(unittest.TestCase):
    def test_claims_come_from_the_first_matching_prefix(self):
        claims = [("/_stcore/", 100), ("/static/", 40)]
        self.assertEqual(claim_by_prefix(claims, "/static/js/main.js"), 40)
        self.assertEqual(claim_by_prefix(claims, "/_stcore/health"), 100)
        self.assertEqual(claim_by_prefix(claims, "/other"), 0)
        self.assertEqual(claim_by_prefix([], "/static/x"), 0)

    def test_header_is_the_first_value_of_a_name(self):
        headers = [Header("a", "1"), Header("b", "2"), Header("a", "3")]
        self.assertEqual(header(headers, "a"), "1")
        self.assertIsNone(header(headers, "c"))
        self.assertIsNone(header(headers, "A"))

    def test_testing_records_lower_header_names(self):
        req = testing.request(
            "t", "/p", headers=[("Accept", "text/html")], labels=[("portico.keep_prefix", "true")]
        )
        self.assertEqual(req.headers, [Header("accept", "text/html")])
        self.assertEqual(req.service.labels, [("portico.keep_prefix", "true")])
        self.assertEqual(testing.orphan("/x"), OrphanRequest("GET", "/x", None))


if __name__ == "__main__":
    unittest.main()
