//! Two apps of different frameworks (Dash and Flask) open at once in two tabs of one browser:
//! un-prefixed requests from each page reach that page's app, even though they share one
//! origin and Portico's affinity cookie names whichever app was opened last.

use portico_tests::e2e::{Browser, Kind, Session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_of_two_frameworks_do_not_cross_talk() -> anyhow::Result<()> {
    let Some(mut session) = Session::open("two-tabs", &[Kind::Dash, Kind::Flask]).await? else {
        return Ok(());
    };
    let outcome = scenario(&mut session.browser).await;
    session.finish(outcome).await
}

/// `fetch(path)` from the current tab, which must answer 200 with a body containing `expected`.
async fn fetch_expecting(browser: &Browser, path: &str, expected: &str) -> anyhow::Result<()> {
    let (status, body) = browser.fetch(path).await?;
    anyhow::ensure!(
        status == 200 && body.contains(expected),
        "{path} from this tab answered {status} with {:?}, expected {expected:?}",
        body.chars().take(200).collect::<String>()
    );
    Ok(())
}

async fn scenario(browser: &mut Browser) -> anyhow::Result<()> {
    let dash_tab = browser.client.window().await?;
    browser.goto("/proxy/dash/").await?;
    browser.wait_text("#title", "Portico Dash test").await?;

    let flask_tab = browser.client.new_window(true).await?.handle;
    browser.client.switch_to_window(flask_tab.clone()).await?;
    // Opening Flask last leaves the shared affinity cookie naming Flask.
    browser.goto("/proxy/flask/").await?;
    browser.wait_text("#title", "Portico Flask test").await?;

    browser.client.switch_to_window(dash_tab).await?;
    // Both apps answer `/who`; the Dash page's request must reach Dash, by its Referer.
    fetch_expecting(browser, "/who", "dash").await?;
    fetch_expecting(browser, "/_dash-layout", "Portico Dash test").await?;
    browser.type_into("#text", "tab one").await?;
    browser.wait_text("#out", "You typed: tab one").await?;

    browser.client.switch_to_window(flask_tab).await?;
    fetch_expecting(browser, "/who", "flask").await?;
    browser.type_into("#message", "tab two").await?;
    browser.click("#send").await?;
    browser.wait_text("#message", "Got: tab two").await?;
    fetch_expecting(browser, "/who", "flask").await?;
    Ok(())
}
