//! A node refuses to start with a configuration that cannot work, and says what to change.

use ravel::core::{Config, ConfigError, RawNode, ReadMode, Recovered};

fn start(config: Config) -> Result<RawNode, ConfigError> {
    RawNode::new(config, Recovered::default(), 0)
}

#[test]
fn the_defaults_start() {
    assert!(start(Config::new(1, [1, 2, 3])).is_ok());
}

#[test]
fn a_node_outside_the_voters_starts_as_a_non_voter() {
    let node = start(Config::new(4, [1, 2, 3])).expect("a joining node starts");
    assert!(!node.membership().is_voter(4));
}

#[test]
fn each_impossible_setting_is_refused_with_its_reason() {
    let base = || Config::new(1, [1, 2, 3]);
    let cases: Vec<(Config, ConfigError)> = vec![
        (Config::new(0, [0, 1]), ConfigError::ZeroNodeId),
        (Config::new(1, []), ConfigError::NoVoters),
        (
            Config {
                election_timeout_min_ms: 0,
                ..base()
            },
            ConfigError::ZeroTimeout {
                name: "election_timeout_min_ms",
            },
        ),
        (
            Config {
                election_timeout_max_ms: 1000,
                ..base()
            },
            ConfigError::InvertedElectionTimeout {
                min_ms: 1000,
                max_ms: 1000,
            },
        ),
        (
            Config {
                heartbeat_interval_ms: 1000,
                ..base()
            },
            ConfigError::HeartbeatTooSlow {
                heartbeat_ms: 1000,
                election_min_ms: 1000,
            },
        ),
        (
            Config {
                read_mode: ReadMode::Lease,
                check_quorum: false,
                ..base()
            },
            ConfigError::LeaseWithoutCheckQuorum,
        ),
        (
            Config {
                clock_drift_max_ppm: 300_000,
                ..base()
            },
            ConfigError::DriftTooLarge { ppm: 300_000 },
        ),
        (
            Config {
                inflight_messages_max: 0,
                ..base()
            },
            ConfigError::ZeroLimit {
                name: "inflight_messages_max",
            },
        ),
    ];
    for (config, expected) in cases {
        let error = start(config).err().expect("refused");
        assert_eq!(error, expected);
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn the_lease_is_shortened_by_the_drift_allowance_and_the_clock_resolution() {
    let config = Config {
        clock_drift_max_ppm: 10_000,
        ..Config::new(1, [1])
    };
    // (1000 ms - 1 ms of clock resolution) * 0.99 / 1.01
    assert_eq!(config.lease_duration_ms(), 979);
    let exact = Config {
        clock_drift_max_ppm: 0,
        ..Config::new(1, [1])
    };
    // A follower's promise dated at its clock's millisecond may start up to 1 ms early.
    assert_eq!(exact.lease_duration_ms(), 999);
}
