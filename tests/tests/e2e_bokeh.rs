//! Bokeh and Panel, unmodified (no `--prefix`, no `--allow-websocket-origin`), in headless
//! Chromium through Portico: two copies of one app open side by side in two tabs, a text input
//! whose value the server turns into the output over the WebSocket, every request (scripts,
//! WebSocket) under its own prefix, and no console error.

use anyhow::{Context as _, ensure};
use fantoccini::elements::{Element, ElementRef};
use portico_tests::e2e::{Browser, Kind, Session};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bokeh_apps_side_by_side_stay_under_their_prefixes() -> anyhow::Result<()> {
    pair("bokeh", Kind::Bokeh, "Portico Bokeh test").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_apps_side_by_side_stay_under_their_prefixes() -> anyhow::Result<()> {
    pair("panel", Kind::Panel, "Portico Panel test").await
}

/// Serves two copies of the app of `kind` as `{name}-a` and `{name}-b` and runs the scenario.
async fn pair(name: &str, kind: Kind, title: &str) -> anyhow::Result<()> {
    let (a, b) = (format!("{name}-a"), format!("{name}-b"));
    let apps = [(a.as_str(), kind), (b.as_str(), kind)];
    let Some(mut session) = Session::open_named(name, &apps, "", "").await? else {
        return Ok(());
    };
    let outcome = scenario(&mut session.browser, &a, &b, title).await;
    session.finish(outcome).await
}

async fn scenario(browser: &mut Browser, a: &str, b: &str, title: &str) -> anyhow::Result<()> {
    let tab_a = browser.client.window().await?;
    let server_a = open_and_greet(browser, a, title, "alpha").await?;

    let tab_b = browser.client.new_window(true).await?.handle;
    browser.client.switch_to_window(tab_b.clone()).await?;
    let server_b = open_and_greet(browser, b, title, "beta").await?;
    ensure!(
        server_a != server_b,
        "both tabs were answered by {server_a}: the second app's session reached the first"
    );

    // Each tab keeps talking to its own server while the other is open.
    browser.client.switch_to_window(tab_a).await?;
    greet(browser, "gamma", &server_a).await?;
    browser.client.switch_to_window(tab_b).await?;
    wait_deep_text(browser, &format!("Hello, BETA! from {server_b}")).await?;
    greet(browser, "delta", &server_b).await?;

    let prefixes = [format!("/proxy/{a}/"), format!("/proxy/{b}/")];
    let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let outside = browser.requests_outside(&prefixes).await?;
    ensure!(
        outside.is_empty(),
        "requests left the prefixes: {outside:?}"
    );
    let urls = browser.requested_urls().await?;
    for id in [a, b] {
        let socket = format!("/proxy/{id}/app/ws");
        ensure!(
            urls.iter()
                .any(|url| url.starts_with("ws://") && url.ends_with(&socket)),
            "no WebSocket at {socket} in {urls:?}"
        );
    }
    let errors = browser.console_errors().await?;
    ensure!(errors.is_empty(), "console errors: {errors:?}");
    Ok(())
}

/// Opens the app `id`, waits for its document, types `name` and returns the server named in
/// the answer (`server 1234`).
async fn open_and_greet(
    browser: &Browser,
    id: &str,
    title: &str,
    name: &str,
) -> anyhow::Result<String> {
    // `/` redirects to the app's page, `/app`, which the browser must reach under the prefix.
    browser.goto(&format!("/proxy/{id}/")).await?;
    browser.wait_path(&format!("/proxy/{id}/app")).await?;
    // The document arrives over the WebSocket: its title and initial output prove the socket.
    wait_deep_text(browser, title).await?;
    let initial = wait_deep_text(browser, "Nothing yet from server ").await?;
    let pid: String = initial
        .split("Nothing yet from server ")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    ensure!(!pid.is_empty(), "no server named in {initial:?}");
    let server = format!("server {pid}");
    greet(browser, name, &server).await?;
    Ok(server)
}

/// Types `name` and Enter into the page's text input and waits for `server`'s answer.
async fn greet(browser: &Browser, name: &str, server: &str) -> anyhow::Result<()> {
    let input = deep_element(browser, "input").await?;
    input.clear().await?;
    let enter = char::from(fantoccini::key::Key::Enter);
    input.send_keys(&format!("{name}{enter}")).await?;
    let expected = format!("Hello, {}! from {server}", name.to_uppercase());
    wait_deep_text(browser, &expected).await.map(drop)
}

/// A script that defines `deep(css)` and `text(node)`, which look through shadow roots: Bokeh
/// renders every widget in one.
const DEEP: &str = "
    const deep = (root, css) => {
        const hit = root.querySelector(css);
        if (hit) return hit;
        for (const el of root.querySelectorAll('*')) {
            if (el.shadowRoot) {
                const inner = deep(el.shadowRoot, css);
                if (inner) return inner;
            }
        }
        return null;
    };
    const text = (node) => {
        let out = node.shadowRoot ? text(node.shadowRoot) : '';
        for (const child of node.childNodes) {
            if (child.nodeName === 'STYLE' || child.nodeName === 'SCRIPT') continue;
            out += child.nodeType === Node.TEXT_NODE ? child.textContent : text(child);
        }
        return out;
    };";

/// Waits until the page's text, shadow roots included, contains `needle`; returns that text.
async fn wait_deep_text(browser: &Browser, needle: &str) -> anyhow::Result<String> {
    let script = format!(
        "{DEEP}
        const all = text(document.body);
        return all.includes(arguments[0]) ? all : null;"
    );
    let value = browser
        .wait_for(
            &format!("the page to show {needle:?}"),
            &script,
            vec![json!(needle)],
        )
        .await?;
    Ok(value.as_str().unwrap_or_default().to_owned())
}

/// The first element matching `css`, shadow roots included, waiting for it to appear.
async fn deep_element(browser: &Browser, css: &str) -> anyhow::Result<Element> {
    let script = format!("{DEEP}\nreturn deep(document, arguments[0]);");
    let value = browser
        .wait_for(&format!("{css:?} to appear"), &script, vec![json!(css)])
        .await?;
    // WebDriver returns an element as an object with one key, the element reference.
    let id = match &value {
        Value::Object(map) => map.values().next().and_then(Value::as_str),
        _ => None,
    }
    .with_context(|| format!("{css:?} came back as {value}, not an element"))?;
    Ok(Element::from_element_id(
        browser.client.clone(),
        ElementRef::from(id.to_owned()),
    ))
}
