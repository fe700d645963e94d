//! Bearer tokens: the tokens file, the write-token shortcut, and the middleware that decides 401
//! and 403 before a handler runs (and hands the handler a [`Caller`] for the per-repo decision).
//!
//! Tokens are kept only as SHA-256 digests. A presented token is hashed and compared with every
//! configured digest in constant time, so neither its content nor its length leaks through timing,
//! and no token ever reaches a log line (`Debug` prints names only).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wildmatch::WildMatch;

use crate::error::ApiError;

/// Why the token configuration was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("--tokens-file: cannot read {path}: {cause}")]
    Read { path: String, cause: String },
    #[error("--tokens-file: {path} is not a valid tokens file: {cause}")]
    Invalid { path: String, cause: String },
}

/// The tokens file: `[[tokens]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: Option<String>,
    sha256: Option<String>,
    scopes: Vec<Scope>,
    #[serde(default = "all_repos")]
    repos: Vec<String>,
}

fn all_repos() -> Vec<String> {
    vec!["*".to_owned()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Scope {
    Read,
    Write,
}

/// One configured token: its digest, what it may do and on which repos.
struct Token {
    digest: [u8; 32],
    grant: Arc<Grant>,
}

/// What an authenticated caller may do.
#[derive(Debug)]
pub struct Grant {
    /// The token's `name` from the tokens file: safe to log.
    pub name: String,
    write: bool,
    repos: Vec<WildMatch>,
}

impl Grant {
    /// Whether this token may record snapshots of `repo`.
    pub fn may_write(&self, repo: &str) -> bool {
        self.write && self.repos.iter().any(|pattern| pattern.matches(repo))
    }
}

/// Who is calling, as the middleware decided; every request carries one.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No tokens are configured: writes are open.
    Open,
    /// A valid token (reads that are open carry no token and are `Open` too).
    Token(Arc<Grant>),
}

impl Caller {
    /// The 403 for a caller that may not record snapshots of `repo`.
    pub fn authorize_write(&self, repo: &str) -> Result<(), ApiError> {
        match self {
            Self::Open => Ok(()),
            Self::Token(grant) if grant.may_write(repo) => Ok(()),
            Self::Token(grant) => Err(ApiError::Forbidden(format!(
                "token {:?} may not record snapshots of repo {repo:?}",
                grant.name
            ))),
        }
    }
}

/// Every configured token.
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
    reads_protected: bool,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|token| &token.grant.name))
            .finish()
    }
}

impl Tokens {
    /// No tokens: writes and reads are open.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads and checks a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokensError::Read {
            path: path.display().to_string(),
            cause: error.to_string(),
        })?;
        Self::parse(&text).map_err(|cause| TokensError::Invalid {
            path: path.display().to_string(),
            cause,
        })
    }

    /// Parses the TOML text of a tokens file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|error| {
            // The TOML error quotes the offending line, which may hold a token.
            error.message().to_owned()
        })?;
        let mut tokens = Vec::with_capacity(file.tokens.len());
        let mut reads_protected = false;
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let name = entry.name.trim().to_owned();
            let at = |problem: &str| format!("tokens[{index}] ({name:?}): {problem}");
            if name.is_empty() {
                return Err(at("name must not be empty"));
            }
            let digest = match (entry.token, entry.sha256) {
                (Some(token), None) if !token.trim().is_empty() => digest_of(token.trim()),
                (Some(_), None) => return Err(at("token must not be empty")),
                (None, Some(hex_digest)) => {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex_digest.trim(), &mut digest).map_err(|_| {
                        at("sha256 must be the 64 hex digits of the token's SHA-256")
                    })?;
                    digest
                }
                _ => return Err(at("give exactly one of token and sha256")),
            };
            if entry.scopes.is_empty() {
                return Err(at("scopes must name \"read\", \"write\" or both"));
            }
            if entry.repos.is_empty() || entry.repos.iter().any(|repo| repo.trim().is_empty()) {
                return Err(at("repos must be non-empty glob patterns (\"*\" for all)"));
            }
            reads_protected |= entry.scopes.contains(&Scope::Read);
            tokens.push(Token {
                digest,
                grant: Arc::new(Grant {
                    name,
                    write: entry.scopes.contains(&Scope::Write),
                    repos: entry
                        .repos
                        .iter()
                        .map(|pattern| WildMatch::new(pattern.trim()))
                        .collect(),
                }),
            });
        }
        Ok(Self {
            tokens,
            reads_protected,
        })
    }

    /// Adds the all-repos write token of `GITOPS_STATUS_WRITE_TOKEN`.
    pub fn with_write_token(mut self, token: &str) -> Self {
        self.tokens.push(Token {
            digest: digest_of(token),
            grant: Arc::new(Grant {
                name: "GITOPS_STATUS_WRITE_TOKEN".to_owned(),
                write: true,
                repos: vec![WildMatch::new("*")],
            }),
        });
        self
    }

    /// No token configured: anyone may write.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Some token has the read scope: every read needs a token.
    pub fn reads_protected(&self) -> bool {
        self.reads_protected
    }

    /// The grant of the token whose digest matches, comparing with every configured digest in
    /// constant time.
    fn lookup(&self, presented: &str) -> Option<Arc<Grant>> {
        let digest = digest_of(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(Arc::clone(&token.grant));
            }
        }
        found
    }

    /// Decides who is calling: `Err` is the 401 or 403 to answer without running the handler.
    fn caller(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Caller, ApiError> {
        if crate::api::health::is_probe(path) {
            return Ok(Caller::Open);
        }
        let writes = method == Method::POST && path == WRITE_PATH;
        let needs_token = if writes {
            !self.is_empty()
        } else {
            self.reads_protected
        };
        if !needs_token {
            return Ok(Caller::Open);
        }
        let grant = authorization
            .and_then(bearer_token)
            .and_then(|token| self.lookup(token))
            .ok_or_else(|| {
                ApiError::Unauthorized(if authorization.is_some() {
                    "the bearer token is not valid".to_owned()
                } else {
                    "this server needs Authorization: Bearer <token>".to_owned()
                })
            })?;
        if writes && !grant.write {
            return Err(ApiError::Forbidden(format!(
                "token {:?} has no write scope",
                grant.name
            )));
        }
        Ok(Caller::Token(grant))
    }
}

