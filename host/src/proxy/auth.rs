//! Forward authentication, the phase every request to a service passes before any plugin hook
//! or upstream connection: the auth service (oauth2-proxy, Authelia, ...) is asked who the
//! caller is, and the service's [`Access`] whether that caller may open it.
//!
//! The question is a subrequest to `auth.forward_url` with the client's method, its credentials
//! (`auth.forward_headers`) and `X-Forwarded-Method/-Proto/-Host/-Uri/-For` computed by Portico,
//! on the serving thread's pooled upstream client. 2xx lets the request through with the
//! answer's `auth.copy_headers`; 401 asks for a sign-in (a redirect for a browser's page, a 401
//! otherwise); 403 refuses; no answer in `auth.timeout_ms`, or any other answer, is a 503: the
//! door never opens because the auth service is down.

mod cache;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::Authority;
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse as _, Response};
use futures_util::StreamExt as _;

use super::headers::{self, ClientView};
use super::retry::{Failure, chain};
use super::{Live, Proxy, ProxyError, UpstreamClient};
use crate::config::{AuthConfig, parse_forward_url};
use crate::metrics::AuthOutcome;
use crate::registry::{Access, Service};

use cache::Cache;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The most of an answer's body read (and dropped) so that its connection can be reused; a
/// longer body closes the connection instead.
const MAX_ANSWER_BODY: usize = 64 << 10;

/// What the subrequest is built from: the head of the client's request. (Its body is not
/// `Sync`, so the request itself is not held across the wait for the answer.)
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl<'a> Head<'a> {
    pub fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
        }
    }
}

/// Who the auth service said the caller is.
#[derive(Debug)]
pub struct Identity {
    /// The answer's headers named in `auth.copy_headers`, set on the upstream request.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The value of `auth.user_header`, when the answer had exactly one.
    user: Option<HeaderValue>,
    /// The answer's `Set-Cookie` headers (a refreshed session), passed on to the client with
    /// the response; never replayed from the cache.
    set_cookies: Vec<HeaderValue>,
}

impl Identity {
    /// Adds the cookies the auth service set in this answer to the client's response.
    pub fn pass_cookies(&self, response: &mut Response) {
        for cookie in &self.set_cookies {
            response
                .headers_mut()
                .append(header::SET_COOKIE, cookie.clone());
        }
    }

    /// True when the answer set cookies for the client.
    pub fn sets_cookies(&self) -> bool {
        !self.set_cookies.is_empty()
    }

    /// The headers to set on the upstream request.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The user the auth service named, when it named one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().and_then(|user| user.to_str().ok())
    }
}

/// What Portico knows of a caller, for deciding what they may open or see.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Forward authentication is off.
    Anyone,
    /// The auth service accepted the caller.
    Known(Arc<Identity>),
    /// The auth service did not accept the caller (or was not asked: nothing needed it).
    Anonymous,
}

impl Caller {
    /// Whether this caller may open a service with `access`. A user list without
    /// authentication (possible only from Docker labels: the file refuses it) lets nobody in.
    pub fn may_open(&self, access: &Access) -> bool {
        match (self, access) {
            (_, Access::Open) => true,
            (Self::Anyone | Self::Known(_), Access::SignedIn) => true,
            (Self::Known(identity), Access::Users(users)) => identity
                .user
                .as_ref()
                .is_some_and(|user| users.iter().any(|u| u.as_bytes() == user.as_bytes())),
            (Self::Anyone, Access::Users(_)) | (Self::Anonymous, _) => false,
        }
    }
}

/// Why the auth service did not let a caller through.
#[derive(Debug)]
pub enum Refusal {
    /// 401: the caller must sign in; with the auth service's `WWW-Authenticate` challenge,
    /// which a program's 401 passes on.
    Unauthenticated(Option<HeaderValue>),
    /// 403: the auth service refused the caller.
    Denied,
    /// No usable answer; the text says why, for the log.
    Unavailable(String),
}

