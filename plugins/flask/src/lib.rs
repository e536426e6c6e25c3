//! The Flask plugin.
//!
//! Without `ProxyFix`, Flask builds `url_for` links and redirects from the app's root, so they
//! leave the prefix. The plugin announces the prefix (`x-forwarded-prefix`, for apps that do use
//! `ProxyFix`), keeps `Location` under it (the SDK default), and moves root-relative links in
//! HTML pages under it.

use portico_plugin_sdk::{
    ChunkRewrite, Plugin, PluginInfo, Response, ResponsePlan, defaults, export_plugin,
};

/// The Flask handler.
#[derive(Debug)]
pub struct Flask;

/// The largest page rewritten.
const MAX_PAGE: u32 = 4 * 1024 * 1024;

impl Plugin for Flask {
    fn info() -> PluginInfo {
        PluginInfo::new("flask", env!("CARGO_PKG_VERSION"))
            .service_types(&["flask"])
            .default_port(5000)
            .detect(&["flask run", "flask", "gunicorn", "waitress"])
            .rewrite_bodies(&["text/html"], MAX_PAGE)
    }

    fn on_response(resp: Response) -> ResponsePlan {
        defaults::on_html_response(&resp)
    }

    fn rewrite_body(resp: Response, body: Vec<u8>) -> Option<Vec<u8>> {
        defaults::prefix_html(&resp, &body)
    }

    fn rewrite_chunk(resp: Response, chunk: Vec<u8>, _: Vec<u8>, last: bool) -> ChunkRewrite {
        defaults::prefix_html_chunk(&resp, chunk, last)
    }
}

export_plugin!(Flask);
