//! The sharded store's HTTP JSON API, served by every admin replica (`ravel admin --http ADDR`):
//!
//! - `POST /put {"key": K, "val": V}` → `200 {"msg":"ok"}`
//! - `POST /get {"key": K}` → `200 {"key": K, "val": V}`, `404` if the key does not exist
//! - `POST /delete {"key": K}` → `200 {"msg":"ok"}`
//! - `GET /` the status page, `GET /v1/status` the same as JSON.
//!
//! `val` is any JSON value and comes back exactly as it was sent, type and digits included
//! (integers beyond 2^53 too): the group stores the value's JSON text. Errors are
//! `{"error": "..."}`: 400 for a malformed request, 404 for an unknown key, 503 (retry) when no
//! group exists yet, a group has no quorum or cannot be reached, or too many requests are in
//! flight; 500 only for a fault of Ravel's own. Each request goes to the owning group's leader
//! through a [`RoutedClient`] — linearizable reads, as everywhere in Ravel.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{timeout, Duration};

use super::status_page::{self, SystemStatus};
use crate::client::ClientError;
use crate::directory::Directory;
use crate::routed_client::{RoutedClient, RoutedError};
use crate::server::handle::NodeHandle;
use crate::server::http_server;
use crate::server::kv_service::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::server::tls::ServerTls;
use crate::server::tokens::Rights;
use crate::server::ApiError;

/// Requests served at once; more are answered 503 at once rather than queued without bound.
const IN_FLIGHT_MAX: usize = 4096;
/// A request body's bytes, at most: the largest value plus the largest key and the JSON around.
const BODY_BYTES_MAX: usize = VALUE_BYTES_MAX + 2 * KEY_BYTES_MAX + 1024;
/// How long a request may take before it is answered 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP listener, bound before the admin touches its data directory.
pub struct Bound(TcpListener);

pub fn bind(listen: &str) -> Result<Bound, String> {
    let address: std::net::SocketAddr = listen.parse().map_err(|_| {
        format!("HTTP address {listen:?} is not an IP address and port, e.g. 127.0.0.1:8080")
    })?;
    http_server::bind(address, "HTTP").map(Bound)
}

struct Context {
    node: NodeHandle<Directory>,
    routed: Arc<RoutedClient>,
    in_flight: Semaphore,
}

/// Serves until aborted; over TLS with the node's certificate if it serves TLS.
pub async fn serve(
    bound: Bound,
    node: NodeHandle<Directory>,
    routed: Arc<RoutedClient>,
    tls: Option<ServerTls>,
) {
    let context = Arc::new(Context {
        node,
        routed,
        in_flight: Semaphore::new(IN_FLIGHT_MAX),
    });
    let service = service_fn(move |request| {
        let context = context.clone();
        async move { Ok::<_, Infallible>(answer(request, &context).await) }
    });
    http_server::serve(bound.0, tls, service).await;
}

/// An answer: a status and a body.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

impl Answer {
    fn json(status: StatusCode, body: &impl Serialize) -> Self {
        Answer {
            status,
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(body).expect("plain data serializes")),
        }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Self {
        #[derive(Serialize)]
        struct Error {
            error: String,
        }
        Answer::json(
            status,
            &Error {
                error: message.into(),
            },
        )
    }

    fn ok() -> Self {
        Answer {
            status: StatusCode::OK,
            content_type: "application/json",
            body: Bytes::from_static(br#"{"msg":"ok"}"#),
        }
    }
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    context: &Context,
) -> Response<Full<Bytes>> {
    let answer = match context.in_flight.try_acquire() {
        Ok(_permit) => match timeout(REQUEST_TIMEOUT, route(request, context)).await {
            Ok(answer) => answer,
            Err(_) => Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no answer within {} s (the outcome of a write is unknown: read the key to \
                     find out); retry",
                    REQUEST_TIMEOUT.as_secs()
                ),
            ),
        },
        Err(_) => Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{IN_FLIGHT_MAX} requests are in flight already; retry after a short pause"),
        ),
    };
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    if let Ok(value) = answer.content_type.parse() {
        response.headers_mut().insert("content-type", value);
    }
    // Every 503 is worth a retry (no quorum, an election, a partition moving, too busy): say
    // when, as HTTP clients and proxies understand.
    if answer.status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    }
    response
}

