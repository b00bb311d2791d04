//! Client authentication by bearer tokens (`--auth-tokens FILE`): a request carries
//! `authorization: Bearer TOKEN`, and the token's rights decide what it may do. Read-only
//! tokens read (`get`, `members`); read-write tokens also write, delete, compare-and-swap,
//! remove members and take backups. Without a file, nothing is checked. Peers do not use
//! tokens: they authenticate with mutual TLS (`--peer-ca`), which is also what guards joins.
//!
//! The file holds one token per line, `TOKEN read-only|read-write`, `#` starting a comment;
//! tokens of fewer than 16 characters are refused (a guessable token protects nothing).

use std::path::Path;
use std::sync::Arc;

use super::error::ApiError;

/// Tokens this short are refused when the file is loaded.
pub const TOKEN_CHARS_MIN: usize = 16;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rights {
    ReadOnly,
    ReadWrite,
}

impl Rights {
    fn name(self) -> &'static str {
        match self {
            Rights::ReadOnly => "read-only",
            Rights::ReadWrite => "read-write",
        }
    }
}

/// The tokens a node accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    tokens: Vec<(String, Rights)>,
}

impl Tokens {
    /// Reads a token file, refusing it whole if any line is malformed.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the token file {}: {error}", path.display()))?;
        Tokens::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, rights] = fields[..] else {
                return Err(format!(
                    "line {}: expected `TOKEN read-only` or `TOKEN read-write`",
                    number + 1
                ));
            };
            let rights = match rights {
                "read-only" => Rights::ReadOnly,
                "read-write" => Rights::ReadWrite,
                other => {
                    return Err(format!(
                        "line {}: rights {other:?} are neither read-only nor read-write",
                        number + 1
                    ))
                }
            };
            if token.chars().count() < TOKEN_CHARS_MIN {
                return Err(format!(
                    "line {}: a token needs at least {TOKEN_CHARS_MIN} characters",
                    number + 1
                ));
            }
            tokens.push((token.to_string(), rights));
        }
        if tokens.is_empty() {
            return Err("no tokens (an empty file would refuse every client)".to_string());
        }
        Ok(Tokens { tokens })
    }

    /// The first read-write token of the file: what a sharded store's processes present when
    /// they call one another (the admin's routed requests and moves to the data nodes), so
    /// one file given to every process secures them all.
    pub fn first_read_write(&self) -> Option<&str> {
        (self.tokens.iter())
            .find(|(_, rights)| *rights == Rights::ReadWrite)
            .map(|(token, _)| token.as_str())
    }

    /// The rights of `token`, if it is one of these. Every token is compared in full, so the
    /// time taken does not tell how much of a guess was right.
    fn rights_of(&self, token: &str) -> Option<Rights> {
        let mut found = None;
        for (known, rights) in &self.tokens {
            if same_bytes(known.as_bytes(), token.as_bytes()) {
                found = Some(*rights);
            }
        }
        found
    }
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let differ = (a.iter().zip(b)).fold(a.len() ^ b.len(), |acc, (x, y)| acc | usize::from(x ^ y));
    differ == 0
}

/// The node's client authentication: none, or its tokens.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    tokens: Option<Arc<Tokens>>,
}

impl Auth {
    pub fn new(tokens: Option<Tokens>) -> Self {
        Auth {
            tokens: tokens.map(Arc::new),
        }
    }

    /// Whether a request whose `authorization` header is `header` may do what needs `needed`.
    pub fn check(&self, header: Option<&str>, needed: Rights) -> Result<(), ApiError> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        let Some(token) = header.and_then(|value| value.strip_prefix("Bearer ")) else {
            return Err(ApiError::Unauthenticated(
                "this node needs a token: send `authorization: Bearer TOKEN` (ravel --token)"
                    .to_string(),
            ));
        };
        match tokens.rights_of(token.trim()) {
            None => Err(ApiError::Unauthenticated(
                "the token is not one this node accepts".to_string(),
            )),
            Some(rights) if rights < needed => Err(ApiError::PermissionDenied(format!(
                "a {} token cannot do this; it needs a {} token",
                rights.name(),
                needed.name()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Whether this node checks tokens at all.
    pub fn enabled(&self) -> bool {
        self.tokens.is_some()
    }

    /// The token this process presents to the other processes of a sharded store (see
    /// [`Tokens::first_read_write`]); none without a file or without a read-write token.
    pub fn service_token(&self) -> Option<String> {
        (self.tokens.as_ref())
            .and_then(|tokens| tokens.first_read_write())
            .map(str::to_string)
    }

    /// [`Auth::check`] on a gRPC request's metadata.
    pub fn check_request<T>(
        &self,
        request: &tonic::Request<T>,
        needed: Rights,
    ) -> Result<(), ApiError> {
        let header = request.metadata().get("authorization");
        self.check(header.and_then(|value| value.to_str().ok()), needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READER: &str = "reader-token-0123456789";
    const WRITER: &str = "writer-token-0123456789";

    fn auth() -> Auth {
        let text = format!("# tokens\n{READER} read-only\n\n{WRITER} read-write  # ops\n");
        Auth::new(Some(Tokens::parse(&text).expect("a token file")))
    }

    #[test]
    fn each_token_does_what_its_rights_allow_and_no_more() {
        let auth = auth();
        let bearer = |token: &str| format!("Bearer {token}");
        assert_eq!(auth.check(Some(&bearer(READER)), Rights::ReadOnly), Ok(()));
        assert!(matches!(
            auth.check(Some(&bearer(READER)), Rights::ReadWrite),
            Err(ApiError::PermissionDenied(_))
        ));
        assert_eq!(auth.check(Some(&bearer(WRITER)), Rights::ReadWrite), Ok(()));
        for refused in [
            None,
            Some("Bearer not-a-token-at-all-really".to_string()),
            Some(WRITER.to_string()),
            Some(bearer(&WRITER[..WRITER.len() - 1])),
        ] {
            assert!(
                matches!(
                    auth.check(refused.as_deref(), Rights::ReadOnly),
                    Err(ApiError::Unauthenticated(_))
                ),
                "{refused:?}"
            );
        }
        assert_eq!(Auth::default().check(None, Rights::ReadWrite), Ok(()));
        assert_eq!(auth.service_token().as_deref(), Some(WRITER));
        assert_eq!(Auth::default().service_token(), None);
        let readers_only = Tokens::parse(&format!("{READER} read-only\n")).expect("a file");
        assert_eq!(Auth::new(Some(readers_only)).service_token(), None);
    }

    #[test]
    fn a_malformed_token_file_is_refused_whole() {
        for bad in [
            "",
            "# only a comment\n",
            "short read-only\n",
            "long-enough-token-000 admin\n",
            "long-enough-token-000\n",
            "long-enough-token-000 read-only extra\n",
        ] {
            assert!(Tokens::parse(bad).is_err(), "{bad:?}");
        }
    }
}