/// The one route that writes.
const WRITE_PATH: &str = "/api/status";

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware: answers 401/403 for requests that need a token they lack, and gives every other
/// request its [`Caller`].
pub async fn authenticate(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    match tokens.caller(request.method(), request.uri().path(), authorization) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

fn digest_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[tokens]]
        name = "ci-rsyslog"
        token = "w-rsyslog"
        scopes = ["write"]
        repos = ["rsyslog", "rsyslog-*"]

        [[tokens]]
        name = "grafana"
        sha256 = "%GRAFANA%"
        scopes = ["read"]
    "#;

    fn tokens() -> Tokens {
        let grafana = hex::encode(digest_of("r-grafana"));
        Tokens::parse(&FILE.replace("%GRAFANA%", &grafana)).unwrap()
    }

    fn status(result: Result<Caller, ApiError>) -> u16 {
        result.map_or_else(|error| error.status().as_u16(), |_| 200)
    }

    #[test]
    fn decides_401_and_403_before_the_handler() {
        let tokens = tokens();
        assert!(tokens.reads_protected());
        let post = |auth| status(tokens.caller(&Method::POST, "/api/status", auth));
        let get = |path, auth| status(tokens.caller(&Method::GET, path, auth));
        assert_eq!(post(None), 401);
        assert_eq!(post(Some("Bearer nope")), 401);
        assert_eq!(post(Some("Basic w-rsyslog")), 401);
        assert_eq!(post(Some("Bearer r-grafana")), 403);
        assert_eq!(post(Some("bearer  w-rsyslog ")), 200);
        assert_eq!(get("/status.json", None), 401);
        assert_eq!(get("/metrics", Some("Bearer r-grafana")), 200);
        assert_eq!(
            get("/badge.svg", Some("Bearer w-rsyslog")),
            200,
            "write implies read"
        );
        assert_eq!(get("/healthz", None), 200);
        assert_eq!(get("/readyz", Some("Bearer nope")), 200);
    }

    #[test]
    fn repo_globs_limit_writes() {
        let Ok(Caller::Token(grant)) =
            tokens().caller(&Method::POST, "/api/status", Some("Bearer w-rsyslog"))
        else {
            panic!("no grant");
        };
        assert!(grant.may_write("rsyslog"));
        assert!(grant.may_write("rsyslog-lab"));
        assert!(!grant.may_write("nginx"));
        assert!(!grant.may_write("rsyslog2"));
    }

    #[test]
    fn no_read_scope_leaves_reads_open_and_none_leaves_writes_open() {
        let writer = Tokens::none().with_write_token("s3cret");
        assert!(!writer.reads_protected());
        assert_eq!(status(writer.caller(&Method::GET, "/history", None)), 200);
        assert_eq!(
            status(writer.caller(&Method::POST, "/api/status", None)),
            401
        );
        assert_eq!(
            status(Tokens::none().caller(&Method::POST, "/api/status", None)),
            200
        );
    }

    #[test]
    fn refuses_bad_entries_without_quoting_tokens() {
        for bad in [
            "[[tokens]]\nname = \"a\"\nscopes = [\"write\"]",
            "[[tokens]]\nname = \"a\"\ntoken = \"t\"\nsha256 = \"00\"\nscopes = [\"write\"]",
            "[[tokens]]\nname = \"a\"\nsha256 = \"zz\"\nscopes = [\"write\"]",
            "[[tokens]]\nname = \"a\"\ntoken = \"t\"\nscopes = []",
            "[[tokens]]\nname = \"a\"\ntoken = \"t\"\nscopes = [\"admin\"]",
            "[[tokens]]\nname = \"a\"\ntoken = \"t\"\nscopes = [\"read\"]\nrepos = []",
            "[[tokens]]\nname = \"\"\ntoken = \"t\"\nscopes = [\"read\"]",
            "[[tokens]]\nname = \"a\"\ntoken = \"hunter2\"\nscope = [\"read\"]",
            "tokens = \"hunter2",
        ] {
            let error = Tokens::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(!error.contains("hunter2"), "{error}");
        }
        assert!(!format!("{:?}", tokens()).contains("w-rsyslog"));
    }
}