/// The `[auth]` section, parsed once per configuration.
#[derive(Debug)]
pub struct Auth {
    /// As written, to tell whether a reload changed it.
    config: AuthConfig,
    forward_url: Uri,
    signin: Option<SignIn>,
    user_header: HeaderName,
    copied: Box<[HeaderName]>,
    /// Client headers removed from every request: the copied ones and the user header.
    reserved: Box<[HeaderName]>,
    forwarded: Box<[HeaderName]>,
    strip_cookies: Box<[CookieName]>,
    timeout: Duration,
    cache: Option<Cache<Arc<Identity>>>,
}

/// `auth.signin_url`.
#[derive(Debug)]
struct SignIn {
    url: String,
    /// An absolute URL (on another host): `rd` is then absolute too, so the auth service can
    /// send the browser back; for a path, `rd` is a path on the same host.
    absolute: bool,
}

/// An entry of `auth.strip_cookies`.
#[derive(Debug)]
struct CookieName {
    name: String,
    prefix: bool,
}

impl CookieName {
    fn matches(&self, name: &str) -> bool {
        if self.prefix {
            name.starts_with(&self.name)
        } else {
            name == self.name
        }
    }
}

/// A header name the configuration validated.
fn name(text: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(text.as_bytes()).ok()
}

impl Auth {
    /// The parsed section, or `None` when forward authentication is off.
    pub fn new(config: &AuthConfig) -> Option<Arc<Self>> {
        // Validation has parsed every value; one that does not parse here is left out.
        let forward_url = parse_forward_url(config.forward_url.as_deref()?).ok()?;
        let user_header = name(&config.user_header)?;
        let copied: Box<[HeaderName]> = config
            .copied_headers()
            .iter()
            .filter_map(|text| name(text))
            .collect();
        let mut reserved = copied.to_vec();
        if !reserved.contains(&user_header) {
            reserved.push(user_header.clone());
        }
        let cache =
            (config.cache_ms > 0).then(|| Cache::new(config.cache_ttl(), config.cache_size));
        Some(Arc::new(Self {
            config: config.clone(),
            forward_url,
            signin: config.signin_url.as_ref().map(|url| SignIn {
                url: url.clone(),
                absolute: !url.starts_with('/'),
            }),
            user_header,
            copied,
            reserved: reserved.into(),
            forwarded: config
                .forward_headers
                .iter()
                .filter_map(|text| name(text))
                .collect(),
            strip_cookies: config
                .strip_cookies
                .iter()
                .map(|text| match text.strip_suffix('*') {
                    Some(prefix) => CookieName {
                        name: prefix.to_owned(),
                        prefix: true,
                    },
                    None => CookieName {
                        name: text.clone(),
                        prefix: false,
                    },
                })
                .collect(),
            timeout: config.timeout(),
            cache,
        }))
    }

