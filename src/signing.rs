//! Signed head statements: evidence that does not depend on trusting the database. The server's
//! Ed25519 key signs, now and then, every chain's head; a later rewrite of the history behind a
//! signed head, even one re-hashed end to end, no longer matches what was signed.
//!
//! A statement is the compact JSON array (docs/audit.md, "Head statements")
//!
//! ```text
//! ["gitops-status-heads/1", previous_statement_hash, seq, at, records,
//!  [[repo, server, head_id, head_hash], ...], fleet_head]
//! ```
//!
//! with the heads sorted by repo then server (bytewise), `fleet_head` `[id, hash]` or `null`,
//! hashes as lowercase hex and `at` as the API writes times. The signature is Ed25519 over its
//! UTF-8 bytes; its hash (what the next statement links to) is their SHA-256. Keys are stored as
//! PEM: the private key PKCS#8, the public key SPKI, as OpenSSL and Python's `cryptography` write
//! and read them.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::chain::Hash;
use crate::timestamp::Timestamp;

/// The first element of every statement; a new encoding gets a new version.
pub const STATEMENT_VERSION: &str = "gitops-status-heads/1";

/// The server's signing key. `Debug` shows the public half only.
pub struct StatementKey {
    key: SigningKey,
}

impl fmt::Debug for StatementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementKey")
            .field(
                "public_key",
                &hex::encode(self.key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

/// Why a key cannot be used; the message never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by group or others (mode {mode:04o}); a signing key must be private: \
         chmod 600 {path}"
    )]
    Exposed { path: String, mode: u32 },
    #[error("{path} is not an Ed25519 {what} in PEM ({detail})")]
    Format {
        path: String,
        what: &'static str,
        detail: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate a key: {0}")]
    Random(String),
}

impl StatementKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|error| KeyError::Random(error.to_string()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Reads a PKCS#8 PEM private key, refusing a file that group or others may read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let metadata = std::fs::metadata(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        refuse_exposed(&metadata, &shown)?;
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|error| KeyError::Format {
            path: shown,
            what: "private key (PKCS#8)",
            // The error names what failed to parse, never the bytes.
            detail: error.to_string(),
        })?;
        Ok(Self { key })
    }

    /// Writes the private key to `private` (PKCS#8 PEM, mode 0600, never over an existing file)
    /// and the public key to `public` (SPKI PEM).
    pub fn write(&self, private: &Path, public: &Path) -> Result<(), KeyError> {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|error| KeyError::Random(error.to_string()))?;
        write_new(private, pem.as_bytes(), 0o600)?;
        write_new(public, public_pem(&self.public_key()).as_bytes(), 0o644)
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `statement`'s canonical encoding.
    pub fn sign(&self, statement: &HeadStatement) -> SignedStatement {
        let text = statement.encode();
        let signature = self.key.sign(text.as_bytes());
        SignedStatement {
            hash: statement_hash(&text),
            signature: signature.to_bytes().to_vec(),
            public_key: self.public_key().as_bytes().to_vec(),
            statement: statement.clone(),
            text,
        }
    }
}

#[cfg(unix)]
fn refuse_exposed(metadata: &std::fs::Metadata, path: &str) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_exposed(_: &std::fs::Metadata, _: &str) -> Result<(), KeyError> {
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let failed = |source| KeyError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// The public key as SPKI PEM.
pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
}

/// Reads an SPKI PEM public key (what `keygen` writes beside the private key).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let shown = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|error| KeyError::Format {
        path: shown,
        what: "public key (SPKI)",
        detail: error.to_string(),
    })
}

/// Where `keygen` writes the public key when the private key goes to `private`.
pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// SHA-256 of a statement's encoding.
pub fn statement_hash(text: &str) -> Hash {
    Sha256::digest(text.as_bytes()).into()
}

/// One chain's newest record as a statement signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub repo: String,
    pub server: String,
    pub id: i64,
    pub hash: Hash,
}

