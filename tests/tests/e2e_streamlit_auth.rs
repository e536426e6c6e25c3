//! Streamlit behind forward authentication, in headless Chromium: opening the app sends the
//! browser to the tests' auth server's sign-in page, signing in brings it back with a session
//! cookie, and the app then works for its owner, WebSocket and upload included.

use portico_tests::auth::AuthServer;
use portico_tests::e2e::{Kind, Session, streamlit_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamlit_works_through_the_sign_in() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let Some(session) = Session::open_with(
        "streamlit_auth",
        &[Kind::Streamlit],
        "allow_users = [\"alice\"]\n",
        &auth.config("strip_cookies = [\"test_session\"]"),
    )
    .await?
    else {
        return Ok(());
    };
    let browser = &session.browser;
    let outcome = async {
        browser.goto("/proxy/streamlit/").await?;
        // Not signed in: Portico sends the page to the sign-in form, `rd` naming the app.
        browser.find("#user").await?;
        let at = browser.client.current_url().await?;
        anyhow::ensure!(
            at.as_str().starts_with(&auth.url("/signin?rd=")),
            "expected the sign-in page, got {at}"
        );
        browser.type_into("#user", "alice").await?;
        browser.click("#signin").await?;
        browser.wait_path("/proxy/streamlit/").await?;
        anyhow::ensure!(
            auth.asked() > 0,
            "the app was opened without asking the auth service"
        );
        // The scenario reloads the page: the title arrives over the WebSocket, which carries
        // the session cookie too.
        streamlit_scenario(browser, "/proxy/streamlit/").await
    }
    .await;
    session.finish(outcome).await
}