    /// The section it was parsed from.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Who the caller of `request` is, from the cache or by asking the auth service.
    async fn identify(
        &self,
        proxy: &Proxy,
        request: Head<'_>,
        view: &ClientView,
        trust: bool,
    ) -> Result<Arc<Identity>, Refusal> {
        let key = self
            .cache
            .as_ref()
            .and_then(|_| cache::key(&self.forwarded, request.headers));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(identity) = cache.get(key, Instant::now())
        {
            proxy.metrics.auth_cache_hit();
            return Ok(identity);
        }
        let asked =
            tokio::time::timeout(self.timeout, self.ask(proxy.client(), request, view, trust));
        let answer = match asked.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(detail)) => return Err(Refusal::Unavailable(detail)),
            Err(_) => {
                return Err(Refusal::Unavailable(format!(
                    "no answer within {:?}",
                    self.timeout
                )));
            }
        };
        match answer.status {
            status if status.is_success() => {
                let identity = Arc::new(self.identity(&answer.headers));
                if let (Some(cache), Some(key)) = (&self.cache, key) {
                    let cached = match identity.sets_cookies() {
                        true => Arc::new(Identity {
                            headers: identity.headers.clone(),
                            user: identity.user.clone(),
                            set_cookies: Vec::new(),
                        }),
                        false => Arc::clone(&identity),
                    };
                    cache.insert(key, cached, Instant::now());
                }
                Ok(identity)
            }
            StatusCode::UNAUTHORIZED => Err(Refusal::Unauthenticated(
                answer.headers.get(header::WWW_AUTHENTICATE).cloned(),
            )),
            StatusCode::FORBIDDEN => Err(Refusal::Denied),
            other => Err(Refusal::Unavailable(format!(
                "unexpected answer {other} (2xx, 401 or 403 expected)"
            ))),
        }
    }

    /// Sends the subrequest and reads the answer's head. A kept-alive connection that the auth
    /// service closed as the question went out is asked again once, on another: the question
    /// changes nothing.
    async fn ask(
        &self,
        client: &UpstreamClient,
        request: Head<'_>,
        view: &ClientView,
        trust: bool,
    ) -> Result<axum::http::response::Parts, String> {
        let mut again = true;
        loop {
            let question = self.question(request, view, trust);
            match client.request(question).await {
                Ok(response) => {
                    super::connector::Uses::count(response.extensions());
                    let (parts, body) = response.into_parts();
                    drain(Body::new(body)).await;
                    return Ok(parts);
                }
                Err(err) => {
                    let failure = Failure::of(&err);
                    if !(again && failure.reused) {
                        return Err(chain(&err));
                    }
                    again = false;
                }
            }
        }
    }

    /// The subrequest: the client's method and credentials, and the `X-Forwarded-*` headers
    /// Portico computes (a client's `X-Forwarded-For` only with `trust`).
    fn question(&self, request: Head<'_>, view: &ClientView, trust: bool) -> Request<Body> {
        let client = request.headers;
        let mut headers = HeaderMap::with_capacity(self.forwarded.len() + 5);
        for name in &self.forwarded {
            for value in client.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if trust {
            for value in client.get_all(&headers::X_FORWARDED_FOR) {
                headers.append(headers::X_FORWARDED_FOR, value.clone());
            }
        }
        headers::set_forwarded(&mut headers, view);
        headers.insert(X_FORWARDED_METHOD, method_value(request.method));
        if let Ok(uri) = HeaderValue::from_str(path_and_query(request.uri)) {
            headers.insert(X_FORWARDED_URI, uri);
        }
        let mut question = Request::new(Body::empty());
        *question.method_mut() = request.method.clone();
        *question.uri_mut() = self.forward_url.clone();
        *question.headers_mut() = headers;
        question
    }

    /// The identity a positive answer describes.
    fn identity(&self, answer: &HeaderMap) -> Identity {
        let mut headers = Vec::with_capacity(self.copied.len());
        for name in &self.copied {
            for value in answer.get_all(name) {
                headers.push((name.clone(), value.clone()));
            }
        }
        let mut users = answer.get_all(&self.user_header).iter();
        let user = match (users.next(), users.next()) {
            (Some(user), None) => Some(user.clone()),
            _ => None,
        };
        let set_cookies = answer.get_all(header::SET_COOKIE).iter().cloned().collect();
        Identity {
            headers,
            user,
            set_cookies,
        }
    }

    /// Removes what a client may not send upstream: headers named like those the auth service
    /// grants (no spoofed `X-Auth-Request-User`), and the auth service's own cookies.
    fn sanitize(&self, headers: &mut HeaderMap) {
        for name in &self.reserved {
            headers.remove(name);
        }
        if !self.strip_cookies.is_empty() {
            headers::remove_cookies(headers, |name| {
                self.strip_cookies.iter().any(|cookie| cookie.matches(name))
            });
        }
    }

    /// Where a browser that must sign in is sent: `auth.signin_url` with the page it asked for
    /// as `rd`, or `None` without a sign-in URL.
    fn signin_location(&self, uri: &Uri, view: &ClientView) -> Option<String> {
        let signin = self.signin.as_ref()?;
        let target = path_and_query(uri);
        let rd = match signin.absolute && is_authority(&view.host) {
            true => format!("{}://{}{target}", view.scheme, view.host),
            false => target.to_owned(),
        };
        let separator = match signin.url.find('?') {
            None => "?",
            Some(_) if signin.url.ends_with(['?', '&']) => "",
            Some(_) => "&",
        };
        let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        Some(format!("{}{separator}rd={rd}", signin.url))
    }
}