/// What a head statement says (docs/audit.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadStatement {
    /// 1 for the first statement; each next one is one more.
    pub seq: i64,
    pub at: Timestamp,
    /// Records (snapshots and events) stored when it was made.
    pub records: i64,
    /// The hash of the statement before it; `None` for the first.
    pub previous: Option<Hash>,
    /// Every target's chain head, sorted by repo then server.
    pub heads: Vec<SignedHead>,
    /// The fleet chain's newest event, if it has any.
    pub fleet: Option<(i64, Hash)>,
}

impl HeadStatement {
    /// The canonical encoding, the bytes that are signed and hashed.
    pub fn encode(&self) -> String {
        let hash = |hash: &Hash| Value::String(hex::encode(hash));
        let heads: Vec<Value> = self
            .heads
            .iter()
            .map(|head| {
                Value::Array(vec![
                    Value::String(head.repo.clone()),
                    Value::String(head.server.clone()),
                    Value::from(head.id),
                    hash(&head.hash),
                ])
            })
            .collect();
        let array = Value::Array(vec![
            Value::String(STATEMENT_VERSION.to_owned()),
            self.previous.as_ref().map_or(Value::Null, hash),
            Value::from(self.seq),
            Value::String(self.at.to_string()),
            Value::from(self.records),
            Value::Array(heads),
            self.fleet.as_ref().map_or(Value::Null, |(id, fleet)| {
                Value::Array(vec![Value::from(*id), hash(fleet)])
            }),
        ]);
        // A Value of strings, numbers and arrays always serializes.
        serde_json::to_string(&array).unwrap_or_default()
    }

    /// Reads a statement back from its encoding, which must be canonical (what `encode` writes).
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        let parts = value.as_array().ok_or("not a JSON array")?;
        let [version, previous, seq, at, records, heads, fleet] = parts.as_slice() else {
            return Err(format!("{} elements, not 7", parts.len()));
        };
        if version.as_str() != Some(STATEMENT_VERSION) {
            return Err(format!("version {version}, not {STATEMENT_VERSION}"));
        }
        let statement = Self {
            seq: seq.as_i64().ok_or("seq is not an integer")?,
            at: at
                .as_str()
                .and_then(Timestamp::parse_rfc3339)
                .ok_or("at is not a time")?,
            records: records.as_i64().ok_or("records is not an integer")?,
            previous: match previous {
                Value::Null => None,
                other => Some(parse_hash(other)?),
            },
            heads: heads
                .as_array()
                .ok_or("heads is not an array")?
                .iter()
                .map(|head| match head.as_array().map(Vec::as_slice) {
                    Some([repo, server, id, hash]) => Ok(SignedHead {
                        repo: repo
                            .as_str()
                            .ok_or("a head's repo is not a string")?
                            .to_owned(),
                        server: server
                            .as_str()
                            .ok_or("a head's server is not a string")?
                            .to_owned(),
                        id: id.as_i64().ok_or("a head's id is not an integer")?,
                        hash: parse_hash(hash)?,
                    }),
                    _ => Err("a head is not [repo, server, id, hash]".to_owned()),
                })
                .collect::<Result<_, String>>()?,
            fleet: match fleet.as_array().map(Vec::as_slice) {
                None if fleet.is_null() => None,
                Some([id, hash]) => Some((
                    id.as_i64().ok_or("the fleet head's id is not an integer")?,
                    parse_hash(hash)?,
                )),
                _ => return Err("the fleet head is not [id, hash] or null".to_owned()),
            },
        };
        if statement.encode() != text {
            return Err("not in canonical form (spacing, order or escapes differ)".to_owned());
        }
        Ok(statement)
    }
}

fn parse_hash(value: &Value) -> Result<Hash, String> {
    value
        .as_str()
        .filter(|text| text.len() == 64 && !text.bytes().any(|b| b.is_ascii_uppercase()))
        .and_then(|text| hex::decode(text).ok())
        .and_then(|bytes| crate::chain::from_bytes(&bytes))
        .ok_or_else(|| format!("{value} is not a lowercase hex SHA-256"))
}

/// A statement with its signature, as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedStatement {
    pub statement: HeadStatement,
    /// Its canonical encoding: the signed bytes.
    pub text: String,
    pub hash: Hash,
    pub signature: Vec<u8>,
    pub public_key: Vec<u8>,
}

