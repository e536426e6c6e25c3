//! Streamlit, unmodified (no baseUrlPath), in headless Chromium through Portico: the page
//! renders, a rerun driven by a text input and a button shows its result (the WebSocket, its
//! subprotocol list and the XSRF cookie all pass), and a file upload reaches the script.

use portico_tests::e2e::{Kind, Session, streamlit_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamlit_reruns_and_uploads_under_the_prefix() -> anyhow::Result<()> {
    let Some(session) = Session::open("streamlit", &[Kind::Streamlit]).await? else {
        return Ok(());
    };
    let outcome = streamlit_scenario(&session.browser, "/proxy/streamlit/").await;
    session.finish(outcome).await
}
