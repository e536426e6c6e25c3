//! FastAPI, unmodified (no root_path), in headless Chromium through Portico: a JSON endpoint, a
//! trailing-slash redirect that stays under the prefix, and Swagger UI at `/docs` loading the
//! schema through the proxy and running a "Try it out" call.

use portico_tests::e2e::{Browser, Kind, Session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastapi_json_redirect_and_swagger_ui_work_under_the_prefix() -> anyhow::Result<()> {
    let Some(mut session) = Session::open("fastapi", &[Kind::FastApi]).await? else {
        return Ok(());
    };
    let outcome = scenario(&mut session.browser).await;
    session.finish(outcome).await
}

async fn scenario(browser: &mut Browser) -> anyhow::Result<()> {
    browser.goto("/proxy/fastapi/api/items/3").await?;
    browser.wait_text("body", r#""name":"item 3""#).await?;

    // `/things` answers 307 to an absolute `http://host/things/`: it must keep the prefix.
    browser.goto("/proxy/fastapi/things").await?;
    browser.wait_path("/proxy/fastapi/things/").await?;
    browser.wait_text("body", r#"["one","two"]"#).await?;

    browser.goto("/proxy/fastapi/docs").await?;
    browser
        .wait_text(".swagger-ui .info .title", "Portico FastAPI test")
        .await?;
    let operation = "#operations-default-item_api_items__item_id__get";
    browser
        .click(&format!("{operation} .opblock-summary-control"))
        .await?;
    browser.click(&format!("{operation} .try-out__btn")).await?;
    browser
        .type_into(&format!("{operation} input[placeholder='item_id']"), "7")
        .await?;
    browser.click(&format!("{operation} .execute")).await?;
    // The call went through the prefix (the plugin adds it as the schema's server) and
    // reached the app.
    browser
        .wait_text(
            &format!("{operation} .request-url"),
            "/proxy/fastapi/api/items/7",
        )
        .await?;
    browser
        .wait_text(&format!("{operation} .live-responses-table"), "item 7")
        .await?;
    Ok(())
}