impl SignedStatement {
    /// Checks the stored parts against each other and the signature against `key`: what is
    /// wrong, in words, or `Ok`.
    pub fn check(&self, key: &VerifyingKey) -> Result<(), String> {
        let parsed = HeadStatement::parse(&self.text)
            .map_err(|error| format!("its text is not a head statement: {error}"))?;
        if parsed != self.statement {
            return Err("its stored fields differ from its signed text".to_owned());
        }
        if statement_hash(&self.text) != self.hash {
            return Err("its stored hash is not the SHA-256 of its text".to_owned());
        }
        check_signature(key, &self.text, &self.signature, &self.public_key)
    }

    /// As `GET /api/chain/heads` lists it.
    pub fn listed(&self) -> ListedStatement {
        let statement = &self.statement;
        ListedStatement {
            seq: statement.seq,
            at: statement.at,
            records: statement.records,
            previous: statement.previous.map(hex::encode),
            hash: hex::encode(self.hash),
            heads: statement
                .heads
                .iter()
                .map(|head| ListedHead {
                    repo: Some(head.repo.clone()),
                    server: Some(head.server.clone()),
                    id: head.id,
                    hash: hex::encode(head.hash),
                })
                .chain(statement.fleet.map(|(id, hash)| ListedHead {
                    repo: None,
                    server: None,
                    id,
                    hash: hex::encode(hash),
                }))
                .collect(),
            statement: self.text.clone(),
            signature: hex::encode(&self.signature),
            public_key: hex::encode(&self.public_key),
        }
    }
}

/// Checks an Ed25519 signature over `text` by `key`, naming a different signer when the stored
/// public key is not `key`.
pub fn check_signature(
    key: &VerifyingKey,
    text: &str,
    signature: &[u8],
    signed_by: &[u8],
) -> Result<(), String> {
    if signed_by != key.as_bytes() {
        return Err(format!(
            "it says it was signed by key {}, not by the public key given ({})",
            hex::encode(signed_by),
            hex::encode(key.as_bytes())
        ));
    }
    let signature =
        Signature::from_slice(signature).map_err(|_| "its signature is malformed".to_owned())?;
    key.verify_strict(text.as_bytes(), &signature).map_err(|_| {
        "its signature does not verify with the public key given: the statement was forged or \
         edited after it was signed"
            .to_owned()
    })
}

/// A head statement on the wire (`GET /api/chain/heads`).
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct ListedStatement {
    #[schema(example = 42)]
    pub seq: i64,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T11:00:00.000Z")]
    pub at: Timestamp,
    /// Records (snapshots and events) stored when it was signed.
    pub records: i64,
    /// Hex SHA-256 of the statement before it; null for the first.
    pub previous: Option<String>,
    /// Hex SHA-256 of `statement`: what the next statement links to.
    pub hash: String,
    /// Every chain head it signs: targets' (by repo, server), then the fleet chain's (repo and
    /// server null), if it has any.
    pub heads: Vec<ListedHead>,
    /// The canonical encoding: the exact bytes signed (docs/audit.md).
    pub statement: String,
    /// Hex Ed25519 signature over `statement`.
    pub signature: String,
    /// Hex Ed25519 public key (32 bytes) of the key that signed it.
    pub public_key: String,
}

/// The fields in the schema's order, the time followed by its `_ms` twin.
impl Serialize for ListedStatement {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("ListedStatement", 10)?;
        out.serialize_field("seq", &self.seq)?;
        crate::model::times::time_field(&mut out, "at", "at_ms", self.at)?;
        out.serialize_field("records", &self.records)?;
        out.serialize_field("previous", &self.previous)?;
        out.serialize_field("hash", &self.hash)?;
        out.serialize_field("heads", &self.heads)?;
        out.serialize_field("statement", &self.statement)?;
        out.serialize_field("signature", &self.signature)?;
        out.serialize_field("public_key", &self.public_key)?;
        out.end()
    }
}

