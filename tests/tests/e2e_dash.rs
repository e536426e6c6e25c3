//! Dash, unmodified (no requests_pathname_prefix), in headless Chromium through Portico: the
//! layout renders and a callback updates the page.

use portico_tests::e2e::{Browser, Kind, Session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_layout_renders_and_callbacks_fire() -> anyhow::Result<()> {
    let Some(mut session) = Session::open("dash", &[Kind::Dash]).await? else {
        return Ok(());
    };
    let outcome = scenario(&mut session.browser).await;
    session.finish(outcome).await
}

async fn scenario(browser: &mut Browser) -> anyhow::Result<()> {
    browser.goto("/proxy/dash/").await?;
    // The layout arrives from /_dash-layout and is rendered by the component suites.
    browser.wait_text("#title", "Portico Dash test").await?;
    // The initial callback ran (/_dash-update-component).
    browser.wait_text("#out", "You typed:").await?;
    browser
        .wait_for(
            "the stylesheet from assets/ to apply",
            "return getComputedStyle(document.querySelector('#title')).color === 'rgb(0, 96, 160)';",
            vec![],
        )
        .await?;
    browser.type_into("#text", "behind portico").await?;
    browser
        .wait_text("#out", "You typed: behind portico")
        .await?;
    // The plugin moves Dash's requests (layout, dependencies, callbacks) under the prefix;
    // un-prefixed ones would still work by Referer, but would hide a broken rewrite.
    let origin = browser.origin.clone();
    let outside: Vec<String> = browser
        .requested_urls()
        .await?
        .into_iter()
        .filter(|url| {
            url.starts_with(&origin) && !url.starts_with(&format!("{origin}/proxy/dash/"))
        })
        .collect();
    anyhow::ensure!(
        outside.is_empty(),
        "Dash requests left the prefix: {outside:?}"
    );
    Ok(())
}
