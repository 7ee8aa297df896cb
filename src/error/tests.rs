//! Unit tests of the error types.

use super::*;

#[test]
fn error_stays_small() {
    // The largest variant is PoolTimeout (name, state, last error): keep it there.
    assert!(
        std::mem::size_of::<Error>() <= 112,
        "{}",
        std::mem::size_of::<Error>()
    );
}

#[test]
fn errors_are_send_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Error>();
    check::<ConfigError>();
}

#[test]
fn timeout_message_carries_state_and_last_error() {
    let e = Error::PoolTimeout {
        service: "rvc".into(),
        kind: PoolKind::Http,
        waited: Duration::from_millis(50),
        state: PoolState {
            in_use: 2,
            idle: 0,
            waiting: 3,
            max: 2,
        },
        last_error: Some("connection refused".into()),
    };
    let text = e.to_string();
    assert!(text.contains("'rvc'") && text.contains("2 in use") && text.contains("3 waiting"));
    assert!(text.contains("connection refused"));
    assert_eq!(e.class(), ErrorClass::PoolTimeout);
    assert_eq!(e.phase(), Some(Phase::Wait));
}

#[test]
fn chain_prints_each_cause_once_on_one_line() {
    let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
    let config = ConfigError::Io {
        path: "services.toml".into(),
        source: io,
    };
    let config_text = config.to_string();
    assert_eq!(
        config.chain().to_string(),
        format!("{config_text}: no such file")
    );
    // Three layers: each printed once, outermost first.
    let e = Error::Transport {
        service: "rvc".into(),
        phase: Phase::Connect,
        source: Box::new(config),
    };
    let text = e.chain().to_string();
    assert_eq!(text, format!("{e}: {config_text}: no such file"));
    assert_eq!(text.matches("no such file").count(), 1, "{text}");
    // Any error, and one without a source is its own words.
    let plain = std::io::Error::other("refused");
    assert_eq!(ErrorChain::new(&plain).to_string(), "refused");
}
