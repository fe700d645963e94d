//! Bearer tokens: the tokens file, the write-token shortcut, the sign-in cookie, and the guard each
//! route group puts in front of its handlers (see `api::groups`): the group, not the path, says
//! whether a route needs read, write or admin access.
//!
//! Tokens are kept only as SHA-256 digests. A presented token is hashed and compared with every
//! configured digest in constant time, so neither its content nor its length leaks through timing,
//! and no token ever reaches a log line (`Debug` prints names only).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wildmatch::WildMatch;

use crate::error::ApiError;

/// Tokens shorter than this get a warning at start: they can be guessed.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// Name of the cookie `POST /login` sets: the percent-encoded token, honoured for reads only.
pub const SESSION_COOKIE: &str = "gitops_status_session";

/// Why the token configuration was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{setting}: cannot read {path}: {cause}")]
    Read {
        setting: String,
        path: String,
        cause: String,
    },
    #[error("{setting}: {path} is not a valid tokens file: {cause}")]
    Invalid {
        setting: String,
        path: String,
        cause: String,
    },
    #[error(
        "{setting}: {path} defines no token; add a [[tokens]] table with name, token (or \
         sha256) and scopes, or leave the setting out to run without authentication"
    )]
    Empty { setting: String, path: String },
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
    Admin,
}

/// What a group of routes needs from its caller. Every route belongs to exactly one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the probes and the sign-in page.
    Open,
    /// A token that may read (any token), once some token has the `read` scope; the sign-in
    /// cookie counts as one.
    Read,
    /// A token with `write` or `admin`, once any token is configured; the handler checks the repo
    /// with [`Writer::authorize`]. Only the `Authorization` header counts, never the cookie: a
    /// browser sends cookies on requests other sites make it send.
    Write,
    /// A token with `admin`, once any token is configured. Header only, as for writes.
    Admin,
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
    read: bool,
    write: bool,
    admin: bool,
    repos: Vec<WildMatch>,
}

impl Grant {
    /// Whether this token may write `repo`: `admin` may write every repo whatever its `repos`.
    pub fn may_write(&self, repo: &str) -> bool {
        self.admin || (self.write && self.repos.iter().any(|pattern| pattern.matches(repo)))
    }

    /// Whether a browser may keep this token in the sign-in cookie: read-only tokens only, so a
    /// stolen cookie can never write.
    fn may_sign_in(&self) -> bool {
        self.read && !self.write && !self.admin
    }
}

/// Who is calling, as the route's guard decided.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No token was needed: no tokens are configured (or, for reads, none has the read scope).
    Open,
    /// A valid token.
    Token(Arc<Grant>),
}

impl Caller {
    /// The name records and logs give the caller: the token's name, or `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Self::Open => "anonymous",
            Self::Token(grant) => &grant.name,
        }
    }
}

/// What the guard admitted, kept in the request's extensions for the extractors below.
#[derive(Debug, Clone)]
struct Admitted {
    caller: Caller,
    access: Access,
}

/// A handler argument that proves the route's guard admitted a writer; the handler still checks
/// the repo, which only the body names, with [`Writer::authorize`]. A handler that takes it on a
/// route outside a write group fails closed with 500.
#[derive(Debug, Clone)]
pub struct Writer(Caller);

impl Writer {
    /// The 403 for a caller that may not write `repo`.
    pub fn authorize(&self, repo: &str) -> Result<(), ApiError> {
        match &self.0 {
            Caller::Open => Ok(()),
            Caller::Token(grant) if grant.may_write(repo) => Ok(()),
            Caller::Token(grant) => Err(ApiError::Forbidden(format!(
                "token {:?} may not write repo {repo:?}",
                grant.name
            ))),
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Admitted>() {
            Some(Admitted {
                caller,
                access: Access::Write | Access::Admin,
            }) => Ok(Self(caller.clone())),
            _ => Err(ApiError::internal(
                "a handler that needs a writer is routed outside the write and admin groups",
            )),
        }
    }
}

/// A handler argument that proves the route's guard admitted an admin (or that no tokens are
/// configured). A handler that takes it on a route outside the admin group fails closed with 500.
#[derive(Debug, Clone)]
pub struct Admin(Caller);

impl Admin {
    pub fn caller(&self) -> &Caller {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Admitted>() {
            Some(Admitted {
                caller,
                access: Access::Admin,
            }) => Ok(Self(caller.clone())),
            _ => Err(ApiError::internal(
                "a handler that needs an admin is routed outside the admin group",
            )),
        }
    }
}

/// Every configured token.
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
    /// Where each token came from, for warnings: `tokens[0] ("ci")`.
    origins: Vec<String>,
    reads_protected: bool,
    warnings: Vec<String>,
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

