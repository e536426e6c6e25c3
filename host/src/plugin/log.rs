//! A plugin's stdout and stderr, sent to the host log under the plugin's name, rate-limited so
//! that a chatty or hostile plugin cannot flood the log.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Lines a plugin may log per window; the rest are counted and reported once per window.
const LINES_PER_WINDOW: u32 = 20;
const WINDOW: Duration = Duration::from_secs(1);
/// A line longer than this is cut.
const MAX_LINE: usize = 1024;

/// The log sink shared by every instance of one plugin.
#[derive(Debug)]
pub(crate) struct PluginLog {
    plugin: String,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    window_start: Instant,
    lines: u32,
    suppressed: u64,
}

impl PluginLog {
    pub(crate) fn new(plugin: &str) -> Arc<Self> {
        Arc::new(Self {
            plugin: plugin.to_owned(),
            state: Mutex::new(LogState {
                window_start: Instant::now(),
                lines: 0,
                suppressed: 0,
            }),
        })
    }

    fn emit(&self, stream: &'static str, line: &[u8]) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(state.window_start) >= WINDOW {
            if state.suppressed > 0 {
                tracing::warn!(
                    plugin = %self.plugin,
                    suppressed = state.suppressed,
                    "plugin output rate-limited: lines dropped"
                );
            }
            state.window_start = now;
            state.lines = 0;
            state.suppressed = 0;
        }
        if state.lines >= LINES_PER_WINDOW {
            state.suppressed += 1;
            return;
        }
        state.lines += 1;
        drop(state);
        let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
        tracing::info!(plugin = %self.plugin, stream, "{}", text.trim_end());
    }

    /// A stdout or stderr stream for one instance.
    pub(crate) fn stream(self: &Arc<Self>, stream: &'static str) -> LogStream {
        LogStream {
            log: Arc::clone(self),
            stream,
            pending: Vec::new(),
        }
    }
}

/// One instance's stdout or stderr: splits writes into lines for [`PluginLog`].
#[derive(Debug)]
pub(crate) struct LogStream {
    log: Arc<PluginLog>,
    stream: &'static str,
    pending: Vec<u8>,
}

impl LogStream {
    fn push(&mut self, bytes: &[u8]) {
        for byte in bytes {
            if *byte == b'\n' || self.pending.len() >= MAX_LINE {
                self.log.emit(self.stream, &self.pending);
                self.pending.clear();
                if *byte == b'\n' {
                    continue;
                }
            }
            self.pending.push(*byte);
        }
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.log.emit(self.stream, &self.pending);
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.log.stream(self.stream))
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.log.stream(self.stream))
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LogStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
