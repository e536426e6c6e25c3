//! Streamlit, unmodified (no baseUrlPath), in headless Chromium through Portico: the page
//! renders, a rerun driven by a text input and a button shows its result (the WebSocket, its
//! subprotocol list and the XSRF cookie all pass), and a file upload reaches the script.

use portico_tests::e2e::{Browser, Kind, Session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamlit_reruns_and_uploads_under_the_prefix() -> anyhow::Result<()> {
    let Some(mut session) = Session::open("streamlit", &[Kind::Streamlit]).await? else {
        return Ok(());
    };
    let outcome = scenario(&mut session.browser).await;
    session.finish(outcome).await
}

async fn scenario(browser: &mut Browser) -> anyhow::Result<()> {
    browser.goto("/proxy/streamlit/").await?;
    // The title is sent by the script over the WebSocket: rendering it proves the connection.
    browser.wait_text("h1", "Portico Streamlit test").await?;

    let enter = char::from(fantoccini::key::Key::Enter);
    browser
        .type_into("input[aria-label='Your name']", &format!("Portico{enter}"))
        .await?;
    browser.click("[data-testid='stButton'] button").await?;
    browser.wait_text("body", "Hello, Portico!").await?;

    // The upload is a PUT with Streamlit's XSRF token, then a rerun that reads the file.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("upload.txt");
    std::fs::write(&file, "x".repeat(1234))?;
    let path = file
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("a UTF-8 temp path"))?;
    browser
        .find("input[type='file']")
        .await?
        .send_keys(path)
        .await?;
    browser
        .wait_text("body", "Received upload.txt: 1234 bytes")
        .await?;
    Ok(())
}
