//! A forward-authentication server for the tests, answering as oauth2-proxy's `/oauth2/auth`
//! does: `GET|POST|... /auth` is 200 with `X-Auth-Request-User` and `-Email` for a known
//! session (cookie `test_session`, or `Authorization: Bearer`), 401 without one and 403 for a
//! banned user. `/signin` is a tiny sign-in page: its form sets the session cookie and sends
//! the browser back to `rd`. It records what it was asked, can be slowed down and stopped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse as _, Response};
use axum::routing::{any, get};

/// The session cookie's name.
pub const COOKIE: &str = "test_session";

/// The users the server knows; a session is `{user}-token`. `mallory` is known but banned
/// (403); `carol`'s session is refreshed (a `Set-Cookie` with every positive answer).
const USERS: [&str; 4] = ["alice", "bob", "carol", "mallory"];

/// The `Cookie` header of `user`'s session.
pub fn session(user: &str) -> String {
    format!("{COOKIE}={user}-token")
}

/// What one question to `/auth` carried.
#[derive(Debug, Clone)]
pub struct Question {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
struct Shared {
    delay_ms: AtomicU64,
    asked: AtomicUsize,
    last: Mutex<Option<Question>>,
}

/// The running auth server.
#[derive(Debug)]
pub struct AuthServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AuthServer {
    /// Serves on 127.0.0.1:0.
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/auth", any(check))
            .route("/signin", get(signin_page).post(signin))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = tokio::sync::watch::Sender::new(false);
        let mut stopped = stop.subscribe();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `[auth]` section that uses this server, then `extra` lines; a short timeout unless
    /// `extra` sets one.
    pub fn config(&self, extra: &str) -> String {
        let timeout = if extra.contains("timeout_ms") {
            ""
        } else {
            "timeout_ms = 1000\n"
        };
        format!(
            "\n[auth]\nforward_url = \"{}\"\nsignin_url = \"{}\"\n{timeout}{extra}\n",
            self.url("/auth"),
            self.url("/signin")
        )
    }

    /// Makes every answer of `/auth` wait `delay` first.
    pub fn slow_down(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(millis, Ordering::Relaxed);
    }

    /// How many questions `/auth` has answered or is answering.
    pub fn asked(&self) -> usize {
        self.shared.asked.load(Ordering::Relaxed)
    }

    /// The last question `/auth` got.
    pub fn last_question(&self) -> Option<Question> {
        self.shared.last.lock().ok()?.clone()
    }

    /// Stops listening and closes every connection (kept-alive ones included), so that the
    /// port refuses connections.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.slow_down(Duration::ZERO);
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await??;
        }
        Ok(())
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The user a session value names.
fn user_of(token: &str) -> Option<&'static str> {
    let user = token.strip_suffix("-token")?;
    USERS.iter().copied().find(|known| *known == user)
}

async fn check(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.asked.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut last) = shared.last.lock() {
        *last = Some(Question {
            method: request.method().to_string(),
            target: request.uri().to_string(),
            headers: request.headers().clone(),
        });
    }
    let delay = shared.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let headers = request.headers();
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        });
    let from_bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(user) = from_cookie.or(from_bearer).and_then(user_of) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"portico-test\"")],
            "unauthorized",
        )
            .into_response();
    };
    if user == "mallory" {
        return (StatusCode::FORBIDDEN, "banned").into_response();
    }
    let mut response = StatusCode::ACCEPTED.into_response();
    if user == "carol"
        && let Ok(cookie) = HeaderValue::from_str(&format!("{}; Path=/", session(user)))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    for (name, value) in [
        ("x-auth-request-user", user.to_owned()),
        ("x-auth-request-email", format!("{user}@example.test")),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn signin_page(Query(query): Query<HashMap<String, String>>) -> Html<String> {
    let rd = query.get("rd").map_or("", String::as_str);
    let rd = rd.replace('&', "&amp;").replace('"', "&quot;");
    Html(format!(
        "<!doctype html><html><body><h1>Sign in</h1><form method=\"post\" action=\"/signin\">\
         <input name=\"user\" id=\"user\"><input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
         <button type=\"submit\" id=\"signin\">Sign in</button></form></body></html>"
    ))
}

async fn signin(Form(form): Form<HashMap<String, String>>) -> Response {
    let field = |name: &str| form.get(name).map_or("", String::as_str);
    let (user, rd) = (field("user"), field("rd"));
    let known = user_of(&format!("{user}-token")).is_some();
    // Back only to a page of the tests' own hosts: the server is no open redirect either.
    let local = rd.starts_with("http://127.0.0.1:") || rd.starts_with('/');
    if !known || !local || rd.starts_with("//") {
        return (StatusCode::BAD_REQUEST, "unknown user or rd").into_response();
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    let cookie = format!("{}; Path=/; HttpOnly; SameSite=Lax", session(user));
    if let (Ok(cookie), Ok(location)) = (HeaderValue::from_str(&cookie), HeaderValue::from_str(rd))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
