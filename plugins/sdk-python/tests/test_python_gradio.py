"""The Python Gradio plugin (`tests/fixtures/python-gradio`), a plugin written with this SDK,
answers as the bundled Rust one does: the cases of `plugins/gradio/src/lib.rs`."""

import importlib.util
import unittest

from support import PYTHON_GRADIO  # first: puts the SDK on sys.path

# isort: split
from portico_plugin import BodyRewrite, Request, Service, header, testing


def load_app():
    spec = importlib.util.spec_from_file_location("python_gradio_app", PYTHON_GRADIO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = load_app()
gradio = app.Gradio()


def request(path: str) -> Request:
    return Request(
        method="POST",
        path=path,
        query=None,
        prefix="/proxy/g",
        public_host="portal.example:8080",
        scheme="https",
        headers=[],
        service=Service(id="g", service_type="gradio", labels=[], upstream="http://127.0.0.1:7860"),
    )


class PythonGradioTest(unittest.TestCase):
    def test_it_is_exported_as_the_component_expects(self):
        self.assertEqual(app.WitWorld.__name__, "WitWorld")

    def test_info_is_the_bundled_plugins(self):
        info = gradio.info()
        self.assertEqual((info.name, info.version), ("gradio", "0.1.0"))
        self.assertEqual(info.service_types, ["gradio"])
        self.assertEqual(info.default_port, 7860)
        self.assertEqual(info.health_path, "/gradio_api/startup-events")
        self.assertEqual(info.detect, ["gradio"])
        self.assertEqual(info.request_headers, [])
        self.assertEqual(info.response_headers, ["location", "set-cookie"])
        self.assertEqual(info.rewrite_content_types, ["text/html"])
        self.assertEqual(info.max_rewrite_bytes, 16 * 1024 * 1024)

    def test_forwarded_host_carries_the_prefix(self):
        self.assertEqual(
            app.forwarded_host("portal.example:8080", "/proxy/g"), "portal.example:8080/proxy/g"
        )
        self.assertEqual(
            app.forwarded_host("portal.example", "/proxy/g/"), "portal.example/proxy/g"
        )
        self.assertIsNone(app.forwarded_host("", "/proxy/g"))

    def test_requests_carry_the_public_root(self):
        upstream = gradio.on_request(request("/gradio_api/queue/join"))
        self.assertEqual(upstream.path, "/gradio_api/queue/join")
        self.assertEqual(
            header(upstream.headers.set, "x-forwarded-host"), "portal.example:8080/proxy/g"
        )
        self.assertEqual(header(upstream.headers.set, "x-forwarded-prefix"), "/proxy/g")
        socket = gradio.on_websocket(request("/ws"), [])
        self.assertEqual(
            header(socket.headers.set, "x-forwarded-host"), "portal.example:8080/proxy/g"
        )

    def test_manifest_link_moves_under_the_prefix(self):
        page = (
            b'<base href="./" /><link rel="manifest" href="/manifest.json" />\n'
            b'<script type="module" crossorigin src="./assets/index-DphvyggB.js"></script>'
        )
        resp = testing.response(
            testing.request("gradio", "/"), 200, headers=[("content-type", "text/html")]
        )
        self.assertEqual(gradio.on_response(resp).body, BodyRewrite.WHOLE)
        out = gradio.rewrite_body(resp, page).decode()
        self.assertIn('href="/proxy/app/manifest.json"', out)
        self.assertIn('src="./assets/index-DphvyggB.js"', out)
        self.assertIn('<base href="./"', out)
        step = gradio.rewrite_chunk(resp, page, b"", True)
        self.assertEqual(step.output.decode(), out)

    def test_claims_gradio_paths(self):
        for path, score in [
            ("/gradio_api/queue/data", 100),
            ("/gradio_api/heartbeat/abc", 100),
            ("/theme.css", 60),
            ("/static/img/logo.svg", 20),
            ("/assets/index.js", 20),
            ("/_stcore/health", 0),
            ("/", 0),
        ]:
            self.assertEqual(gradio.claim(testing.orphan(path)), score, path)

    def test_declares_every_prefix_it_claims(self):
        declared = gradio.info().claim_prefixes
        self.assertEqual(
            declared, ["/gradio_api/", "/theme.css", "/static/", "/assets/", "/manifest.json"]
        )
        for prefix in declared:
            self.assertGreater(gradio.claim(testing.orphan(prefix)), 0, prefix)


if __name__ == "__main__":
    unittest.main()
