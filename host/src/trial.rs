//! `portico plugin try`: a dry run of a plugin. It loads the component in the same sandbox the
//! proxy uses, calls each hook with a request (and, when asked, a response) built from the
//! command line, and prints what the plugin answered, so an author can see what Portico would
//! do without running an app.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;

use crate::plugin::{
    self, BodyRewrite, Header, HeaderEdits, OrphanRequest, Plugin, Request, Response, Runtime,
    RuntimeConfig, Service, Subprotocols,
};

/// What to try the plugin with.
#[derive(Debug, Clone, clap::Args)]
pub struct TrialArgs {
    /// The component to try.
    pub file: std::path::PathBuf,
    /// The service type (default: the plugin's first).
    #[arg(long = "type")]
    pub service_type: Option<String>,
    /// The path below the prefix (`/x`); un-prefixed, the claim hook is asked about it too.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The query, without `?`.
    #[arg(long)]
    pub query: Option<String>,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The service id: the prefix is `/proxy/{id}`.
    #[arg(long, default_value = "app")]
    pub id: String,
    /// The upstream the service points at.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub upstream: String,
    /// The public host and scheme the client used.
    #[arg(long, default_value = "localhost:8080")]
    pub host: String,
    #[arg(long, default_value = "http")]
    pub scheme: String,
    /// A request header `name:value` (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// A service label `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// WebSocket subprotocols the client offers (repeatable).
    #[arg(long = "protocol")]
    pub protocols: Vec<String>,
    /// A response status: asks `on-response` too.
    #[arg(long)]
    pub status: Option<u16>,
    /// The response's `Location` header.
    #[arg(long)]
    pub location: Option<String>,
    /// The response's `Content-Type` header.
    #[arg(long)]
    pub content_type: Option<String>,
    /// A response header `name:value` (repeatable).
    #[arg(long = "response-header", value_name = "NAME:VALUE")]
    pub response_headers: Vec<String>,
    /// A response body file: `rewrite-body` (or, for a streamed rewrite, `rewrite-chunk`) is
    /// called with it when the plan asks for it; the new body is printed.
    #[arg(long)]
    pub body: Option<std::path::PathBuf>,
    /// For a streamed rewrite: the size of the pieces the body is cut into, as an upstream
    /// would send it.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,
}

/// Runs the trial and returns the report.
pub async fn run(args: &TrialArgs) -> anyhow::Result<String> {
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = plugin::load_for_trial(&runtime, &wasm, &args.file)
        .await
        .with_context(|| format!("loading {}", args.file.display()))?;
    trial(&plugin, args).await
}

