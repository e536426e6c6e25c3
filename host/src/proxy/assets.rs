//! Routing of requests that arrive without a `/proxy/{id}` prefix (`/_stcore/...`,
//! `/static/...`, `/_dash-layout`) to the service whose page made them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};

use super::headers::{AFFINITY_COOKIE, cookie};
use crate::plugin::{OrphanRequest, PluginRegistry};
use crate::registry::{Service, ServiceTable, Status};

/// Why an un-prefixed request went to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Referer,
    Cookie,
    Claim(u32),
}

/// The service id named by a `Referer` whose path is `/proxy/{id}` or lies below it.
pub fn referer_service(referer: &str) -> Option<&str> {
    // An absolute URL: skip the scheme and authority; a bare path is taken as it is.
    let path = match referer.find("://") {
        Some(at) => {
            let rest = &referer[at + 3..];
            &rest[rest.find('/')?..]
        }
        None => referer,
    };
    let rest = path.strip_prefix("/proxy/")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty()).then_some(id)
}

/// The service an un-prefixed request belongs to, or a sentence saying why there is none.
pub async fn route(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    services: &ServiceTable,
    plugins: &PluginRegistry,
) -> Result<(Arc<Service>, Via), String> {
    let referer = headers
        .get(header::REFERER)
        .and_then(|value| value.to_str().ok());
    if let Some(id) = referer.and_then(referer_service)
        && let Some(service) = services.get(id)
    {
        return Ok((service, Via::Referer));
    }
    if let Some(id) = cookie(headers, AFFINITY_COOKIE)
        && let Some(service) = services.get(&id)
    {
        return Ok((service, Via::Cookie));
    }
    let orphan = OrphanRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
    };
    // One claim per plugin, however many services use it; down services do not compete.
    let mut claims: HashMap<String, u32> = HashMap::new();
    let mut best: Option<(u32, Arc<Service>)> = None;
    for service in services.list() {
        if service.health.get() == Status::Down {
            continue;
        }
        let plugin = plugins.for_type(&service.service_type);
        let score = match claims.get(plugin.name()) {
            Some(score) => *score,
            None => {
                let score = plugin.claim(&orphan).await.unwrap_or(0);
                claims.insert(plugin.name().to_owned(), score);
                score
            }
        };
        if score > 0 && best.as_ref().is_none_or(|(top, _)| score > *top) {
            best = Some((score, service));
        }
    }
    if let Some((score, service)) = best {
        return Ok((service, Via::Claim(score)));
    }
    Err(format!(
        "no service for {path}: it is not under /proxy/{{id}}/, {}, {}, and no live service's plugin claims the path",
        match referer {
            Some(_) => "the Referer names no known service",
            None => "there is no Referer",
        },
        match cookie(headers, AFFINITY_COOKIE) {
            Some(_) => "the affinity cookie names no known service",
            None => "there is no affinity cookie",
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::referer_service;

    #[test]
    fn referer_names_service() {
        assert_eq!(referer_service("http://h:8080/proxy/dash/"), Some("dash"));
        assert_eq!(referer_service("https://h/proxy/st?x=1"), Some("st"));
        assert_eq!(referer_service("/proxy/a/b/c"), Some("a"));
        assert_eq!(referer_service("http://h/other/proxy/a/"), None);
        assert_eq!(referer_service("http://h/proxy/"), None);
        assert_eq!(referer_service("http://h"), None);
    }
}