    /// Reads and checks a tokens file; `setting` names where its path came from
    /// (`--tokens-file` or `GITOPS_STATUS_TOKENS_FILE`). A file that defines no token is
    /// refused: being given one means the operator wants authentication.
    pub fn load(path: &Path, setting: &str) -> Result<Self, TokensError> {
        let setting = setting.to_owned();
        let text = std::fs::read_to_string(path).map_err(|error| TokensError::Read {
            setting: setting.clone(),
            path: path.display().to_string(),
            cause: error.to_string(),
        })?;
        let tokens = Self::parse(&text).map_err(|cause| TokensError::Invalid {
            setting: setting.clone(),
            path: path.display().to_string(),
            cause,
        })?;
        if tokens.is_empty() {
            return Err(TokensError::Empty {
                setting,
                path: path.display().to_string(),
            });
        }
        Ok(tokens)
    }

    /// Parses the TOML text of a tokens file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|error| {
            // The TOML error quotes the offending line, which may hold a token.
            error.message().to_owned()
        })?;
        let mut tokens = Self::default();
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let name = entry.name.trim().to_owned();
            let origin = format!("--tokens-file: tokens[{index}] ({name:?})");
            let at = |problem: &str| format!("tokens[{index}] ({name:?}): {problem}");
            if name.is_empty() {
                return Err(at("name must not be empty"));
            }
            let digest = match (entry.token, entry.sha256) {
                (Some(token), None) if !token.trim().is_empty() => {
                    tokens.warn_if_short(&origin, token.trim());
                    digest_of(token.trim())
                }
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
                return Err(at(
                    "scopes must name \"read\", \"write\", \"admin\" or several",
                ));
            }
            if entry.repos.is_empty() || entry.repos.iter().any(|repo| repo.trim().is_empty()) {
                return Err(at("repos must be non-empty glob patterns (\"*\" for all)"));
            }
            let read = entry.scopes.contains(&Scope::Read);
            tokens.reads_protected |= read;
            tokens.add(
                origin,
                digest,
                Grant {
                    name,
                    read,
                    write: entry.scopes.contains(&Scope::Write),
                    admin: entry.scopes.contains(&Scope::Admin),
                    repos: entry
                        .repos
                        .iter()
                        .map(|pattern| WildMatch::new(pattern.trim()))
                        .collect(),
                },
            );
        }
        Ok(tokens)
    }

    /// Adds the all-repos write token of `GITOPS_STATUS_WRITE_TOKEN`.
    pub fn with_write_token(mut self, token: &str) -> Self {
        let origin = "GITOPS_STATUS_WRITE_TOKEN".to_owned();
        self.warn_if_short(&origin, token);
        self.add(
            origin,
            digest_of(token),
            Grant {
                name: "GITOPS_STATUS_WRITE_TOKEN".to_owned(),
                read: false,
                write: true,
                admin: false,
                repos: vec![WildMatch::new("*")],
            },
        );
        self
    }

    fn add(&mut self, origin: String, digest: [u8; 32], grant: Grant) {
        // At start, not per request: timing does not matter here.
        if let Some(first) = self.tokens.iter().position(|token| token.digest == digest) {
            self.warnings.push(format!(
                "{origin}: the same token as {}; only the first entry's scopes and repos apply",
                self.origins[first]
            ));
        }
        self.origins.push(origin);
        self.tokens.push(Token {
            digest,
            grant: Arc::new(grant),
        });
    }

    fn warn_if_short(&mut self, origin: &str, token: &str) {
        if token.chars().count() < MIN_TOKEN_LENGTH {
            self.warnings.push(format!(
                "{origin}: the token is shorter than {MIN_TOKEN_LENGTH} characters and can be \
                 guessed; use a long random one, e.g. `openssl rand -hex 32`"
            ));
        }
    }

    /// What the operator should fix although the server can start: short and repeated tokens.
    /// Never quotes a token.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// No token configured: anyone may write.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Some token has the read scope: every read needs a token.
    pub fn reads_protected(&self) -> bool {
        self.reads_protected
    }

    /// The grant of the first token whose digest matches, comparing with every configured digest
    /// in constant time.
    fn lookup(&self, presented: &str) -> Option<Arc<Grant>> {
        let digest = digest_of(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(Arc::clone(&token.grant));
            }
        }
        found
    }

    /// Whether `token` may go into the sign-in cookie: a valid token with the read scope and
    /// nothing more. `Err` says why not, for the person at the form.
    pub fn check_sign_in(&self, token: &str) -> Result<(), &'static str> {
        match self.lookup(token.trim()) {
            None => Err("That token is not valid."),
            Some(grant) if grant.may_sign_in() => Ok(()),
            Some(_) => Err(
                "That token can write or administer. Sign in with a token whose only scope is \
                 read: the browser keeps it in a cookie.",
            ),
        }
    }

    /// Decides whether a request with these credentials may use a route that needs `access`:
    /// `Err` is the 401 or 403 to answer without running the handler.
    fn decide(&self, access: Access, credentials: &Credentials) -> Result<Caller, ApiError> {
        let needs_token = match access {
            Access::Open => false,
            Access::Read => self.reads_protected,
            Access::Write | Access::Admin => !self.is_empty(),
        };
        if !needs_token {
            return Ok(Caller::Open);
        }
        let unauthorized = |detail: &str| ApiError::Unauthorized(detail.to_owned());
        let grant = match (&credentials.authorization, &credentials.session) {
            // A header, when given, is the credential; a cookie beside it does not rescue it.
            (Some(header), _) => bearer_token(header)
                .and_then(|token| self.lookup(token))
                .ok_or_else(|| unauthorized("the bearer token is not valid"))?,
            (None, Some(session)) if access == Access::Read => {
                self.lookup(session).ok_or_else(|| {
                    unauthorized("the sign-in is no longer valid; sign in again at /login")
                })?
            }
            (None, Some(_)) => {
                return Err(unauthorized(
                    "the sign-in cookie serves reads only; this needs Authorization: Bearer <token>",
                ));
            }
            (None, None) => {
                return Err(unauthorized(
                    "this server needs Authorization: Bearer <token>",
                ));
            }
        };
        match access {
            Access::Write if !grant.write && !grant.admin => Err(ApiError::Forbidden(format!(
                "token {:?} has no write scope",
                grant.name
            ))),
            Access::Admin if !grant.admin => Err(ApiError::Forbidden(format!(
                "token {:?} has no admin scope",
                grant.name
            ))),
            _ => Ok(Caller::Token(grant)),
        }
    }
}

