//! One bench client's connection to the leader: unary gRPC calls written straight onto an h2
//! connection, so the generator spends its CPU on requests, not on client layers.
//!
//! Through a tonic channel a request costs the generator ~50 µs of CPU here: hyper flushes a
//! request's headers before its body (two writes, so two loopback segments for the node to take
//! in) and hands each call across three tasks. Here the headers and the body are queued
//! together and leave in one write, as with h2load: the generator's share of the 2 cores drops
//! and the figures say more about the node than about the generator. Redirects, retries and
//! leader discovery stay with [`crate::client::Client`]; a call here that fails is reported,
//! and the bench goes back to the client. Under madsim (no real sockets) it never connects.

// Under madsim only the stubs are compiled, which leave most of this unused.
#![cfg_attr(madsim, allow(dead_code, unused_imports))]

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::Status;

#[cfg(not(madsim))]
use crate::server::leader_proxy::NO_FORWARD;
use crate::server::proto::ravel as pb;
use crate::server::ApiError;

/// A call that takes longer fails (its outcome unknown), and the client finds the leader anew:
/// a paused or cut-off leader holds requests without failing them.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a call failed.
pub enum CallError {
    /// The node answered with an error status.
    Status(Status),
    /// The connection failed; the request may or may not have taken effect.
    Broken(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status(status) => write!(f, "{}", status.message()),
            CallError::Broken(reason) => write!(f, "{reason}"),
        }
    }
}

impl CallError {
    /// The node refused the request as not the leader: it did not take effect.
    pub fn not_leader(&self) -> bool {
        match self {
            CallError::Status(status) => {
                matches!(
                    ApiError::from_status(status),
                    Some(ApiError::NotLeader { .. })
                )
            }
            CallError::Broken(_) => false,
        }
    }
}

pub struct BenchConnection {
    #[cfg(not(madsim))]
    sender: h2::client::SendRequest<Bytes>,
    authority: String,
    /// `https` when the process speaks TLS (`--cacert`), else `http`.
    scheme: &'static str,
    /// `Bearer TOKEN`, sent on every request when the bench has a token.
    #[cfg(not(madsim))]
    authorization: Option<http::HeaderValue>,
}

impl BenchConnection {
    /// Connects to `address` (`host:port`), over TLS if the process speaks it (`--cacert`);
    /// every request carries `token`, if given.
    #[cfg(not(madsim))]
    pub async fn open(address: &str, token: Option<Arc<str>>) -> Result<BenchConnection, String> {
        let failed = |error: &dyn std::fmt::Display| format!("{address}: {error}");
        let authorization = match token {
            Some(token) => Some(
                http::HeaderValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| failed(&"the token holds characters a header cannot carry"))?,
            ),
            None => None,
        };
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|error| failed(&error))?;
        stream.set_nodelay(true).map_err(|error| failed(&error))?;
        let (sender, scheme) = match crate::server::tls::client_config_in_use() {
            None => (
                handshake(stream).await.map_err(|error| failed(&error))?,
                "http",
            ),
            Some(config) => {
                let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
                let name = crate::server::tls::server_name(host)?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(|error| failed(&error))?;
                (
                    handshake(stream).await.map_err(|error| failed(&error))?,
                    "https",
                )
            }
        };
        Ok(BenchConnection {
            sender,
            authority: address.to_string(),
            scheme,
            authorization,
        })
    }

    /// Under madsim there are no real sockets: the bench keeps to its client.
    #[cfg(madsim)]
    pub async fn open(address: &str, _token: Option<Arc<str>>) -> Result<BenchConnection, String> {
        Err(format!("{address}: no direct connections under madsim"))
    }

    pub async fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), CallError> {
        let request = pb::PutRequest { key, value };
        self.call("/ravel.v1.Kv/Put", &request)
            .await
            .and_then(decode::<pb::PutResponse>)
            .map(drop)
    }

    pub async fn get(&mut self, key: Bytes, stale: bool) -> Result<(), CallError> {
        let request = pb::GetRequest { key, stale };
        self.call("/ravel.v1.Kv/Get", &request)
            .await
            .and_then(decode::<pb::GetResponse>)
            .map(drop)
    }

    /// Sends one request and returns the answer's message bytes, or the error status.
    async fn call(&mut self, path: &str, message: &impl Message) -> Result<Bytes, CallError> {
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(path, message))
            .await
            .unwrap_or_else(|_| Err(CallError::Broken("no answer within 2 s".to_string())))
    }

    #[cfg(not(madsim))]
    async fn exchange(&mut self, path: &str, message: &impl Message) -> Result<Bytes, CallError> {
        let broken = |error: h2::Error| CallError::Broken(error.to_string());
        let mut body = BytesMut::with_capacity(5 + message.encoded_len());
        body.put_u8(0);
        body.put_u32(message.encoded_len() as u32);
        message
            .encode(&mut body)
            .expect("the buffer has room for the message");
        let mut request =
            http::Request::post(format!("{}://{}{path}", self.scheme, self.authority))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                // A former leader answers "not leader" (the bench then finds the new one) rather
                // than passing the request on.
                .header(NO_FORWARD, "1")
                .body(())
                .map_err(|error| CallError::Broken(error.to_string()))?;
        if let Some(authorization) = &self.authorization {
            (request.headers_mut()).insert(http::header::AUTHORIZATION, authorization.clone());
        }
        let mut sender = self.sender.clone().ready().await.map_err(broken)?;
        let (response, mut stream) = sender.send_request(request, false).map_err(broken)?;
        stream.send_data(body.freeze(), true).map_err(broken)?;
        let (head, mut answer) = response.await.map_err(broken)?.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(CallError::Broken(format!("HTTP status {}", head.status)));
        }
        // An error with nothing else to say comes in the headers alone.
        if let Some(status) = Status::from_header_map(&head.headers) {
            if status.code() != tonic::Code::Ok {
                return Err(CallError::Status(status));
            }
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = answer.data().await {
            let chunk = chunk.map_err(broken)?;
            let _ = answer.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = answer.trailers().await.map_err(broken)?.unwrap_or_default();
        match Status::from_header_map(&trailers) {
            Some(status) if status.code() == tonic::Code::Ok => {}
            Some(status) => return Err(CallError::Status(status)),
            None => {
                return Err(CallError::Broken(
                    "the answer has no gRPC status".to_string(),
                ))
            }
        }
        let whole = data.len() >= 5
            && data[0] == 0
            && u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize == data.len() - 5;
        if !whole {
            return Err(CallError::Broken(
                "the answer is not one gRPC message".to_string(),
            ));
        }
        Ok(data.freeze().slice(5..))
    }

    #[cfg(madsim)]
    async fn exchange(&mut self, path: &str, _: &impl Message) -> Result<Bytes, CallError> {
        Err(CallError::Broken(format!(
            "{}{path}: not under madsim",
            self.authority
        )))
    }
}

/// An h2 connection over `stream`, driven on a task of its own.
#[cfg(not(madsim))]
async fn handshake<T>(stream: T) -> Result<h2::client::SendRequest<Bytes>, h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::handshake(stream).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn decode<M: Message + Default>(bytes: Bytes) -> Result<M, CallError> {
    M::decode(bytes).map_err(|error| CallError::Broken(format!("a malformed answer: {error}")))
}