async fn route(request: Request<hyper::body::Incoming>, context: &Context) -> Answer {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::POST, "/put" | "/get" | "/delete") => {
            // The admin replica's own --auth-tokens, as a node's gRPC services check them.
            let needed = match path.as_str() {
                "/get" => Rights::ReadOnly,
                _ => Rights::ReadWrite,
            };
            let header = (request.headers().get(hyper::header::AUTHORIZATION))
                .and_then(|value| value.to_str().ok());
            if let Err(error) = context.node.auth.check(header, needed) {
                let status = match error {
                    ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
                    _ => StatusCode::UNAUTHORIZED,
                };
                return Answer::error(status, error.to_string());
            }
            let body = match Limited::new(request.into_body(), BODY_BYTES_MAX)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return Answer::error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "cannot read the request body ({error}); at most {BODY_BYTES_MAX} \
                             bytes"
                        ),
                    )
                }
            };
            let fields = match parse(&body, path == "/put") {
                Ok(fields) => fields,
                Err(message) => return Answer::error(StatusCode::BAD_REQUEST, message),
            };
            let key = Bytes::copy_from_slice(fields.key.as_bytes());
            match path.as_str() {
                "/put" => {
                    let value = fields.val.expect("checked by parse");
                    let value = Bytes::copy_from_slice(value.get().as_bytes());
                    match context.routed.put(key, value).await {
                        Ok(_) => Answer::ok(),
                        Err(error) => failed(error),
                    }
                }
                "/get" => match context.routed.get(key, false).await {
                    Ok(Some(value)) => found(&fields.key, &value),
                    Ok(None) => Answer::error(
                        StatusCode::NOT_FOUND,
                        format!("key {:?} not found", fields.key),
                    ),
                    Err(error) => failed(error),
                },
                _ => match context.routed.delete(key).await {
                    Ok(_) => Answer::ok(),
                    Err(error) => failed(error),
                },
            }
        }
        (Method::GET, "/" | "/v1/status") => match status(context).await {
            Ok(status) if path == "/" => Answer {
                status: StatusCode::OK,
                content_type: "text/html; charset=utf-8",
                body: Bytes::from(status_page::render(&status)),
            },
            Ok(status) => Answer::json(StatusCode::OK, &status),
            Err(error) => Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the admin replica cannot answer: {error}"),
            ),
        },
        (_, "/put" | "/get" | "/delete") => Answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes POST with a JSON body"),
        ),
        (_, "/" | "/v1/status") => {
            Answer::error(StatusCode::METHOD_NOT_ALLOWED, format!("{path} takes GET"))
        }
        _ => Answer::error(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path}; use POST /put, /get or /delete, or GET / or /v1/status"),
        ),
    }
}

/// A request's fields: the key, and for a put the value's JSON text exactly as sent.
#[derive(Debug)]
struct Fields {
    key: String,
    val: Option<Box<RawValue>>,
}

/// Parses and checks a request body. Every field is read as raw JSON first (so a `null` value
/// is a value, not a missing field); unknown fields are refused rather than ignored.
fn parse(body: &[u8], with_value: bool) -> Result<Fields, String> {
    let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body)
        .map_err(|error| format!("the body is not a JSON object ({error})"))?;
    let key = fields
        .remove("key")
        .ok_or_else(|| "the body has no \"key\"".to_string())?;
    let key: String =
        serde_json::from_str(key.get()).map_err(|_| "\"key\" must be a JSON string".to_string())?;
    if key.is_empty() {
        return Err("\"key\" is empty".to_string());
    }
    if key.starts_with('\0') {
        return Err("keys starting with a zero byte are reserved for Ravel".to_string());
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "the key has {} bytes; at most {KEY_BYTES_MAX} are allowed",
            key.len()
        ));
    }
    let val = fields.remove("val");
    if with_value {
        match &val {
            None => return Err("the body has no \"val\"".to_string()),
            Some(val) if val.get().len() > VALUE_BYTES_MAX => {
                return Err(format!(
                    "the value has {} bytes as JSON; at most {VALUE_BYTES_MAX} are allowed",
                    val.get().len()
                ))
            }
            Some(_) => {}
        }
    } else if val.is_some() {
        return Err("only /put takes a \"val\"".to_string());
    }
    if let Some(unknown) = fields.keys().next() {
        return Err(format!(
            "unknown field {unknown:?}; the body has \"key\"{}",
            if with_value { " and \"val\"" } else { "" }
        ));
    }
    Ok(Fields { key, val })
}