/// What a request presents: its `Authorization` header and the token in its sign-in cookie.
#[derive(Default)]
struct Credentials {
    authorization: Option<String>,
    session: Option<String>,
}

impl Credentials {
    fn of(headers: &HeaderMap) -> Self {
        Self {
            authorization: headers
                .get(header::AUTHORIZATION)
                .map(|value| value.to_str().unwrap_or_default().to_owned()),
            session: session_token(headers),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token in the request's sign-in cookie, if it has one.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .and_then(|(_, value)| {
            // The value is the token, form-urlencoded so any token fits a cookie.
            form_urlencoded::parse(value.as_bytes())
                .next()
                .map(|(token, _)| token.into_owned())
        })
        .filter(|token| !token.is_empty())
}

/// The `Set-Cookie` value that keeps `token` for reads. `Secure` when the browser reached the
/// server over https (a TLS-terminating proxy says so with `X-Forwarded-Proto: https`).
pub fn session_cookie(token: &str, secure: bool) -> HeaderValue {
    let value: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    cookie_header(&value, "", secure)
}

/// The `Set-Cookie` value that removes the sign-in cookie.
pub fn cleared_session_cookie(secure: bool) -> HeaderValue {
    cookie_header("", "; Max-Age=0", secure)
}

fn cookie_header(value: &str, lifetime: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/{lifetime}{secure}"
    ))
    .expect("a form-urlencoded value is a valid header value")
}

/// Whether the browser reached the server over https, as the proxy in front of it reports.
pub fn came_over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The guard of one route group: the configured tokens and the access the group needs.
#[derive(Debug, Clone)]
pub struct Guard {
    tokens: Arc<Tokens>,
    access: Access,
}

impl Guard {
    pub fn new(tokens: Arc<Tokens>, access: Access) -> Self {
        Self { tokens, access }
    }
}

