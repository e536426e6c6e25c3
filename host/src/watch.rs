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
