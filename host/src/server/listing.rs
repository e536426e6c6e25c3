//! The service listings, as JSON or as an HTML page for a browser: the public one (`GET
//! /proxy` on the public listener: id, type, status and URL of the services the caller may
//! open) and the admin one (everything, on the admin listener only).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse as _, Response};

use super::{AppState, peer};
use crate::proxy::auth::{Caller, Head};
use crate::proxy::{escape_html, headers};
use crate::registry::{Access, Availability, Service, Status};

/// What a visitor may know: no addresses, container ids, aliases or labels, and with forward
/// authentication only the services the caller may open.
pub(super) async fn public(State(state): State<AppState>, request: Request) -> Response {
    let mut response = public_listing(&state, request).await;
    // The answer depends on who asks.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn public_listing(state: &AppState, request: Request) -> Response {
    let html = headers::wants_html(request.headers());
    let services = state.proxy.services().list();
    let needed = services
        .iter()
        .any(|service| service.access != Access::Open);
    let found = state
        .proxy
        .caller(Head::of(&request), peer(&request), needed)
        .await;
    let (caller, signin) = match found {
        Ok(found) => found,
        Err(err) => return err.render(html),
    };
    let visible: Vec<&Arc<Service>> = services
        .iter()
        .filter(|service| caller.may_open(&service.access))
        .collect();
    let mut response = listing_response(&visible, html, signin);
    if let Caller::Known(identity) = &caller {
        identity.pass_cookies(&mut response);
    }
    response
}

fn listing_response(visible: &[&Arc<Service>], html: bool, signin: Option<String>) -> Response {
    if !html {
        let rows: Vec<serde_json::Value> = visible
            .iter()
            .map(|service| {
                serde_json::json!({
                    "id": service.id,
                    "type": service.service_type,
                    "status": public_status(service),
                    "url": format!("/proxy/{}/", service.id),
                })
            })
            .collect();
        return axum::Json(serde_json::json!({ "services": rows })).into_response();
    }
    let rows: Vec<[String; 3]> = visible
        .iter()
        .map(|service| {
            let id = escape_html(&service.id);
            [
                format!("<a href=\"/proxy/{id}/\">{id}</a>"),
                escape_html(&service.service_type),
                public_status(service).to_owned(),
            ]
        })
        .collect();
    let note = signin.map_or_else(String::new, |signin| {
        format!(
            "<p><a href=\"{}\">Sign in</a> to see the services you may open.</p>\n",
            escape_html(&signin)
        )
    });
    html_response(page(&["Service", "Type", "Status"], &rows, &note))
}

/// Everything about every service, for the operator.
pub(super) async fn admin(State(state): State<AppState>, request: Request) -> Response {
    let services = state.proxy.services().list();
    let plugins = state.proxy.plugins();
    if !headers::wants_html(request.headers()) {
        let now = std::time::Instant::now();
        let rows: Vec<serde_json::Value> = services
            .iter()
            .map(|service| {
                let plugin = plugins.for_type(&service.service_type);
                let availability = service.current_availability();
                serde_json::json!({
                    "id": service.id,
                    "type": service.service_type,
                    "plugin": plugin.name(),
                    "plugin_state": plugin.state().as_str(),
                    "upstream": service.primary_upstream(),
                    "upstreams": service.upstreams().map(|u| u.as_str().trim_end_matches('/')).collect::<Vec<_>>(),
                    "source": service.source,
                    "status": service.health.get(),
                    "fail_closed": service.fail_closed,
                    "url": format!("/proxy/{}/", service.id),
                    "aliases": service.aliases,
                    "labels": service.labels,
                    "auth": match service.access {
                        Access::Open => "none",
                        Access::SignedIn | Access::Users(_) => "forward",
                    },
                    "allow_users": match &service.access {
                        Access::Users(users) => Some(&users[..]),
                        Access::SignedIn | Access::Open => None,
                    },
                    "availability": availability.as_str(),
                    "reason": match &availability {
                        Availability::Unavailable(reason) => Some(reason.as_str()),
                        Availability::Ready | Availability::Starting => None,
                    },
                    "balance": service.balance.as_str(),
                    "sticky": service.sticky,
                    "health_path": service.health_path,
                    "replicas": service.replicas.iter().enumerate().map(|(i, replica)| {
                        let state = service.state(i);
                        serde_json::json!({
                            "key": replica.key,
                            "tag": service.tag(i),
                            "upstreams": replica.urls.iter().map(|u| u.as_str().trim_end_matches('/')).collect::<Vec<_>>(),
                            "ready": state.is_ready(),
                            "ejected": state.ejected(now),
                            "in_flight": state.in_flight(),
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        return axum::Json(serde_json::json!({ "services": rows })).into_response();
    }
    let rows: Vec<[String; 7]> = services
        .iter()
        .map(|service| {
            let id = escape_html(&service.id);
            let access = match &service.access {
                Access::Open => "open".to_owned(),
                Access::SignedIn => "signed-in users".to_owned(),
                Access::Users(users) => escape_html(&users.join(", ")),
            };
            [
                format!("<a href=\"/proxy/{id}/\">{id}</a>"),
                escape_html(&service.service_type),
                escape_html(plugins.for_type(&service.service_type).name()),
                escape_html(&service.primary_upstream()),
                service.source.as_str().to_owned(),
                public_status(service).to_owned(),
                access,
            ]
        })
        .collect();
    html_response(page(
        &[
            "Service", "Type", "Plugin", "Upstream", "Source", "Status", "Access",
        ],
        &rows,
        "",
    ))
}

/// One word for a visitor: `unavailable` or `starting` when the service cannot take requests
/// now, else what the last attempt saw (`up`, `down`, `unknown`).
fn public_status(service: &Service) -> &'static str {
    match service.current_availability() {
        Availability::Unavailable(_) => "unavailable",
        Availability::Starting => "starting",
        Availability::Ready => match service.health.get() {
            Status::Unknown => "unknown",
            Status::Up => "up",
            Status::Down => "down",
        },
    }
}

/// The listing page: a table of `rows` (cells already escaped) under `columns`, then `note`
/// (HTML).
fn page<const N: usize>(columns: &[&str; N], rows: &[[String; N]], note: &str) -> String {
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Portico services</title>\n<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}</style></head>\n<body><h1>Services</h1>\n",
    );
    if rows.is_empty() {
        html.push_str("<p>No services.</p>\n");
    } else {
        html.push_str("<table><tr>");
        for column in columns {
            html.push_str(&format!("<th>{column}</th>"));
        }
        html.push_str("</tr>\n");
        for row in rows {
            html.push_str("<tr>");
            for cell in row {
                html.push_str(&format!("<td>{cell}</td>"));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</table>\n");
    }
    html.push_str(note);
    html.push_str("</body></html>\n");
    html
}

fn html_response(page: String) -> Response {
    let mut response = page.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
