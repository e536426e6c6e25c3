//! Turning file-system events into settled changes, for the watchers of the configuration
//! file and the plugins directory.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

/// How long the watched path must be quiet before a change is applied, so that a file being
/// copied in or saved by an editor is read once it is whole.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);

/// Waits for the next burst of events to start and then to settle. False once the sender is
/// gone (the watcher was dropped).
pub(crate) async fn next_change(events: &mut UnboundedReceiver<()>) -> bool {
    if events.recv().await.is_none() {
        return false;
    }
    loop {
        match tokio::time::timeout(SETTLE, events.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// True for an event that may have changed a file: anything but a read. Closing a file that
/// was open for writing counts, as it is the one event an in-place write of nothing (a
/// truncation) is sure to give.
pub(crate) fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}
