//! Records for unit tests of a plugin's hooks, run natively (`cargo test`) without Portico:
//! a request for service `app` of a type under `/proxy/app`, a response to it, an un-prefixed
//! request, each adjustable with `with_*` methods.
//!
//! ```
//! use portico_plugin_sdk::testing;
//!
//! let req = testing::request("myframework", "/page")
//!     .with_header("accept", "text/html")
//!     .with_label("portico.keep_prefix", "true");
//! assert_eq!(req.prefix, "/proxy/app");
//! let resp = testing::response(req, 302).with_header("location", "/login");
//! assert_eq!(resp.status, 302);
//! ```

use crate::{Header, OrphanRequest, Request, Response, Service};

/// The id of the service the records describe: the prefix is `/proxy/app`.
pub const SERVICE_ID: &str = "app";

/// A `GET` of `path` (below the prefix) for a service of `service_type`, from a browser at
/// `http://localhost:8080`, with no headers.
pub fn request(service_type: &str, path: &str) -> Request {
    Request {
        method: "GET".to_owned(),
        path: path.to_owned(),
        query: None,
        prefix: format!("/proxy/{SERVICE_ID}"),
        public_host: "localhost:8080".to_owned(),
        scheme: "http".to_owned(),
        headers: Vec::new(),
        service: Service {
            id: SERVICE_ID.to_owned(),
            service_type: service_type.to_owned(),
            labels: Vec::new(),
            upstream: "http://127.0.0.1:8000".to_owned(),
        },
    }
}

/// The upstream's answer `status` to `request`, with no headers.
pub fn response(request: Request, status: u16) -> Response {
    Response {
        request,
        status,
        headers: Vec::new(),
    }
}

/// A `GET` of `path` that arrived without any prefix, as the `claim` hook sees it.
pub fn orphan(path: &str) -> OrphanRequest {
    OrphanRequest {
        method: "GET".to_owned(),
        path: path.to_owned(),
        query: None,
    }
}

impl Request {
    /// Adds a request header (names are lower case, as Portico passes them).
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push(Header::new(name.to_ascii_lowercase(), value));
        self
    }

    /// Sets the method.
    #[must_use]
    pub fn with_method(mut self, method: &str) -> Self {
        self.method = method.to_owned();
        self
    }

    /// Sets the query (without `?`).
    #[must_use]
    pub fn with_query(mut self, query: &str) -> Self {
        self.query = Some(query.to_owned());
        self
    }

    /// Adds a service label (`portico.*` labels of a container, or a file service's labels).
    #[must_use]
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.service.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets the public host and scheme the client used.
    #[must_use]
    pub fn with_public_host(mut self, scheme: &str, host: &str) -> Self {
        self.scheme = scheme.to_owned();
        self.public_host = host.to_owned();
        self
    }
}

impl Response {
    /// Adds a response header (names are lower case, as Portico passes them).
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push(Header::new(name.to_ascii_lowercase(), value));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Plugin, PluginInfo, header};

    struct Sample;

    impl Plugin for Sample {
        fn info() -> PluginInfo {
            PluginInfo::new("sample", "1.0.0").service_types(&["sample"])
        }
    }

    #[test]
    fn the_records_drive_the_default_hooks() {
        let req = request("sample", "/items").with_query("page=2");
        let upstream = Sample::on_request(req.clone());
        assert_eq!(upstream.path, "/items");
        assert_eq!(upstream.query.as_deref(), Some("page=2"));
        assert_eq!(
            header(&upstream.headers.set, "x-forwarded-prefix"),
            Some("/proxy/app")
        );
        let plan = Sample::on_response(response(req, 302).with_header("Location", "/login"));
        assert_eq!(
            header(&plan.headers.set, "location"),
            Some("/proxy/app/login")
        );
        assert_eq!(Sample::claim(orphan("/static/x.js")), 0);
    }
}