/// A chain's newest record as a statement signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ListedHead {
    pub repo: Option<String>,
    pub server: Option<String>,
    pub id: i64,
    pub hash: String,
}

/// The outcome of checking the signed head statements (`verify --public-key`, and `/api/verify`
/// on a server with `--signing-key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatementsVerification {
    /// True when every statement is signed by `public_key`, they form one chain from the first,
    /// and every head they sign is on the stored chains.
    pub ok: bool,
    /// Hex Ed25519 public key the signatures were checked with.
    pub public_key: String,
    /// Statements checked.
    pub checked: i64,
    /// Signed heads looked up on the chains (a head unchanged since the previous statement is
    /// looked up once).
    pub heads_checked: i64,
    /// Signed heads that retention removed since (covered by a checkpoint; their hash can no
    /// longer be compared).
    pub pruned_heads: i64,
    /// The newest statement that checked out, and when it was signed.
    pub latest_seq: Option<i64>,
    #[schema(value_type = Option<String>, example = "2026-04-21T11:00:00.000Z")]
    pub latest_at: Option<Timestamp>,
    /// The first statement that does not check out, and why; null when `ok`.
    pub first_bad: Option<BadStatement>,
}

/// A statement that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BadStatement {
    pub seq: i64,
    /// What is wrong, in words.
    pub reason: String,
    /// The chain whose signed head does not match, when that is what is wrong (repo and server
    /// null for the fleet chain's, or for a statement that is bad in itself).
    pub repo: Option<String>,
    pub server: Option<String>,
    /// The record id the statement signed as that chain's head.
    pub id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> HeadStatement {
        HeadStatement {
            seq: 2,
            at: Timestamp::parse_rfc3339("2026-04-21T11:00:00Z").unwrap(),
            records: 914,
            previous: Some([1; 32]),
            heads: vec![SignedHead {
                repo: "rsyslog".to_owned(),
                server: "rsyslog-lab".to_owned(),
                id: 913,
                hash: [2; 32],
            }],
            fleet: Some((914, [3; 32])),
        }
    }

    #[test]
    fn a_statement_encodes_as_documented_and_parses_back() {
        let text = statement().encode();
        assert_eq!(
            text,
            format!(
                r#"["gitops-status-heads/1","{}",2,"2026-04-21T11:00:00.000Z",914,[["rsyslog","rsyslog-lab",913,"{}"]],[914,"{}"]]"#,
                "01".repeat(32),
                "02".repeat(32),
                "03".repeat(32)
            )
        );
        assert_eq!(HeadStatement::parse(&text).unwrap(), statement());
        let spaced = text.replace(",", ", ");
        assert!(
            HeadStatement::parse(&spaced)
                .unwrap_err()
                .contains("canonical")
        );
    }

    #[test]
    fn a_signature_verifies_with_its_key_only_and_not_after_an_edit() {
        let key = StatementKey::generate().unwrap();
        let signed = key.sign(&statement());
        assert_eq!(signed.check(&key.public_key()), Ok(()));

        let other = StatementKey::generate().unwrap();
        assert!(
            signed
                .check(&other.public_key())
                .unwrap_err()
                .contains("signed by key")
        );

        let mut edited = signed.clone();
        edited.statement.records = 1;
        edited.text = edited.statement.encode();
        edited.hash = statement_hash(&edited.text);
        assert!(
            edited
                .check(&key.public_key())
                .unwrap_err()
                .contains("does not verify")
        );
    }

    #[test]
    fn keys_round_trip_through_pem_and_the_private_file_is_private() {
        let directory = tempfile::tempdir().unwrap();
        let private = directory.path().join("key.pem");
        let key = StatementKey::generate().unwrap();
        key.write(&private, &public_path(&private)).unwrap();
        let loaded = StatementKey::load(&private).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        assert_eq!(
            load_public_key(&public_path(&private)).unwrap(),
            key.public_key()
        );
        assert!(key.write(&private, &public_path(&private)).is_err());
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
            let error = StatementKey::load(&private).unwrap_err().to_string();
            assert!(error.contains("readable by group or others"), "{error}");
        }
    }
}