/// The path and query of a request target (an HTTP/2 request's URI is absolute).
fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |target| target.as_str())
}

/// True for a host (and port) that is only that: `rd` is built from it, so a value that could
/// carry a path or user information is not used.
fn is_authority(host: &str) -> bool {
    !host.is_empty() && !host.contains('@') && host.parse::<Authority>().is_ok()
}

/// `X-Forwarded-Method`, without an allocation for the standard methods.
fn method_value(method: &Method) -> HeaderValue {
    let known = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => return HeaderValue::from_str(method.as_str()).unwrap_or(HeaderValue::from_static("")),
    };
    HeaderValue::from_static(known)
}

/// Reads an answer's body to its end (up to [`MAX_ANSWER_BODY`]), so that the connection goes
/// back to the pool; what it says is not used.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > MAX_ANSWER_BODY {
            return;
        }
    }
}

/// True for a request whose refusal should be a sign-in page: a browser (its `Accept` names
/// HTML) loading a page (GET or HEAD, not a WebSocket). Scripts, `fetch` and WebSockets get a
/// 401 they can act on.
fn wants_signin(request: &Request<Body>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && headers::wants_html(request.headers())
        && !super::websocket::is_upgrade(request)
}

/// Whether the auth phase has anything to do for a request to `service`: forward
/// authentication is on, or the service names users (which then nobody is).
pub(super) fn applies(live: &Live, service: &Service) -> bool {
    live.auth.is_some() || !Caller::Anyone.may_open(&service.access)
}

