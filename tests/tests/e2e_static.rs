//! A static site (`python -m http.server`, the generic plugin) in headless Chromium through
//! Portico: relative links, a stylesheet, an image and a directory redirect stay under the
//! prefix.

use portico_tests::e2e::{Browser, Kind, Session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_site_relative_links_work_under_the_prefix() -> anyhow::Result<()> {
    let Some(mut session) = Session::open("static", &[Kind::Static]).await? else {
        return Ok(());
    };
    let outcome = scenario(&mut session.browser).await;
    session.finish(outcome).await
}

async fn scenario(browser: &mut Browser) -> anyhow::Result<()> {
    browser.goto("/proxy/static/").await?;
    browser.wait_text("#title", "Portico static test").await?;
    browser
        .wait_for(
            "the stylesheet to apply and the image to load",
            "return getComputedStyle(document.querySelector('h1')).color === 'rgb(128, 0, 128)'
                    && document.querySelector('#logo').naturalWidth > 0;",
            vec![],
        )
        .await?;

    browser.click("#page-link").await?;
    browser.wait_path("/proxy/static/page.html").await?;
    browser.wait_text("#title", "A page").await?;
    browser.click("#home-link").await?;
    browser.wait_path("/proxy/static/").await?;

    // `sub` is a directory: http.server redirects to `/sub/`, which must come back prefixed.
    browser.click("#sub-link").await?;
    browser.wait_path("/proxy/static/sub/").await?;
    browser.wait_text("#title", "A subdirectory").await?;
    browser.click("#up-link").await?;
    browser.wait_path("/proxy/static/page.html").await?;
    Ok(())
}
