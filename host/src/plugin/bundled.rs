//! The plugins built with Portico and embedded in its binary.

/// The bundled plugins' components: (name, bytes).
static BUNDLED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The bundled plugins, as (name, component bytes).
pub fn bundled() -> &'static [(&'static str, &'static [u8])] {
    BUNDLED
}