/// Middleware: answers 401/403 for requests that lack the group's access, and admits the others
/// with their [`Caller`]. A person's browser asking for a page without credentials is sent to the
/// sign-in form instead of a JSON 401 it cannot pass; API clients keep the 401.
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let credentials = Credentials::of(request.headers());
    match guard.tokens.decide(guard.access, &credentials) {
        Ok(caller) => {
            request.extensions_mut().insert(Admitted {
                caller,
                access: guard.access,
            });
            next.run(request).await
        }
        Err(_)
            if guard.access == Access::Read
                && credentials.authorization.is_none()
                && is_page_request(&request) =>
        {
            sign_in_redirect(&request)
        }
        Err(error) => error.into_response(),
    }
}

/// A browser navigating: a GET or HEAD that prefers HTML.
fn is_page_request(request: &Request) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD) && accepts_html(request.headers())
}

/// Whether the client asks for HTML, as a browser does (and API clients do not).
pub fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// 303 to the sign-in form, which sends the person back here afterwards.
fn sign_in_redirect(request: &Request) -> Response {
    let here = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", here)
        .finish();
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, format!("/login?{query}")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
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
        token = "w-rsyslog-0123456789"
        scopes = ["write"]
        repos = ["rsyslog", "rsyslog-*"]

        [[tokens]]
        name = "grafana"
        sha256 = "%GRAFANA%"
        scopes = ["read"]

        [[tokens]]
        name = "ops"
        token = "a-ops-0123456789abc"
        scopes = ["admin"]
        repos = ["x"]
    "#;

    fn tokens() -> Tokens {
        let grafana = hex::encode(digest_of("r-grafana-0123456789"));
        Tokens::parse(&FILE.replace("%GRAFANA%", &grafana)).unwrap()
    }

    fn bearer(token: &str) -> Credentials {
        Credentials {
            authorization: Some(format!("Bearer {token}")),
            session: None,
        }
    }

    fn cookie(token: &str) -> Credentials {
        Credentials {
            authorization: None,
            session: Some(token.to_owned()),
        }
    }

    fn status(tokens: &Tokens, access: Access, credentials: &Credentials) -> u16 {
        tokens
            .decide(access, credentials)
            .map_or_else(|error| error.status().as_u16(), |_| 200)
    }

    #[test]
    fn each_access_needs_its_scope() {
        let tokens = tokens();
        assert!(tokens.reads_protected());
        let none = Credentials::default();
        let check = |access, credentials: &Credentials| status(&tokens, access, credentials);
        for access in [Access::Read, Access::Write, Access::Admin] {
            assert_eq!(check(access, &none), 401, "{access:?}");
            assert_eq!(check(access, &bearer("nope")), 401, "{access:?}");
        }
        assert_eq!(check(Access::Open, &none), 200);
        assert_eq!(check(Access::Open, &bearer("nope")), 200);
        let basic = Credentials {
            authorization: Some("Basic w-rsyslog-0123456789".to_owned()),
            session: None,
        };
        assert_eq!(check(Access::Write, &basic), 401);
        assert_eq!(check(Access::Write, &bearer("r-grafana-0123456789")), 403);
        assert_eq!(
            check(
                Access::Write,
                &Credentials {
                    authorization: Some("bearer  w-rsyslog-0123456789 ".to_owned()),
                    session: None
                }
            ),
            200
        );
        assert_eq!(check(Access::Admin, &bearer("w-rsyslog-0123456789")), 403);
        assert_eq!(check(Access::Admin, &bearer("r-grafana-0123456789")), 403);
        assert_eq!(check(Access::Admin, &bearer("a-ops-0123456789abc")), 200);
        assert_eq!(check(Access::Write, &bearer("a-ops-0123456789abc")), 200);
        for token in [
            "r-grafana-0123456789",
            "w-rsyslog-0123456789",
            "a-ops-0123456789abc",
        ] {
            assert_eq!(check(Access::Read, &bearer(token)), 200, "{token} reads");
        }
    }

    #[test]
    fn the_cookie_serves_reads_only() {
        let tokens = tokens();
        let check = |access, credentials: &Credentials| status(&tokens, access, credentials);
        assert_eq!(check(Access::Read, &cookie("r-grafana-0123456789")), 200);
        assert_eq!(check(Access::Read, &cookie("revoked")), 401);
        assert_eq!(check(Access::Write, &cookie("w-rsyslog-0123456789")), 401);
        assert_eq!(check(Access::Admin, &cookie("a-ops-0123456789abc")), 401);
        let both = Credentials {
            authorization: Some("Bearer nope".to_owned()),
            session: Some("r-grafana-0123456789".to_owned()),
        };
        assert_eq!(
            check(Access::Read, &both),
            401,
            "a bad header is not rescued"
        );
    }

    #[test]
    fn writers_are_limited_to_their_repos_and_admins_are_not() {
        let tokens = tokens();
        let writer = |token| match tokens.decide(Access::Write, &bearer(token)) {
            Ok(caller) => Writer(caller),
            Err(error) => panic!("{error}"),
        };
        let ci = writer("w-rsyslog-0123456789");
        assert!(ci.authorize("rsyslog").is_ok());
        assert!(ci.authorize("rsyslog-lab").is_ok());
        assert_eq!(ci.authorize("nginx").unwrap_err().status().as_u16(), 403);
        assert!(ci.authorize("rsyslog2").is_err());
        let ops = writer("a-ops-0123456789abc");
        assert!(ops.authorize("x").is_ok());
        assert!(ops.authorize("nginx").is_ok(), "admin ignores repos");
        assert_eq!(ops.caller().name(), "ops");
        assert_eq!(Writer(Caller::Open).caller().name(), "anonymous");
    }

    #[test]
    fn no_read_scope_leaves_reads_open_and_none_leaves_everything_open() {
        let writer = Tokens::none().with_write_token("s3cret-0123456789");
        let none = Credentials::default();
        assert!(!writer.reads_protected());
        assert_eq!(status(&writer, Access::Read, &none), 200);
        assert_eq!(status(&writer, Access::Write, &none), 401);
        let open = Tokens::none();
        for access in [Access::Read, Access::Write, Access::Admin] {
            assert_eq!(status(&open, access, &none), 200, "{access:?}");
        }
    }

    #[test]
    fn only_read_only_tokens_may_sign_in() {
        let tokens = tokens();
        assert!(tokens.check_sign_in("r-grafana-0123456789").is_ok());
        assert!(tokens.check_sign_in("nope").is_err());
        assert!(tokens.check_sign_in("w-rsyslog-0123456789").is_err());
        assert!(tokens.check_sign_in("a-ops-0123456789abc").is_err());
    }

    #[test]
    fn the_cookie_round_trips_any_token() {
        let token = "a; b=c %+é";
        let set = session_cookie(token, true);
        let set = set.to_str().unwrap();
        assert!(
            set.ends_with("; HttpOnly; SameSite=Strict; Path=/; Secure"),
            "{set}"
        );
        let value = set.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {value}")).unwrap(),
        );
        assert_eq!(session_token(&headers).as_deref(), Some(token));
        assert_eq!(
            cleared_session_cookie(false),
            "gitops_status_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
    }

    #[test]
    fn short_and_repeated_tokens_are_warned_about_without_quoting_them() {
        let file = r#"
            [[tokens]]
            name = "short"
            token = "hunter2"
            scopes = ["write"]

            [[tokens]]
            name = "again"
            sha256 = "%DIGEST%"
            scopes = ["read"]
        "#
        .replace("%DIGEST%", &hex::encode(digest_of("hunter2")));
        let tokens = Tokens::parse(&file).unwrap().with_write_token("hunter2");
        let warnings = tokens.warnings().join("\n");
        assert_eq!(tokens.warnings().len(), 4, "{warnings}");
        assert!(!warnings.contains("hunter2"), "{warnings}");
        assert!(
            warnings.contains(
                "tokens[1] (\"again\"): the same token as --tokens-file: tokens[0] (\"short\")"
            ),
            "{warnings}"
        );
        assert!(
            warnings.contains("GITOPS_STATUS_WRITE_TOKEN: the token is shorter than 16"),
            "{warnings}"
        );
        assert!(
            tokens.check_sign_in("hunter2").is_err(),
            "the first entry applies"
        );
        assert!(tokens_with_long_distinct_tokens().warnings().is_empty());
    }

    fn tokens_with_long_distinct_tokens() -> Tokens {
        tokens().with_write_token("another-long-token-42")
    }

    #[test]
    fn refuses_bad_entries_without_quoting_tokens() {
        for bad in [
            "[[tokens]]\nname = \"a\"\nscopes = [\"write\"]",
            "[[tokens]]\nname = \"a\"\ntoken = \"t\"\nsha256 = \"00\"\nscopes = [\"write\"]",
            "[[tokens]]\nname = \"a\"\nsha256 = \"zz\"\nscopes = [\"write\"]",
            "[[tokens]]\nname = \"a\"\ntoken = \"t\"\nscopes = []",
            "[[tokens]]\nname = \"a\"\ntoken = \"t\"\nscopes = [\"root\"]",
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
