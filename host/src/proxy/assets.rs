//! Routing of requests that arrive without a `/proxy/{id}` prefix (`/_stcore/...`,
//! `/static/...`, `/_dash-layout`) to the service whose page made them.
//!
//! The `Referer` decides first, then the affinity cookie, then plugin claims. A claim is
//! bounded by what the plugin declared at load (`plugin-info.claim-prefixes`): a plugin is asked
//! only about paths under one of its prefixes, and [`rank`] gives a claim outside them no
//! standing whatever it answered, so a third-party plugin cannot take another framework's paths
//! (and their cookies) by claiming everything.

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
    Claim(ClaimRank),
}

/// How strongly a plugin's claim on a path stands. Claims compare by the length of the longest
/// declared prefix that matches the path, then by the plugin's answer: a framework that declared
/// `/static/js/` wins `/static/js/x.js` over one that declared `/static/`, whatever they answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimRank {
    /// The length of the longest declared prefix of the path.
    pub prefix_len: usize,
    /// What `claim` answered.
    pub score: u32,
}

/// The length of the longest of `declared` that `path` starts with (byte for byte), or `None`
/// when none does: then the plugin is not asked. The guard has refused empty prefixes and `/`
/// at load, so a declaration never covers every path.
pub fn declared_match(declared: &[String], path: &str) -> Option<usize> {
    declared
        .iter()
        .filter(|prefix| path.starts_with(prefix.as_str()))
        .map(String::len)
        .max()
}

/// How a claim of `path` answered with `score` ranks, or `None` when it cannot win: the plugin
/// declared no prefix of the path (whatever it answered), or it answered 0.
pub fn rank(declared: &[String], path: &str, score: u32) -> Option<ClaimRank> {
    let prefix_len = declared_match(declared, path)?;
    (score > 0).then_some(ClaimRank { prefix_len, score })
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
    // One claim per plugin, however many services use it; down services do not compete, and
    // a plugin that declared no prefix of the path is not asked.
    let mut asked: HashMap<String, Option<ClaimRank>> = HashMap::new();
    let mut best: Option<(ClaimRank, Arc<Service>)> = None;
    for service in services.list() {
        if service.health.get() == Status::Down {
            continue;
        }
        let plugin = plugins.for_type(&service.service_type);
        let declared = &plugin.info().claim_prefixes;
        if declared_match(declared, path).is_none() {
            continue;
        }
        let ranked = match asked.get(plugin.name()) {
            Some(ranked) => *ranked,
            None => {
                let score = plugin.claim(&orphan).await.unwrap_or(0);
                let ranked = rank(declared, path, score);
                asked.insert(plugin.name().to_owned(), ranked);
                ranked
            }
        };
        if let Some(ranked) = ranked
            && best.as_ref().is_none_or(|(top, _)| ranked > *top)
        {
            best = Some((ranked, service));
        }
    }
    if let Some((ranked, service)) = best {
        return Ok((service, Via::Claim(ranked)));
    }
    Err(format!(
        "no service for {path}: it is not under /proxy/{{id}}/, {}, {}, and no live service's plugin claims the path under a claim prefix it declared",
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
    use super::{ClaimRank, declared_match, rank, referer_service};

    fn owned(prefixes: &[&str]) -> Vec<String> {
        prefixes.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn the_longest_declared_prefix_matches() {
        let streamlit = owned(&["/_stcore/", "/static/", "/favicon.png"]);
        assert_eq!(declared_match(&streamlit, "/_stcore/health"), Some(9));
        assert_eq!(declared_match(&streamlit, "/static/js/x.js"), Some(8));
        assert_eq!(declared_match(&streamlit, "/favicon.png"), Some(12));
        assert_eq!(declared_match(&streamlit, "/_dash-layout"), None);
        assert_eq!(declared_match(&streamlit, "/_stcore"), None);
        assert_eq!(
            declared_match(&streamlit, "/STATIC/x"),
            None,
            "case-sensitive"
        );
        assert_eq!(
            declared_match(&streamlit, "/%5fstcore/health"),
            None,
            "byte for byte"
        );
        let nested = owned(&["/static/", "/static/js/"]);
        assert_eq!(declared_match(&nested, "/static/js/x.js"), Some(11));
        assert_eq!(declared_match(&[], "/_stcore/health"), None);
    }

    #[test]
    fn a_claim_outside_the_declared_prefixes_has_no_standing() {
        let hostile = owned(&["/hostile/"]);
        assert_eq!(rank(&hostile, "/_stcore/health", u32::MAX), None);
        assert_eq!(rank(&[], "/_stcore/health", u32::MAX), None);
        assert_eq!(
            rank(&hostile, "/hostile/x", u32::MAX),
            Some(ClaimRank {
                prefix_len: 9,
                score: u32::MAX
            })
        );
        assert_eq!(rank(&owned(&["/_stcore/"]), "/_stcore/health", 0), None);
    }

    #[test]
    fn a_longer_prefix_wins_before_a_higher_score() {
        let path = "/static/js/main.js";
        let broad = rank(&owned(&["/static/"]), path, u32::MAX).expect("ranked");
        let narrow = rank(&owned(&["/static/js/"]), path, 1).expect("ranked");
        assert!(narrow > broad);
        let low = rank(&owned(&["/static/"]), path, 40).expect("ranked");
        assert!(broad > low, "equal prefixes: the higher answer wins");
    }

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