/// The auth phase of a request for `service`: who the caller is, whether they may open the
/// service, and the client's headers that may not go upstream removed. The identity (when the
/// auth service was asked) comes back for the upstream request; a refusal comes back as the
/// client's answer.
pub(super) async fn admit(
    proxy: &Proxy,
    live: &Live,
    service: &Service,
    request: &mut Request<Body>,
    view: &ClientView,
) -> Result<Option<Arc<Identity>>, Response> {
    let html = headers::wants_html(request.headers());
    let Some(auth) = &live.auth else {
        if Caller::Anyone.may_open(&service.access) {
            return Ok(None);
        }
        tracing::warn!(service = %service.id, "the service has an allow_users list but forward authentication is off ([auth] forward_url): nobody may open it");
        proxy.metrics.auth(AuthOutcome::Denied);
        return Err(forbidden(service, html));
    };
    if service.access == Access::Open {
        auth.sanitize(request.headers_mut());
        return Ok(None);
    }
    let caller = auth
        .identify(
            proxy,
            Head::of(request),
            view,
            live.proxy.trust_forwarded_headers,
        )
        .await;
    let identity = match caller {
        Ok(identity) => identity,
        Err(Refusal::Unauthenticated(challenge)) => {
            proxy.metrics.auth(AuthOutcome::Unauthenticated);
            if wants_signin(request)
                && let Some(location) = auth.signin_location(request.uri(), view)
                && let Ok(location) = HeaderValue::from_str(&location)
            {
                let mut response = StatusCode::FOUND.into_response();
                response.headers_mut().insert(header::LOCATION, location);
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return Err(response);
            }
            let err = ProxyError::Unauthenticated {
                service: service.id.clone(),
            };
            let mut response = err.render(html);
            if let Some(challenge) = challenge {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            return Err(response);
        }
        Err(Refusal::Denied) => {
            proxy.metrics.auth(AuthOutcome::Denied);
            return Err(forbidden(service, html));
        }
        Err(Refusal::Unavailable(detail)) => {
            proxy.metrics.auth(AuthOutcome::Error);
            tracing::warn!(service = %service.id, error = %detail, "the auth service did not answer; the request is refused");
            return Err(ProxyError::AuthUnavailable { detail }.render(html));
        }
    };
    if !Caller::Known(Arc::clone(&identity)).may_open(&service.access) {
        proxy.metrics.auth(AuthOutcome::Denied);
        tracing::debug!(service = %service.id, user = ?identity.user(), "not in the service's allow_users");
        return Err(forbidden(service, html));
    }
    proxy.metrics.auth(AuthOutcome::Allowed);
    auth.sanitize(request.headers_mut());
    Ok(Some(identity))
}

fn forbidden(service: &Service, html: bool) -> Response {
    ProxyError::Forbidden {
        service: service.id.clone(),
    }
    .render(html)
}

/// Who the caller of `request` is, for showing them only what they may open: the auth service
/// is asked only when `needed` (some service is not open). A caller it does not accept is
/// [`Caller::Anonymous`]; an auth service that does not answer is an error.
pub(super) async fn caller(
    proxy: &Proxy,
    live: &Live,
    request: Head<'_>,
    view: &ClientView,
    needed: bool,
) -> Result<Caller, ProxyError> {
    let Some(auth) = &live.auth else {
        return Ok(Caller::Anyone);
    };
    if !needed {
        return Ok(Caller::Anonymous);
    }
    match auth
        .identify(proxy, request, view, live.proxy.trust_forwarded_headers)
        .await
    {
        Ok(identity) => {
            proxy.metrics.auth(AuthOutcome::Allowed);
            Ok(Caller::Known(identity))
        }
        Err(Refusal::Unauthenticated(_)) => {
            proxy.metrics.auth(AuthOutcome::Unauthenticated);
            Ok(Caller::Anonymous)
        }
        Err(Refusal::Denied) => {
            proxy.metrics.auth(AuthOutcome::Denied);
            Ok(Caller::Anonymous)
        }
        Err(Refusal::Unavailable(detail)) => {
            proxy.metrics.auth(AuthOutcome::Error);
            tracing::warn!(error = %detail, "the auth service did not answer; the listing is refused");
            Err(ProxyError::AuthUnavailable { detail })
        }
    }
}

/// The sign-in link for a caller the auth service did not accept, for a page that offers one.
pub(super) fn signin_link(live: &Live, uri: &Uri, view: &ClientView) -> Option<String> {
    live.auth.as_ref()?.signin_location(uri, view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(extra: &str) -> Arc<Auth> {
        let text = format!("[auth]\nforward_url = \"http://auth:4180/check\"\n{extra}");
        let config = crate::config::Config::parse(&text, None).expect("valid");
        Auth::new(&config.auth).expect("on")
    }

    fn identity(user: Option<&'static str>) -> Caller {
        Caller::Known(Arc::new(Identity {
            headers: Vec::new(),
            user: user.map(HeaderValue::from_static),
            set_cookies: Vec::new(),
        }))
    }

    #[test]
    fn who_may_open_what() {
        let alice_only = Access::Users(vec!["alice".to_owned()].into());
        let nobody = Access::Users(Vec::new().into());
        let cases = [
            (Caller::Anyone, [true, true, false, false]),
            (identity(Some("alice")), [true, true, true, false]),
            (identity(Some("bob")), [true, true, false, false]),
            (identity(None), [true, true, false, false]),
            (Caller::Anonymous, [true, false, false, false]),
        ];
        for (caller, expected) in cases {
            let got = [&Access::Open, &Access::SignedIn, &alice_only, &nobody]
                .map(|access| caller.may_open(access));
            assert_eq!(got, expected, "{caller:?}");
        }
    }

    fn view(host: &str, scheme: &str) -> ClientView {
        ClientView {
            peer: None,
            scheme: scheme.to_owned(),
            host: host.to_owned(),
        }
    }

    #[test]
    fn the_signin_redirect_carries_the_page() {
        let uri: Uri = "/proxy/app/page?x=1&y=2".parse().expect("uri");
        let external = auth("signin_url = \"https://login.example/oauth2/start\"");
        assert_eq!(
            external
                .signin_location(&uri, &view("apps.example", "https"))
                .as_deref(),
            Some(
                "https://login.example/oauth2/start?rd=https%3A%2F%2Fapps.example%2Fproxy%2Fapp%2Fpage%3Fx%3D1%26y%3D2"
            )
        );
        assert_eq!(
            external
                .signin_location(&uri, &view("evil.example/x@", "http"))
                .as_deref(),
            Some("https://login.example/oauth2/start?rd=%2Fproxy%2Fapp%2Fpage%3Fx%3D1%26y%3D2"),
            "a host that is not just a host gives a path"
        );
        let local = auth("signin_url = \"/oauth2/start?prompt=login\"");
        assert_eq!(
            local
                .signin_location(&uri, &view("apps.example", "http"))
                .as_deref(),
            Some("/oauth2/start?prompt=login&rd=%2Fproxy%2Fapp%2Fpage%3Fx%3D1%26y%3D2"),
            "a sign-in page on Portico's host gets a path"
        );
        assert_eq!(auth("").signin_location(&uri, &view("h", "http")), None);
    }

    #[test]
    fn the_question_carries_credentials_and_portico_s_forwarded_headers() {
        let auth = auth("");
        let mut request = Request::new(Body::empty());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = "/proxy/app/x?y=1".parse().expect("uri");
        for (name, value) in [
            ("cookie", "s=alice"),
            ("authorization", "Bearer t"),
            ("x-forwarded-uri", "/spoofed"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-auth-request-user", "mallory"),
            ("accept", "text/html"),
        ] {
            request
                .headers_mut()
                .append(name, HeaderValue::from_static(value));
        }
        let view = ClientView {
            peer: Some([127, 0, 0, 1].into()),
            ..view("public:8080", "http")
        };
        let question = auth.question(Head::of(&request), &view, false);
        assert_eq!(question.method(), Method::POST);
        assert_eq!(question.uri(), "http://auth:4180/check");
        let sent: Vec<(String, String)> = question
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect();
        let expected: Vec<(String, String)> = [
            ("cookie", "s=alice"),
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "public:8080"),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/proxy/app/x?y=1"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(sent, expected);
        let trusted = auth.question(Head::of(&request), &view, true);
        assert_eq!(trusted.headers()["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    }

    #[test]
    fn identities_and_client_headers() {
        let auth = auth("copy_headers = [\"x-auth-request-user\", \"x-auth-request-email\"]");
        let mut answer = HeaderMap::new();
        answer.append("x-auth-request-user", HeaderValue::from_static("alice"));
        answer.append("x-auth-request-email", HeaderValue::from_static("a@x"));
        answer.append("set-cookie", HeaderValue::from_static("s=1"));
        let identity = auth.identity(&answer);
        assert_eq!(identity.user(), Some("alice"));
        assert_eq!(identity.headers().len(), 2);
        assert!(identity.sets_cookies());
        answer.append("x-auth-request-user", HeaderValue::from_static("bob"));
        assert_eq!(auth.identity(&answer).user(), None, "two users name none");

        let mut client = HeaderMap::new();
        client.append("x-auth-request-user", HeaderValue::from_static("mallory"));
        client.append("x-auth-request-email", HeaderValue::from_static("m@x"));
        client.append(
            "cookie",
            HeaderValue::from_static("_oauth2_proxy=secret; app=1; _oauth2_proxy_csrf=x"),
        );
        auth.sanitize(&mut client);
        assert_eq!(client.len(), 1, "{client:?}");
        assert_eq!(client["cookie"], "app=1");
    }
}
