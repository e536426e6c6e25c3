//! The generic behaviour, as functions a plugin can call from its own hooks.

use crate::{
    BodyRewrite, ChunkRewrite, Header, HeaderEdits, Request, Response, ResponsePlan, Subprotocols,
    UpstreamRequest, UpstreamWebsocket, rewrite,
};

/// The path below the prefix (or the whole path with `keep_prefix`), the query unchanged, and
/// `x-forwarded-prefix` when the prefix is stripped.
pub fn on_request(req: &Request, keep_prefix: bool) -> UpstreamRequest {
    UpstreamRequest {
        path: rewrite::upstream_path(&req.path, &req.prefix, keep_prefix),
        query: req.query.clone(),
        headers: forwarded_prefix(req, keep_prefix),
    }
}

/// The same path as [`on_request`], subprotocols passed through unchanged.
pub fn on_websocket(req: &Request, keep_prefix: bool) -> UpstreamWebsocket {
    UpstreamWebsocket {
        path: rewrite::upstream_path(&req.path, &req.prefix, keep_prefix),
        query: req.query.clone(),
        protocols: Subprotocols::PassThrough,
        headers: forwarded_prefix(req, keep_prefix),
    }
}

/// `x-forwarded-prefix: {prefix}` when the prefix is stripped; apps that honour it (NiceGUI,
/// Spring, ProxyFix) then build correct links. A kept prefix is not announced twice.
pub fn forwarded_prefix(req: &Request, keep_prefix: bool) -> HeaderEdits {
    let mut edits = HeaderEdits::none();
    if !keep_prefix {
        edits
            .set
            .push(Header::new("x-forwarded-prefix", req.prefix.clone()));
    }
    edits
}

/// `location` kept under the prefix and `set-cookie` paths scoped to it; no body rewrite.
pub fn on_response(resp: &Response) -> ResponsePlan {
    ResponsePlan {
        headers: response_headers(resp),
        body: BodyRewrite::Keep,
    }
}

/// [`on_response`]'s header edits, and the body rewritten whole when it is an HTML page: for
/// plugins whose framework writes root-relative URLs into its pages ([`prefix_html`]).
pub fn on_html_response(resp: &Response) -> ResponsePlan {
    ResponsePlan {
        headers: response_headers(resp),
        body: if media_type(resp) == "text/html" {
            BodyRewrite::Whole
        } else {
            BodyRewrite::Keep
        },
    }
}

/// A streamed chunk passed on unchanged: the default `rewrite-chunk`.
pub fn unchanged_chunk(chunk: Vec<u8>) -> ChunkRewrite {
    ChunkRewrite {
        output: chunk,
        held: 0,
        state: Vec::new(),
    }
}

/// One step of a streamed rewrite made of `rewrite`, a rewrite that works within a line or a
/// tag (as [`prefix_html`] does): `rewrite` gets the chunk up to its last line end or `>`
/// ([`rewrite::stream_cut`]), and the rest is held back for the next chunk. `rewrite`
/// returns `None` to leave its part unchanged. No state is kept.
///
/// ```
/// # use portico_plugin_sdk::{defaults, rewrite};
/// let step = defaults::rewrite_chunk_with(b"<a href=\"/x\">1</a>\n<img sr".to_vec(), false, |part| {
///     rewrite::prefix_html_urls(part, "/proxy/app")
/// });
/// assert_eq!(step.output, b"<a href=\"/proxy/app/x\">1</a>\n");
/// assert_eq!(step.held, 7);
/// ```
pub fn rewrite_chunk_with(
    mut chunk: Vec<u8>,
    last: bool,
    rewrite: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> ChunkRewrite {
    let cut = rewrite::stream_cut(&chunk, last);
    let held = chunk.len() - cut;
    let output = match rewrite(&chunk[..cut]) {
        Some(output) => output,
        None => {
            chunk.truncate(cut);
            chunk
        }
    };
    ChunkRewrite {
        output,
        held: u32::try_from(held).unwrap_or(u32::MAX),
        state: Vec::new(),
    }
}

/// An HTML page with its root-relative `href`, `src` and `action` URLs moved under the
/// prefix; `None` when none needed to move.
pub fn prefix_html(resp: &Response, body: &[u8]) -> Option<Vec<u8>> {
    rewrite::prefix_html_urls(body, &resp.request.prefix)
}

/// [`prefix_html`] as a streamed rewrite ([`rewrite_chunk_with`]): for pages larger than the
/// plugin's `max-rewrite-bytes`, which Portico streams through `rewrite-chunk`.
pub fn prefix_html_chunk(resp: &Response, chunk: Vec<u8>, last: bool) -> ChunkRewrite {
    rewrite_chunk_with(chunk, last, |part| prefix_html(resp, part))
}

/// The header edits of [`on_response`].
pub fn response_headers(resp: &Response) -> HeaderEdits {
    let req = &resp.request;
    let mut edits = HeaderEdits::none();
    for header in resp.headers.iter().filter(|h| h.name == "location") {
        if let Some(fixed) = rewrite::prefix_location(&header.value, &req.prefix, &req.public_host)
        {
            edits.set.push(Header::new("location", fixed));
        }
    }
    let cookies: Vec<&Header> = resp
        .headers
        .iter()
        .filter(|header| header.name == "set-cookie")
        .collect();
    let scoped: Vec<Option<String>> = cookies
        .iter()
        .map(|cookie| rewrite::scope_cookie_path(&cookie.value, &req.prefix))
        .collect();
    if scoped.iter().any(Option::is_some) {
        // `set` replaces every value of a name, so the unchanged cookies are sent again too.
        for (cookie, fixed) in cookies.iter().zip(scoped) {
            let value = fixed.unwrap_or_else(|| cookie.value.clone());
            edits.set.push(Header::new("set-cookie", value));
        }
    }
    edits
}

/// The response's media type (`text/html`), lower case, or empty.
pub fn media_type(resp: &Response) -> String {
    crate::header(&resp.headers, "content-type")
        .map(rewrite::media_type)
        .unwrap_or_default()
}