async fn trial(plugin: &Arc<Plugin>, args: &TrialArgs) -> anyhow::Result<String> {
    let info = plugin.info();
    let service_type = args
        .service_type
        .clone()
        .or_else(|| info.service_types.first().cloned())
        .unwrap_or_else(|| "generic".to_owned());
    let request = Request {
        method: args.method.clone(),
        path: args.path.clone(),
        query: args.query.clone(),
        prefix: format!("/proxy/{}", args.id),
        public_host: args.host.clone(),
        scheme: args.scheme.clone(),
        headers: pairs(&args.headers, ':', "--header")?
            .into_iter()
            .filter(|(name, _)| plugin.wants_request_header(name))
            .map(|(name, value)| Header { name, value })
            .collect(),
        service: Service {
            id: args.id.clone(),
            service_type,
            labels: pairs(&args.labels, '=', "--label")?,
            upstream: args.upstream.clone(),
        },
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plugin {} {} for {} {}{}{}",
        info.name,
        info.version,
        request.method,
        request.prefix,
        request.path,
        request
            .query
            .as_ref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );

    let _ = writeln!(out, "\non-request:");
    match plugin.on_request(&request).await {
        Ok(plan) => {
            let _ = writeln!(
                out,
                "  upstream {}{}",
                plan.path,
                plan.query.map(|q| format!("?{q}")).unwrap_or_default()
            );
            edits(&mut out, &plan.headers);
        }
        Err(err) => {
            let _ = writeln!(
                out,
                "  failed: {err} (Portico would use the generic behaviour)"
            );
        }
    }

    let _ = writeln!(out, "\non-websocket:");
    match plugin.on_websocket(&request, &args.protocols).await {
        Ok(plan) => {
            let _ = writeln!(
                out,
                "  upstream {}{}",
                plan.path,
                plan.query.map(|q| format!("?{q}")).unwrap_or_default()
            );
            let _ = match plan.protocols {
                Subprotocols::PassThrough => writeln!(out, "  subprotocols passed through"),
                Subprotocols::Replace(list) => {
                    writeln!(out, "  subprotocols replaced by [{}]", list.join(", "))
                }
            };
            edits(&mut out, &plan.headers);
        }
        Err(err) => {
            let _ = writeln!(
                out,
                "  failed: {err} (Portico would use the generic behaviour)"
            );
        }
    }

    let _ = writeln!(out, "\nclaim (the path arriving without the prefix):");
    let declared = info
        .claim_prefixes
        .iter()
        .filter(|prefix| args.path.starts_with(prefix.as_str()))
        .max_by_key(|prefix| prefix.len());
    match declared {
        None => {
            let _ = writeln!(
                out,
                "  not asked: {} is under none of its claim prefixes [{}]",
                args.path,
                info.claim_prefixes.join(", ")
            );
        }
        Some(prefix) => {
            let orphan = OrphanRequest {
                method: request.method.clone(),
                path: args.path.clone(),
                query: args.query.clone(),
            };
            match plugin.claim(&orphan).await {
                Ok(score) => {
                    let _ = writeln!(out, "  score {score} under {prefix}");
                }
                Err(err) => {
                    let _ = writeln!(out, "  failed: {err} (no claim)");
                }
            }
        }
    }

    if let Some(status) = args.status {
        response_trial(plugin, args, request, status, &mut out).await?;
    }
    Ok(out)
}

async fn response_trial(
    plugin: &Arc<Plugin>,
    args: &TrialArgs,
    request: Request,
    status: u16,
    out: &mut String,
) -> anyhow::Result<()> {
    let mut headers = pairs(&args.response_headers, ':', "--response-header")?;
    if let Some(location) = &args.location {
        headers.push(("location".to_owned(), location.clone()));
    }
    if let Some(content_type) = &args.content_type {
        headers.push(("content-type".to_owned(), content_type.clone()));
    }
    let media = args
        .content_type
        .as_deref()
        .map(portico_rewrite::media_type)
        .unwrap_or_default();
    let response = Response {
        request,
        status,
        headers: headers
            .into_iter()
            .filter(|(name, _)| name == "content-type" || plugin.wants_response_header(name))
            .map(|(name, value)| Header { name, value })
            .collect(),
    };
    let _ = writeln!(out, "\non-response ({status}):");
    let asked = plugin.rewrites(&media)
        || response
            .headers
            .iter()
            .any(|header| plugin.wants_response_header(&header.name));
    if !asked {
        let _ = writeln!(
            out,
            "  not asked: the plugin wants none of these response headers and does not rewrite {}",
            if media.is_empty() {
                "bodies without a content type"
            } else {
                media.as_str()
            }
        );
        return Ok(());
    }
    let plan = match plugin.on_response(&response).await {
        Ok(plan) => plan,
        Err(err) => {
            let _ = writeln!(
                out,
                "  failed: {err} (Portico would use the generic behaviour)"
            );
            return Ok(());
        }
    };
    edits(out, &plan.headers);
    let rewrites = plan.body != BodyRewrite::Keep && plugin.rewrites(&media);
    let _ = writeln!(
        out,
        "  body: {}",
        match (rewrites, plan.body) {
            (false, _) => "passed through",
            (true, BodyRewrite::Streamed) => "rewritten as it streams (rewrite-chunk)",
            (true, _) => "rewritten whole (rewrite-body)",
        }
    );
    let Some(path) = args.body.as_ref().filter(|_| rewrites) else {
        return Ok(());
    };
    let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if plan.body == BodyRewrite::Streamed {
        let chunk_size = usize::try_from(args.chunk_size).unwrap_or(usize::MAX);
        stream(out, plugin, &response, &body, chunk_size).await;
        return Ok(());
    }
    let limit = usize::try_from(plugin.info().max_rewrite_bytes).unwrap_or(usize::MAX);
    let _ = writeln!(out, "\nrewrite-body ({} bytes):", body.len());
    match plugin.rewrite_body(&response, &body, limit).await {
        Ok(Some(new)) => {
            let _ = writeln!(out, "{}", String::from_utf8_lossy(&new));
        }
        Ok(None) => {
            let _ = writeln!(out, "  unchanged");
        }
        Err(err) => {
            let _ = writeln!(
                out,
                "  failed: {err} (Portico would send the body as it came)"
            );
        }
    }
    Ok(())
}

