//! The errors a client or peer can see, and their gRPC form: a status code for generic tooling and
//! an encoded `ErrorDetail` in the status details that a client can act on (where the leader is).

use bytes::Bytes;
use prost::Message as _;
use tonic::{Code, Status};

use super::proto::ravel::{error_detail::Kind, ErrorDetail};
pub use crate::replica::ApiError;

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let message = error.to_string();
        let (mut partition, mut epoch) = (0, 0);
        let (code, kind, leader_id, leader_address) = match &error {
            ApiError::NotLeader {
                leader_id,
                leader_address,
            } => (
                // With no leader known (an election is on), gRPC's retryable code, as etcd's
                // "no leader": a plain client retries; Ravel's reads the detail either way.
                if leader_id.is_some() {
                    Code::FailedPrecondition
                } else {
                    Code::Unavailable
                },
                Kind::NotLeader,
                leader_id.unwrap_or(0),
                leader_address.clone().unwrap_or_default(),
            ),
            ApiError::NoQuorum(_) => (Code::Unavailable, Kind::NoQuorum, 0, String::new()),
            ApiError::InvalidArgument(_) | ApiError::AlreadyExists(_) => (
                Code::InvalidArgument,
                Kind::InvalidArgument,
                0,
                String::new(),
            ),
            ApiError::TooLarge(_) => (Code::InvalidArgument, Kind::TooLarge, 0, String::new()),
            ApiError::ShuttingDown | ApiError::StorageFailed(_) => {
                (Code::Unavailable, Kind::ShuttingDown, 0, String::new())
            }
            ApiError::Overloaded => (Code::ResourceExhausted, Kind::Overloaded, 0, String::new()),
            ApiError::WrongCluster { .. } => (
                Code::FailedPrecondition,
                Kind::WrongCluster,
                0,
                String::new(),
            ),
            ApiError::OutcomeUnknown(_) => (Code::Unknown, Kind::Unspecified, 0, String::new()),
            ApiError::NotOwned {
                partition: not_owned,
                epoch: held_until,
            } => {
                (partition, epoch) = (*not_owned, *held_until);
                (Code::FailedPrecondition, Kind::NotOwned, 0, String::new())
            }
            ApiError::Moving { partition: moving } => {
                partition = *moving;
                (Code::Unavailable, Kind::Moving, 0, String::new())
            }
            ApiError::Unauthenticated(_) => (
                Code::Unauthenticated,
                Kind::Unauthenticated,
                0,
                String::new(),
            ),
            ApiError::PermissionDenied(_) => (
                Code::PermissionDenied,
                Kind::PermissionDenied,
                0,
                String::new(),
            ),
        };
        let detail = ErrorDetail {
            kind: kind as i32,
            leader_id,
            leader_address,
            partition,
            epoch,
        };
        Status::with_details(code, message, Bytes::from(detail.encode_to_vec()))
    }
}

impl ApiError {
    /// Reads an error back from a status (the client side of `From<ApiError> for Status`).
    /// Statuses without a Ravel detail (a transport failure, a timeout) give `None`.
    pub fn from_status(status: &Status) -> Option<ApiError> {
        let detail = ErrorDetail::decode(status.details()).ok()?;
        let message = status.message();
        Some(match detail.kind() {
            Kind::NotLeader => ApiError::NotLeader {
                leader_id: (detail.leader_id != 0).then_some(detail.leader_id),
                leader_address: (!detail.leader_address.is_empty())
                    .then_some(detail.leader_address),
            },
            Kind::NoQuorum => rebuild(message, ApiError::NoQuorum),
            Kind::InvalidArgument => rebuild(message, ApiError::InvalidArgument),
            Kind::TooLarge => rebuild(message, ApiError::TooLarge),
            Kind::ShuttingDown => ApiError::ShuttingDown,
            Kind::Overloaded => ApiError::Overloaded,
            Kind::WrongCluster => ApiError::InvalidArgument(message.to_string()),
            Kind::NotOwned => ApiError::NotOwned {
                partition: detail.partition,
                epoch: detail.epoch,
            },
            Kind::Moving => ApiError::Moving {
                partition: detail.partition,
            },
            Kind::Unauthenticated => rebuild(message, ApiError::Unauthenticated),
            Kind::PermissionDenied => rebuild(message, ApiError::PermissionDenied),
            Kind::Unspecified if status.code() == Code::Unknown => {
                rebuild(message, ApiError::OutcomeUnknown)
            }
            Kind::Unspecified => return None,
        })
    }
}

/// The error `variant` whose text is `message`: the status carries the error's whole text, so
/// the words the variant adds around its own message are taken off again (or a client would
/// print "invalid argument: invalid argument: ...").
fn rebuild(message: &str, variant: fn(String) -> ApiError) -> ApiError {
    const MARK: &str = "\u{0}";
    let template = variant(MARK.to_string()).to_string();
    let (prefix, suffix) = template.split_once(MARK).unwrap_or((&template, ""));
    let inner = message
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .unwrap_or(message);
    variant(inner.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client reads back the error the node sent, and prints it as the node worded it.
    #[test]
    fn an_error_survives_its_trip_through_a_status_word_for_word() {
        let errors = [
            ApiError::NotLeader {
                leader_id: Some(2),
                leader_address: Some("127.0.0.1:7380".to_string()),
            },
            ApiError::NotLeader {
                leader_id: None,
                leader_address: None,
            },
            ApiError::NoQuorum("2 of 3 voters unreachable".to_string()),
            ApiError::InvalidArgument("node 9 is not a member".to_string()),
            ApiError::TooLarge("the value has 2000000 bytes".to_string()),
            ApiError::ShuttingDown,
            ApiError::Overloaded,
            ApiError::OutcomeUnknown("leadership changed".to_string()),
            ApiError::NotOwned {
                partition: 17,
                epoch: 0,
            },
            ApiError::NotOwned {
                partition: 3,
                epoch: 2,
            },
            ApiError::Moving { partition: 5 },
        ];
        for error in errors {
            let status = Status::from(error.clone());
            let back = ApiError::from_status(&status).expect("a Ravel error");
            assert_eq!(back, error);
            assert_eq!(back.to_string(), error.to_string());
        }
        let wrong = ApiError::WrongCluster {
            expected: 1,
            got: 7,
        };
        let back = ApiError::from_status(&Status::from(wrong)).expect("a Ravel error");
        assert_eq!(
            back.to_string(),
            "invalid argument: request for cluster 7, but this node belongs to cluster 1"
        );
    }
}
