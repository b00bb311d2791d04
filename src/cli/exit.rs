//! Exit codes, distinct per kind of failure so scripts can tell them apart.

use crate::client::ClientError;
use crate::routed_client::RoutedError;
use crate::server::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// Anything not listed below.
    Failure = 1,
    /// Bad command-line usage (clap uses 2 as well).
    Usage = 2,
    /// No node answered, or the cluster has no quorum.
    Unavailable = 3,
    /// `get` found no value.
    NotFound = 4,
    /// The cluster refused the request (invalid argument, too large, refused join).
    Refused = 5,
    /// `cas` did not swap: the key held something else.
    CompareFailed = 6,
    /// The request may or may not have taken effect.
    Unknown = 7,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

impl ExitCode {
    pub fn of(error: &ClientError) -> ExitCode {
        match error {
            ClientError::Unreachable { .. } | ClientError::NothingListens(_) => {
                ExitCode::Unavailable
            }
            ClientError::Unknown(_) => ExitCode::Unknown,
            ClientError::Api(ApiError::NoQuorum(_) | ApiError::ShuttingDown) => {
                ExitCode::Unavailable
            }
            ClientError::Api(ApiError::OutcomeUnknown(_)) => ExitCode::Unknown,
            ClientError::Api(_) => ExitCode::Refused,
            ClientError::Other(_) => ExitCode::Failure,
        }
    }

    pub fn of_routed(error: &RoutedError) -> ExitCode {
        match error {
            RoutedError::Group(error) => ExitCode::of(error),
            RoutedError::NoGroups
            | RoutedError::AdminUnreachable(_)
            | RoutedError::GroupEmpty { .. } => ExitCode::Unavailable,
        }
    }
}
