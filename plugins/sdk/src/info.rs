//! A builder for [`PluginInfo`] with the generic defaults.

use crate::PluginInfo;

impl PluginInfo {
    /// Info with the generic defaults: no service types, no port or health path, prefix
    /// stripped, no un-prefixed paths claimed, no request headers read, `on-response` for
    /// `location` and `set-cookie`, no body rewriting.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            service_types: Vec::new(),
            default_port: None,
            health_path: None,
            keep_prefix: false,
            detect: Vec::new(),
            claim_prefixes: Vec::new(),
            request_headers: Vec::new(),
            response_headers: vec!["location".to_owned(), "set-cookie".to_owned()],
            rewrite_content_types: Vec::new(),
            max_rewrite_bytes: 0,
        }
    }

    /// The service types handled.
    pub fn service_types(mut self, types: &[&str]) -> Self {
        self.service_types = owned(types);
        self
    }

    /// The framework's default port.
    pub fn default_port(mut self, port: u16) -> Self {
        self.default_port = Some(port);
        self
    }

    /// The readiness path.
    pub fn health_path(mut self, path: &str) -> Self {
        self.health_path = Some(path.to_owned());
        self
    }

    /// Substrings of an image name or command that identify the framework.
    pub fn detect(mut self, hints: &[&str]) -> Self {
        self.detect = owned(hints);
        self
    }

    /// The un-prefixed path prefixes the plugin may claim (`/_stcore/`, `/static/`). Portico
    /// calls [`Plugin::claim`](crate::Plugin::claim) only for paths that start with one of
    /// them, and routes by claim only to services of plugins that declared a matching one.
    /// Each must start with `/`, be visible ASCII without `..`, `\`, `?` or `#`, and not be `/`
    /// alone; at most 32, of at most 256 bytes each.
    pub fn claim_prefixes(mut self, prefixes: &[&str]) -> Self {
        self.claim_prefixes = owned(prefixes);
        self
    }

    /// Request headers the plugin reads.
    pub fn request_headers(mut self, names: &[&str]) -> Self {
        self.request_headers = owned(names);
        self
    }

    /// Response headers that trigger `on-response`.
    pub fn response_headers(mut self, names: &[&str]) -> Self {
        self.response_headers = owned(names);
        self
    }

    /// Content types whose bodies may be rewritten, and the largest body to buffer.
    pub fn rewrite_bodies(mut self, content_types: &[&str], max_bytes: u32) -> Self {
        self.rewrite_content_types = owned(content_types);
        self.max_rewrite_bytes = max_bytes;
        self
    }
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}
