//! The generic behaviour, computed in the host. Used when a plugin fails or is disabled, so a
//! broken plugin degrades a service to "generic" instead of breaking it. The rules are the ones
//! the SDK's defaults use (both call `portico_rewrite`).

use super::{
    Header, HeaderEdits, Request, Response, ResponsePlan, Subprotocols, UpstreamRequest,
    UpstreamWebsocket,
};

/// The prefix stripped, the query kept, `x-forwarded-prefix` set.
pub fn on_request(req: &Request) -> UpstreamRequest {
    UpstreamRequest {
        path: req.path.clone(),
        query: req.query.clone(),
        headers: forwarded_prefix(req),
    }
}

/// As [`on_request`], the subprotocol list passed through.
pub fn on_websocket(req: &Request) -> UpstreamWebsocket {
    UpstreamWebsocket {
        path: req.path.clone(),
        query: req.query.clone(),
        protocols: Subprotocols::PassThrough,
        headers: forwarded_prefix(req),
    }
}

fn forwarded_prefix(req: &Request) -> HeaderEdits {
    HeaderEdits {
        set: vec![Header::new("x-forwarded-prefix", req.prefix.clone())],
        remove: Vec::new(),
    }
}

/// `location` kept under the prefix, cookie paths scoped to it, body untouched.
pub fn on_response(resp: &Response) -> ResponsePlan {
    let req = &resp.request;
    let mut edits = HeaderEdits::none();
    for header in resp.headers.iter().filter(|h| h.name == "location") {
        if let Some(fixed) =
            portico_rewrite::prefix_location(&header.value, &req.prefix, &req.public_host)
        {
            edits.set.push(Header::new("location", fixed));
        }
    }
    let cookies: Vec<&Header> = resp
        .headers
        .iter()
        .filter(|h| h.name == "set-cookie")
        .collect();
    let scoped: Vec<Option<String>> = cookies
        .iter()
        .map(|cookie| portico_rewrite::scope_cookie_path(&cookie.value, &req.prefix))
        .collect();
    if scoped.iter().any(Option::is_some) {
        for (cookie, fixed) in cookies.iter().zip(scoped) {
            edits.set.push(Header::new(
                "set-cookie",
                fixed.unwrap_or_else(|| cookie.value.clone()),
            ));
        }
    }
    ResponsePlan {
        headers: edits,
        rewrite_body: false,
    }
}
