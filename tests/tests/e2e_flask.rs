//! Flask, unmodified (no ProxyFix), in headless Chromium through Portico: `url_for` links, a
//! redirect and a form POST stay under the prefix.

use portico_tests::e2e::{Browser, Kind, Session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_links_redirects_and_forms_stay_under_the_prefix() -> anyhow::Result<()> {
    let Some(mut session) = Session::open("flask", &[Kind::Flask]).await? else {
        return Ok(());
    };
    let outcome = scenario(&mut session.browser).await;
    session.finish(outcome).await
}

async fn scenario(browser: &mut Browser) -> anyhow::Result<()> {
    browser.goto("/proxy/flask/").await?;
    browser.wait_text("#title", "Portico Flask test").await?;
    // The stylesheet came through url_for('static') under the prefix and applied.
    browser
        .wait_for(
            "the Flask stylesheet to apply",
            "return getComputedStyle(document.querySelector('h1')).color === 'rgb(0, 128, 0)';",
            vec![],
        )
        .await?;

    browser.click("#about-link").await?;
    browser.wait_path("/proxy/flask/about").await?;
    browser.wait_text("#title", "About").await?;

    browser.click("#home-link").await?;
    browser.wait_path("/proxy/flask/").await?;
    // /go answers `Location: /about`: the browser must land on the prefixed page.
    browser.click("#go-link").await?;
    browser.wait_path("/proxy/flask/about").await?;
    browser.wait_text("#title", "About").await?;

    browser.click("#home-link").await?;
    browser.type_into("#message", "hello portico").await?;
    browser.click("#send").await?;
    browser
        .wait_path("/proxy/flask/result?message=hello+portico")
        .await?;
    browser.wait_text("#message", "Got: hello portico").await?;
    Ok(())
}
