//! Solara, unmodified (no root path configured), in headless Chromium through Portico: the page
//! renders under the prefix, a button and a slider change text computed on the server over the
//! kernel WebSocket, nothing the page requests leaves the prefix, and two Solara apps open in
//! two tabs of one browser do not cross.

use portico_tests::e2e::{Browser, Kind, Session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solara_renders_and_its_kernel_answers_under_the_prefix() -> anyhow::Result<()> {
    let Some(mut session) = Session::open("solara", &[Kind::Solara]).await? else {
        return Ok(());
    };
    let outcome = single(&mut session.browser).await;
    session.finish(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_solara_apps_in_two_tabs_do_not_cross() -> anyhow::Result<()> {
    let apps = [("solara-a", Kind::Solara), ("solara-b", Kind::Solara)];
    let Some(mut session) = Session::open_named("solara-two", &apps, "", "").await? else {
        return Ok(());
    };
    let outcome = side_by_side(&mut session.browser).await;
    session.finish(outcome).await
}

async fn single(browser: &mut Browser) -> anyhow::Result<()> {
    open(browser, "/proxy/solara/").await?;
    click_until(browser, 1).await?;
    // The slider's new value goes to the kernel, which sends back the square.
    slide_right(browser).await?;
    browser
        .wait_text(".squared", "Squared on the server: 16")
        .await?;
    stayed_inside(browser, &["/proxy/solara/"]).await
}

async fn side_by_side(browser: &mut Browser) -> anyhow::Result<()> {
    let tab_a = browser.client.window().await?;
    open(browser, "/proxy/solara-a/").await?;
    click_until(browser, 1).await?;

    // Opening the second app last leaves Portico's affinity cookie naming it.
    let tab_b = browser.client.new_window(true).await?.handle;
    browser.client.switch_to_window(tab_b.clone()).await?;
    open(browser, "/proxy/solara-b/").await?;
    for clicks in 1..=3 {
        click_until(browser, clicks).await?;
    }
    slide_right(browser).await?;
    browser
        .wait_text(".squared", "Squared on the server: 16")
        .await?;

    // The first tab's kernel still answers it, and saw none of the second tab's changes.
    browser.client.switch_to_window(tab_a).await?;
    browser.wait_text(".clicks", "Clicked 1 times").await?;
    browser
        .wait_text(".squared", "Squared on the server: 9")
        .await?;
    click_until(browser, 2).await?;

    browser.client.switch_to_window(tab_b).await?;
    browser.wait_text(".clicks", "Clicked 3 times").await?;
    stayed_inside(browser, &["/proxy/solara-a/", "/proxy/solara-b/"]).await
}

/// Opens the app at `prefix` and waits for the kernel to render its page.
async fn open(browser: &Browser, prefix: &str) -> anyhow::Result<()> {
    browser.goto(prefix).await?;
    // The page's content comes from the kernel over the WebSocket: seeing it proves the
    // connection, and that Solara's router found the page under the prefix.
    browser.wait_text("h1", "Portico Solara test").await?;
    browser.wait_text(".clicks", "Clicked 0 times").await?;
    browser
        .wait_text(".squared", "Squared on the server: 9")
        .await
}

/// Clicks the button and waits for the server's count to reach `expected`.
async fn click_until(browser: &Browser, expected: u32) -> anyhow::Result<()> {
    browser.click("button.v-btn").await?;
    browser
        .wait_text(".clicks", &format!("Clicked {expected} times"))
        .await
}

/// Moves the slider one step up with the keyboard, as a user would.
async fn slide_right(browser: &Browser) -> anyhow::Result<()> {
    let right = char::from(fantoccini::key::Key::Right);
    browser
        .find("[role='slider']")
        .await?
        .send_keys(&right.to_string())
        .await?;
    Ok(())
}

/// Fails when a request of the page (WebSockets included) left `prefixes`, or the console
/// shows an error.
async fn stayed_inside(browser: &mut Browser, prefixes: &[&str]) -> anyhow::Result<()> {
    let outside = browser.requests_outside(prefixes).await?;
    anyhow::ensure!(
        outside.is_empty(),
        "Solara requests left the prefix: {outside:?}"
    );
    let errors = browser.console_errors().await?;
    anyhow::ensure!(errors.is_empty(), "console errors: {errors:?}");
    Ok(())
}