/// Streams `body` through `rewrite-chunk` in pieces of `chunk_size` bytes, as the proxy does,
/// printing each call and then the body the client would get.
async fn stream(
    out: &mut String,
    plugin: &Plugin,
    response: &Response,
    body: &[u8],
    chunk_size: usize,
) {
    let _ = writeln!(
        out,
        "\nrewrite-chunk ({} bytes in pieces of {chunk_size}):",
        body.len()
    );
    let mut sent = Vec::new();
    let mut input = Vec::new();
    let mut state = Vec::new();
    let mut pieces = body.chunks(chunk_size).peekable();
    let mut call = 0;
    loop {
        let piece = pieces.next().unwrap_or_default();
        let last = pieces.peek().is_none();
        input.extend_from_slice(piece);
        call += 1;
        match plugin.rewrite_chunk(response, &input, &state, last).await {
            Ok(answer) => {
                let held = usize::try_from(answer.held).map_or(input.len(), |h| h.min(input.len()));
                let _ = writeln!(
                    out,
                    "  call {call}: {} bytes in, {} out, {held} held, {} bytes of state{}",
                    input.len(),
                    answer.output.len(),
                    answer.state.len(),
                    if last { " (last)" } else { "" }
                );
                sent.extend_from_slice(&answer.output);
                if last {
                    sent.extend_from_slice(&input[input.len() - held..]);
                    break;
                }
                input.drain(..input.len() - held);
                state = answer.state;
            }
            Err(err) => {
                let _ = writeln!(
                    out,
                    "  call {call} failed: {err} (Portico would send the rest of the body as it came)"
                );
                sent.extend_from_slice(&input);
                for piece in pieces {
                    sent.extend_from_slice(piece);
                }
                break;
            }
        }
    }
    let _ = writeln!(out, "\nstreamed body ({} bytes):", sent.len());
    let _ = writeln!(out, "{}", String::from_utf8_lossy(&sent));
}

fn edits(out: &mut String, edits: &HeaderEdits) {
    for header in &edits.set {
        let _ = writeln!(out, "  set {}: {}", header.name, header.value);
    }
    for name in &edits.remove {
        let _ = writeln!(out, "  remove {name}");
    }
    if edits.set.is_empty() && edits.remove.is_empty() {
        let _ = writeln!(out, "  no header edits");
    }
}

/// `name{sep}value` arguments as lower-case-named pairs (labels keep their case).
fn pairs(items: &[String], sep: char, flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| {
            let (name, value) = item
                .split_once(sep)
                .with_context(|| format!("{flag} {item:?}: expected NAME{sep}VALUE"))?;
            let name = if sep == ':' {
                name.trim().to_ascii_lowercase()
            } else {
                name.trim().to_owned()
            };
            Ok((name, value.trim().to_owned()))
        })
        .collect()
}
