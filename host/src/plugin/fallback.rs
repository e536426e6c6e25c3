//! The generic behaviour, computed in the host. Used when a plugin fails or is disabled, so a
//! broken plugin degrades a service to "generic" instead of breaking it. The rules are the ones
//! the SDK's defaults use (both call `portico_rewrite`).

use super::{
    BodyRewrite, Header, HeaderEdits, Request, Response, ResponsePlan, Subprotocols,
    UpstreamRequest, UpstreamWebsocket,
};

/// The prefix stripped (or kept, for a plugin that keeps it), the query kept, and
/// `x-forwarded-prefix` set when the prefix is stripped.
pub fn on_request(req: &Request, keep_prefix: bool) -> UpstreamRequest {
    UpstreamRequest {
        path: portico_rewrite::upstream_path(&req.path, &req.prefix, keep_prefix),
        query: req.query.clone(),
        headers: forwarded_prefix(req, keep_prefix),
    }
}

/// As [`on_request`], the subprotocol list passed through.
pub fn on_websocket(req: &Request, keep_prefix: bool) -> UpstreamWebsocket {
    UpstreamWebsocket {
        path: portico_rewrite::upstream_path(&req.path, &req.prefix, keep_prefix),
        query: req.query.clone(),
        protocols: Subprotocols::PassThrough,
        headers: forwarded_prefix(req, keep_prefix),
    }
}

fn forwarded_prefix(req: &Request, keep_prefix: bool) -> HeaderEdits {
    let mut edits = HeaderEdits::none();
    if !keep_prefix {
        edits
            .set
            .push(Header::new("x-forwarded-prefix", req.prefix.clone()));
    }
    edits
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
        body: BodyRewrite::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Service;

    fn request() -> Request {
        Request {
            method: "GET".to_owned(),
            path: "/lab/tree".to_owned(),
            query: Some("a=1".to_owned()),
            prefix: "/proxy/nb".to_owned(),
            public_host: "portal.example".to_owned(),
            scheme: "http".to_owned(),
            headers: Vec::new(),
            service: Service {
                id: "nb".to_owned(),
                service_type: "jupyter".to_owned(),
                labels: Vec::new(),
                upstream: "http://127.0.0.1:8888".to_owned(),
            },
        }
    }

    #[test]
    fn strips_the_prefix_and_announces_it() {
        let plan = on_request(&request(), false);
        assert_eq!(plan.path, "/lab/tree");
        assert_eq!(plan.query.as_deref(), Some("a=1"));
        let set: Vec<(&str, &str)> = plan
            .headers
            .set
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(set, [("x-forwarded-prefix", "/proxy/nb")]);
    }

    #[test]
    fn keeps_the_prefix_for_plugins_that_keep_it() {
        let plan = on_websocket(&request(), true);
        assert_eq!(plan.path, "/proxy/nb/lab/tree");
        assert!(plan.headers.set.is_empty());
        assert!(matches!(plan.protocols, Subprotocols::PassThrough));
    }
}