/// The answer to a get: the stored JSON text as the value. A value written through gRPC that is
/// not JSON comes back as a JSON string of its bytes (invalid UTF-8 replaced).
fn found(key: &str, value: &[u8]) -> Answer {
    #[derive(Serialize)]
    struct Found<'a> {
        key: &'a str,
        val: &'a RawValue,
    }
    let raw: Box<RawValue> = match serde_json::from_slice::<&RawValue>(value) {
        Ok(raw) => raw.to_owned(),
        Err(_) => {
            let text = serde_json::to_string(&String::from_utf8_lossy(value))
                .expect("a string serializes");
            RawValue::from_string(text).expect("a JSON string is JSON")
        }
    };
    Answer::json(StatusCode::OK, &Found { key, val: &raw })
}

/// The HTTP status for a failed request, with what to do about it.
fn failed(error: RoutedError) -> Answer {
    let status = match &error {
        RoutedError::NoGroups
        | RoutedError::AdminUnreachable(_)
        | RoutedError::GroupEmpty { .. } => StatusCode::SERVICE_UNAVAILABLE,
        RoutedError::Group(ClientError::Api(api)) => match api {
            ApiError::InvalidArgument(_) | ApiError::TooLarge(_) => StatusCode::BAD_REQUEST,
            ApiError::NotLeader { .. }
            | ApiError::NoQuorum(_)
            | ApiError::ShuttingDown
            | ApiError::Overloaded
            | ApiError::OutcomeUnknown(_)
            | ApiError::NotOwned { .. }
            | ApiError::Moving { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::WrongCluster { .. }
            | ApiError::AlreadyExists(_)
            | ApiError::StorageFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // A data group's refusal of the admin's own call: the admin is misconfigured.
            ApiError::Unauthenticated(_) | ApiError::PermissionDenied(_) => StatusCode::BAD_GATEWAY,
        },
        RoutedError::Group(
            ClientError::Unreachable { .. }
            | ClientError::NothingListens(_)
            | ClientError::Unknown(_),
        ) => StatusCode::SERVICE_UNAVAILABLE,
        RoutedError::Group(ClientError::Other(_)) => StatusCode::BAD_GATEWAY,
    };
    Answer::error(status, error.to_string())
}

/// This admin replica's view of the system (its own applied state: a status page must show
/// something even while the admin has no quorum).
async fn status(context: &Context) -> Result<SystemStatus, ApiError> {
    let directory = super::local_directory(&context.node).await?;
    let view = context.node.view().await?;
    Ok(SystemStatus::of(&directory, &view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_checked_and_the_value_kept_exactly() {
        let fields =
            parse(br#"{"key":"k","val":123456789012345678901234567890}"#, true).expect("valid");
        assert_eq!(fields.key, "k");
        assert_eq!(
            fields.val.expect("a value").get(),
            "123456789012345678901234567890"
        );
        let null = parse(br#"{"key":"k","val":null}"#, true).expect("null is a value");
        assert_eq!(null.val.expect("present").get(), "null");
        for (body, with_value, expected) in [
            (&b"not json"[..], true, "not a JSON object"),
            (br#"{"val":1}"#, true, "no \"key\""),
            (br#"{"key":"","val":1}"#, true, "is empty"),
            (br#"{"key":7,"val":1}"#, true, "must be a JSON string"),
            (br#"{"key":"k"}"#, true, "no \"val\""),
            (br#"{"key":"k","val":1}"#, false, "only /put"),
            (br#"{"key":"k","value":1}"#, true, "no \"val\""),
            (
                br#"{"key":"k","val":1,"ttl":5}"#,
                true,
                "unknown field \"ttl\"",
            ),
            (br#"{"key":"\u0000x","val":1}"#, true, "reserved"),
        ] {
            let error = parse(body, with_value).expect_err("refused");
            assert!(error.contains(expected), "{error} for {body:?}");
        }
        let long_key = format!(r#"{{"key":"{}"}}"#, "k".repeat(KEY_BYTES_MAX + 1));
        assert!(parse(long_key.as_bytes(), false)
            .expect_err("too long")
            .contains("at most"));
    }

    #[test]
    fn a_value_not_written_as_json_comes_back_as_a_string() {
        let answer = found("k", b"plain \xff text");
        let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
        assert_eq!(body["val"], "plain \u{fffd} text");
        let answer = found("k", br#"{"a": [1, 2.5, true]}"#);
        assert_eq!(
            std::str::from_utf8(&answer.body).expect("utf-8"),
            r#"{"key":"k","val":{"a": [1, 2.5, true]}}"#
        );
    }
}
