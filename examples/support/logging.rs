//! The examples' logger: `env_logger`, configured by `RUST_LOG`, except that the targets that
//! print request heads never log above DEBUG, whatever the filter says.
//!
//! At TRACE, ureq-proto (`ureq_proto::util`) hex-dumps every byte a request sends and receives
//! in 16-byte rows, the `Authorization: Bearer …` header and secret headers included (one key
//! spans two or three rows, which a reader joins back), and tungstenite
//! (`tungstenite::handshake::client`) prints the whole WebSocket handshake request, the same
//! headers in clear. Their DEBUG records are safe (ureq logs the request with its headers
//! redacted), so the cap keeps them.

use log::{Level, Log, Metadata, Record};

/// Targets (and their sub-modules) that print secrets at TRACE: capped at DEBUG.
pub const HEAD_DUMPING_TARGETS: [&str; 2] = ["ureq_proto", "tungstenite::handshake"];

/// True if a record of `target` at `level` may carry a request head: TRACE from one of
/// [`HEAD_DUMPING_TARGETS`] or its sub-modules.
pub fn may_print_secrets(target: &str, level: Level) -> bool {
    level > Level::Debug
        && HEAD_DUMPING_TARGETS.iter().any(|t| {
            target
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// Installs `builder`'s logger as the process's logger, with [`HEAD_DUMPING_TARGETS`] capped
/// at DEBUG.
pub fn install(mut builder: env_logger::Builder) {
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Filtered(inner))).is_ok() {
        log::set_max_level(max);
    }
}

/// Installs the logger configured by `RUST_LOG`, `default` when it is unset.
#[allow(dead_code)]
pub fn init(default: &str) {
    install(env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(default),
    ));
}

struct Filtered<L>(L);

impl<L: Log> Log for Filtered<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        !may_print_secrets(metadata.target(), metadata.level()) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}
