//! Voila, unmodified (no base URL configured), in headless Chromium through Portico: the
//! notebook renders under the prefix, an ipywidgets slider's change comes back as a label
//! computed in the kernel over the kernel WebSocket, nothing the page requests from Portico
//! leaves the prefix, and two Voila apps open in two tabs of one browser do not cross.
//!
//! The app's `voila.json` (read from its working directory) loads only the JupyterLab
//! extensions the notebook uses: the test venv holds other apps' packages too, and Panel's
//! extension fails in Voila's page with errors that have nothing to do with the proxy.

use portico_tests::e2e::{Browser, Kind, Session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voila_renders_and_its_kernel_answers_under_the_prefix() -> anyhow::Result<()> {
    let Some(mut session) = Session::open("voila", &[Kind::Voila]).await? else {
        return Ok(());
    };
    let outcome = single(&mut session.browser).await;
    session.finish(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_voila_apps_in_two_tabs_do_not_cross() -> anyhow::Result<()> {
    let apps = [("voila-a", Kind::Voila), ("voila-b", Kind::Voila)];
    let Some(mut session) = Session::open_named("voila-two", &apps, "", "").await? else {
        return Ok(());
    };
    let outcome = side_by_side(&mut session.browser).await;
    session.finish(outcome).await
}

async fn single(browser: &mut Browser) -> anyhow::Result<()> {
    open(browser, "/proxy/voila/").await?;
    slide_until(browser, 16).await?;
    stayed_inside(browser, &["/proxy/voila/"]).await
}

async fn side_by_side(browser: &mut Browser) -> anyhow::Result<()> {
    let tab_a = browser.client.window().await?;
    open(browser, "/proxy/voila-a/").await?;
    slide_until(browser, 16).await?;

    // Opening the second app last leaves Portico's affinity cookie naming it.
    let tab_b = browser.client.new_window(true).await?.handle;
    browser.client.switch_to_window(tab_b.clone()).await?;
    open(browser, "/proxy/voila-b/").await?;
    slide_until(browser, 16).await?;
    slide_until(browser, 25).await?;

    // The first tab's kernel still answers it, and saw none of the second tab's changes.
    browser.client.switch_to_window(tab_a).await?;
    browser
        .wait_text(".squared", "Squared in the kernel: 16")
        .await?;
    slide_until(browser, 25).await?;
    slide_until(browser, 36).await?;

    browser.client.switch_to_window(tab_b).await?;
    browser
        .wait_text(".squared", "Squared in the kernel: 25")
        .await?;
    stayed_inside(browser, &["/proxy/voila-a/", "/proxy/voila-b/"]).await
}

/// Opens the notebook at `prefix` and waits for its widgets, which render only once the
/// kernel's widget models arrived over the WebSocket.
async fn open(browser: &Browser, prefix: &str) -> anyhow::Result<()> {
    browser.goto(prefix).await?;
    browser.wait_text("h1", "Portico Voila test").await?;
    browser
        .wait_text(".squared", "Squared in the kernel: 9")
        .await?;
    browser.find(".widget-slider .noUi-handle").await.map(drop)
}

/// Moves the slider one step up with the keyboard, as a user would, and waits for the kernel's
/// label to show `expected`.
async fn slide_until(browser: &Browser, expected: u32) -> anyhow::Result<()> {
    let right = char::from(fantoccini::key::Key::Right);
    browser
        .find(".widget-slider .noUi-handle")
        .await?
        .send_keys(&right.to_string())
        .await?;
    browser
        .wait_text(".squared", &format!("Squared in the kernel: {expected}"))
        .await
}

/// Fails when a request of the page to Portico (WebSockets included) left `prefixes`, or the
/// console shows an error about anything but Voila's `lab` template loading Font Awesome from
/// a public CDN, which this machine cannot reach and which never passes through Portico.
async fn stayed_inside(browser: &mut Browser, prefixes: &[&str]) -> anyhow::Result<()> {
    let outside = browser.requests_outside(prefixes).await?;
    anyhow::ensure!(
        outside.is_empty(),
        "Voila requests left the prefix: {outside:?}"
    );
    let errors: Vec<String> = browser
        .console_errors()
        .await?
        .into_iter()
        .filter(|line| !line.starts_with("SEVERE https://cdn.jsdelivr.net/npm/@fortawesome/"))
        .collect();
    anyhow::ensure!(errors.is_empty(), "console errors: {errors:?}");
    Ok(())
}
