//! Evidence files: one self-contained NDJSON file (`GET /api/evidence`) with the selected
//! records of each target's chain, every record after them up to the head a signed statement
//! covers, the checkpoints that bridge retention's gaps among them, and those statements; and
//! its offline check (`verify-evidence`), which needs nothing but the file and the public key.
//! docs/audit.md, "Evidence files", specifies the lines.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::chain::{self, ChainFields, EventFields, Hash};
use crate::config::VerifyEvidenceArgs;
use crate::model::SyncStatus;
use crate::signing::{self, HeadStatement, SignedStatement};
use crate::store::{ChainRecord, Store, StoreError};
use crate::timestamp::Timestamp;

/// The first line's `version`; a new layout gets a new one.
pub const EVIDENCE_VERSION: &str = "gitops-status-evidence/1";

/// What an evidence file holds: targets by exact repo and server, records in `[from, to)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceSelection {
    pub repo: Option<String>,
    pub server: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// One line of an evidence file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Line {
    /// The first line.
    Evidence {
        version: String,
        generated_at: String,
        repo: Option<String>,
        server: Option<String>,
        from: Option<String>,
        to: Option<String>,
    },
    Snapshot {
        id: i64,
        repo: String,
        server: String,
        sync_status: String,
        drift_count: i64,
        files: Vec<String>,
        last_check: String,
        received_at: String,
        revision: Option<String>,
        run_url: Option<String>,
        message: Option<String>,
        stale_after_seconds: Option<i64>,
        previous: Option<String>,
        hash: String,
        selected: bool,
    },
    Event {
        id: i64,
        repo: String,
        server: String,
        kind: String,
        at: String,
        /// The stored body, as a string: the exact bytes hashed.
        body: String,
        previous: Option<String>,
        hash: String,
        selected: bool,
    },
    Checkpoint {
        repo: String,
        server: String,
        after_id: i64,
        resume_hash: String,
    },
    Statement {
        seq: i64,
        at: String,
        /// The canonical encoding: the exact bytes signed.
        statement: String,
        hash: String,
        signature: String,
        public_key: String,
    },
    /// The last line: what the file holds, so a cut file is told from a whole one.
    End {
        records: i64,
        selected: i64,
        checkpoints: i64,
        statements: i64,
    },
}

impl Line {
    fn write(&self, out: &mut Vec<u8>) {
        // Strings, numbers and booleans always serialize.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

/// Statements read per page while looking for the ones that cover the selection.
const STATEMENT_PAGE: i64 = 20;
/// How far before a part's latest record the search for its statement starts: an event's `at`
/// can lie ahead of when it was stored (an acknowledgement resolved by a check up to 5 minutes
/// ahead of the clock), and the statement that covers it was made after it was stored.
const STATEMENT_SLACK_MS: i64 = 10 * 60 * 1000;
/// Records read per page.
const RECORD_PAGE: i64 = 1000;

/// Writes the evidence file for `selection` into `lines`, chunk by chunk; an error ends it early,
/// without its `end` line.
pub async fn export(
    store: Store,
    selection: EvidenceSelection,
    chunks: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    if let Err(error) = write_evidence(&store, &selection, &chunks).await {
        tracing::error!(%error, "evidence export failed mid-stream");
        let _ = chunks.send(Err(std::io::Error::other(error))).await;
    }
}

/// A target's part of the file: its selected records' ids, and the head that covers them.
#[derive(Debug)]
struct Part {
    target: crate::store::EvidenceTarget,
    first: i64,
    last_selected: i64,
    received: i64,
    /// The id of the head a statement signed at or after `last_selected`.
    covered_to: Option<i64>,
}

async fn write_evidence(
    store: &Store,
    selection: &EvidenceSelection,
    chunks: &mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) -> Result<(), StoreError> {
    let send =
        |out: Vec<u8>| async move { chunks.send(Ok(out)).await.map_err(|_| StoreError::Closed) };
    let time = |at: Option<Timestamp>| at.map(|at| at.to_string());
    let mut out = Vec::new();
    Line::Evidence {
        version: EVIDENCE_VERSION.to_owned(),
        generated_at: Timestamp::now().to_string(),
        repo: selection.repo.clone(),
        server: selection.server.clone(),
        from: time(selection.from),
        to: time(selection.to),
    }
    .write(&mut out);
    send(std::mem::take(&mut out)).await?;

    let from = selection.from.unwrap_or(Timestamp::from_millis(i64::MIN));
    let to = selection.to.unwrap_or(Timestamp::from_millis(i64::MAX));
    let mut parts = Vec::new();
    for target in store
        .evidence_targets(selection.repo.as_deref(), selection.server.as_deref())
        .await?
    {
        if let Some((first, last_selected, received)) =
            store.evidence_span(target.id, from, to).await?
        {
            parts.push(Part {
                target,
                first,
                last_selected,
                received,
                covered_to: None,
            });
        }
    }

    // The first statement that signs, for each part, a head at or after its last selected record.
    let mut statements: Vec<SignedStatement> = Vec::new();
    if let Some(earliest) = parts.iter().map(|part| part.received).min() {
        let mut after_seq = 0;
        while parts.iter().any(|part| part.covered_to.is_none()) {
            let rows = store
                .statements_since(
                    Timestamp::from_millis(earliest.saturating_sub(STATEMENT_SLACK_MS)),
                    after_seq,
                    STATEMENT_PAGE,
                )
                .await?;
            let Some(last) = rows.last() else { break };
            after_seq = last.seq;
            for row in rows {
                let Ok(signed) = row.signed() else { continue };
                let heads: HashMap<(&str, &str), i64> = signed
                    .statement
                    .heads
                    .iter()
                    .map(|head| ((head.repo.as_str(), head.server.as_str()), head.id))
                    .collect();
                let mut covers = false;
                for part in parts.iter_mut().filter(|part| part.covered_to.is_none()) {
                    let target = &part.target;
                    let Some(&head) = heads
                        .get(&(target.repo.as_str(), target.server.as_str()))
                        .filter(|head| **head >= part.last_selected)
                    else {
                        continue;
                    };
                    // A head retention removed since cannot anchor the file: a later one will.
                    if store
                        .head_is_stored(&target.repo, &target.server, head)
                        .await?
                    {
                        part.covered_to = Some(head);
                        covers = true;
                    }
                }
                if covers {
                    statements.push(signed);
                }
            }
        }
    }

    let (mut records, mut selected, mut checkpoints) = (0, 0, 0);
    for part in &parts {
        let target = &part.target;
        let upto = part.covered_to.unwrap_or(part.last_selected);
        let bridges: BTreeMap<i64, Vec<u8>> = store
            .evidence_checkpoints(target.id, part.first, upto)
            .await?
            .into_iter()
            .collect();
        let mut previous = store.evidence_previous(target.id, part.first).await?;
        let mut after = part.first - 1;
        loop {
            let page = store
                .evidence_records(target.id, after, upto, RECORD_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id();
            for record in &page {
                let (line, hash) = record_line(record, target, previous.as_deref(), from, to);
                records += 1;
                selected += i64::from(matches!(
                    line,
                    Line::Snapshot { selected: true, .. } | Line::Event { selected: true, .. }
                ));
                line.write(&mut out);
                previous = hash;
                if let Some(resume) = bridges.get(&record.id()) {
                    Line::Checkpoint {
                        repo: target.repo.clone(),
                        server: target.server.clone(),
                        after_id: record.id(),
                        resume_hash: hex::encode(resume),
                    }
                    .write(&mut out);
                    checkpoints += 1;
                    previous = Some(resume.clone());
                }
            }
            send(std::mem::take(&mut out)).await?;
        }
    }
    for signed in &statements {
        Line::Statement {
            seq: signed.statement.seq,
            at: signed.statement.at.to_string(),
            statement: signed.text.clone(),
            hash: hex::encode(signed.hash),
            signature: hex::encode(&signed.signature),
            public_key: hex::encode(&signed.public_key),
        }
        .write(&mut out);
    }
    Line::End {
        records,
        selected,
        checkpoints,
        statements: statements.len() as i64,
    }
    .write(&mut out);
    send(out).await
}

/// A record's line, linked to `previous`, and its stored hash.
fn record_line(
    record: &ChainRecord,
    target: &crate::store::EvidenceTarget,
    previous: Option<&[u8]>,
    from: Timestamp,
    to: Timestamp,
) -> (Line, Option<Vec<u8>>) {
    let within = |at: Timestamp| from <= at && at < to;
    let previous = previous.map(hex::encode);
    match record {
        ChainRecord::Snapshot(snapshot) => (
            Line::Snapshot {
                id: snapshot.id,
                repo: snapshot.repo.clone(),
                server: snapshot.server.clone(),
                sync_status: snapshot.sync_status.as_str().to_owned(),
                drift_count: snapshot.drift_count,
                files: snapshot.file_names().map(str::to_owned).collect(),
                last_check: snapshot.last_check.to_string(),
                received_at: snapshot.received_at.to_string(),
                revision: snapshot.revision.clone(),
                run_url: snapshot.run_url.clone(),
                message: snapshot.message.clone(),
                stale_after_seconds: snapshot.stale_after_seconds,
                previous,
                hash: snapshot.hash.clone(),
                selected: within(snapshot.last_check),
            },
            hex::decode(&snapshot.hash).ok(),
        ),
        ChainRecord::Event {
            id,
            kind,
            at,
            body,
            hash,
        } => (
            Line::Event {
                id: *id,
                repo: target.repo.clone(),
                server: target.server.clone(),
                kind: kind.clone(),
                at: at.to_string(),
                body: body.clone(),
                previous,
                hash: hex::encode(hash),
                selected: within(*at),
            },
            Some(hash.clone()),
        ),
    }
}

/// What a whole, intact evidence file proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub selection: String,
    pub targets: Vec<TargetProof>,
    /// Hex of the key every statement used.
    pub signed_by: Option<String>,
    /// Whether that key is the one the verifier was given.
    pub key_given: bool,
    /// `(seq, at)` of the statements used.
    pub statements: Vec<(i64, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetProof {
    pub repo: String,
    pub server: String,
    pub selected: i64,
    pub first: (i64, String),
    pub last: (i64, String),
    /// The statement whose signed head covers the last selected record.
    pub statement: (i64, String),
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "evidence OK: {}", self.selection)?;
        for target in &self.targets {
            writeln!(
                f,
                "  {}/{}: {} selected records, ids {}..{}, from {} to {}, on the chain signed \
                 by statement {} at {}",
                target.repo,
                target.server,
                target.selected,
                target.first.0,
                target.last.0,
                target.first.1,
                target.last.1,
                target.statement.0,
                target.statement.1
            )?;
        }
        if self.targets.is_empty() {
            writeln!(f, "  no record is selected")?;
        }
        match &self.signed_by {
            Some(key) if self.key_given => writeln!(f, "signed by key {key} (the key given)")?,
            Some(key) => writeln!(
                f,
                "signed by key {key}, named by the file itself: pass --public-key to prove who \
                 signed"
            )?,
            None => {}
        }
        let times: Vec<String> = self
            .statements
            .iter()
            .map(|(seq, at)| format!("{seq} at {at}"))
            .collect();
        if !times.is_empty() {
            writeln!(f, "statements: {}", times.join(", "))?;
        }
        Ok(())
    }
}

/// A record of the file, checked.
#[derive(Debug)]
struct Checked {
    id: i64,
    hash: Hash,
    time: String,
    selected: bool,
}

/// Checks an evidence file's text; what it proves, or the first thing wrong with it.
pub fn verify(text: &str, key: Option<&VerifyingKey>) -> Result<Proof, String> {
    let mut lines: Vec<(usize, Line)> = Vec::new();
    for (index, raw) in text.split_terminator('\n').enumerate() {
        let number = index + 1;
        let line: Line = serde_json::from_str(raw).map_err(|error| {
            format!("line {number} is not an evidence line ({error}): the file is cut or edited")
        })?;
        lines.push((number, line));
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(format!(
            "line {} ends without a newline: the file is truncated",
            lines.len()
        ));
    }
    let Some((
        _,
        Line::Evidence {
            version,
            repo,
            server,
            from,
            to,
            ..
        },
    )) = lines.first()
    else {
        return Err("the first line is not the evidence header".to_owned());
    };
    if version != EVIDENCE_VERSION {
        return Err(format!("version {version}, not {EVIDENCE_VERSION}"));
    }
    let selection = format!(
        "repo {}, server {}, from {} to {}",
        repo.as_deref().unwrap_or("any"),
        server.as_deref().unwrap_or("any"),
        from.as_deref().unwrap_or("the start"),
        to.as_deref().unwrap_or("the end")
    );
    let Some((
        _,
        Line::End {
            records,
            selected,
            checkpoints,
            statements,
        },
    )) = lines.last()
    else {
        return Err(format!(
            "the file ends after line {} without its end line: it is truncated",
            lines.len()
        ));
    };
    let (records, selected, checkpoints, statements) =
        (*records, *selected, *checkpoints, *statements);

    // Each target's records in order, each hash recomputed and each link followed.
    let mut chains: BTreeMap<(String, String), Vec<Checked>> = BTreeMap::new();
    let mut bridges: HashMap<(String, String, i64), Hash> = HashMap::new();
    let mut signed: Vec<SignedStatement> = Vec::new();
    let mut counted = (0i64, 0i64, 0i64, 0i64);
    let mut buffer = Vec::new();
    for (number, line) in &lines[1..lines.len() - 1] {
        let number = *number;
        match line {
            Line::Snapshot {
                id,
                repo,
                server,
                sync_status,
                drift_count,
                files,
                last_check,
                received_at,
                revision,
                run_url,
                message,
                stale_after_seconds,
                previous,
                hash,
                selected,
            } => {
                let bad = |what: &str| format!("line {number}: snapshot {id}: {what}");
                let status =
                    SyncStatus::parse(sync_status).ok_or_else(|| bad("unknown sync_status"))?;
                let time = |text: &str| {
                    Timestamp::parse_rfc3339(text)
                        .filter(|at| at.to_string() == text)
                        .ok_or_else(|| bad("a time is not written as the API writes it"))
                };
                let files = chain::files_json(files.iter().map(String::as_str));
                let fields = ChainFields {
                    id: *id,
                    repo,
                    server,
                    sync_status: status,
                    drift_count: *drift_count,
                    files_json: &files,
                    last_check: time(last_check)?,
                    received_at: time(received_at)?,
                    revision: revision.as_deref(),
                    run_url: run_url.as_deref(),
                    message: message.as_deref(),
                    stale_after_seconds: *stale_after_seconds,
                };
                let previous = parse_optional_hash(previous.as_deref()).map_err(|e| bad(&e))?;
                let computed = chain::link_fields(&fields, previous.as_ref(), &mut buffer);
                push_record(
                    &mut chains,
                    &bridges,
                    (repo, server),
                    "snapshot",
                    Checked {
                        id: *id,
                        hash: computed,
                        time: last_check.clone(),
                        selected: *selected,
                    },
                    previous,
                    hash,
                    number,
                )?;
                counted.0 += 1;
                counted.1 += i64::from(*selected);
            }
            Line::Event {
                id,
                repo,
                server,
                kind,
                at,
                body,
                previous,
                hash,
                selected,
            } => {
                let bad = |what: &str| format!("line {number}: {kind} event {id}: {what}");
                let when = Timestamp::parse_rfc3339(at)
                    .filter(|when| &when.to_string() == at)
                    .ok_or_else(|| bad("its time is not written as the API writes it"))?;
                let fields = EventFields {
                    id: *id,
                    repo: Some(repo),
                    server: Some(server),
                    kind,
                    at: when,
                    body,
                };
                let previous = parse_optional_hash(previous.as_deref()).map_err(|e| bad(&e))?;
                let computed = chain::link_event(&fields, previous.as_ref(), &mut buffer);
                push_record(
                    &mut chains,
                    &bridges,
                    (repo, server),
                    &format!("{kind} event"),
                    Checked {
                        id: *id,
                        hash: computed,
                        time: at.clone(),
                        selected: *selected,
                    },
                    previous,
                    hash,
                    number,
                )?;
                counted.0 += 1;
                counted.1 += i64::from(*selected);
            }
            Line::Checkpoint {
                repo,
                server,
                after_id,
                resume_hash,
            } => {
                let resume = parse_optional_hash(Some(resume_hash))
                    .map_err(|e| format!("line {number}: checkpoint: {e}"))?
                    .unwrap_or_default();
                bridges.insert((repo.clone(), server.clone(), *after_id), resume);
                counted.2 += 1;
            }
            Line::Statement {
                seq,
                at,
                statement,
                hash,
                signature,
                public_key,
            } => {
                let bad = |what: String| format!("line {number}: statement {seq}: {what}");
                let parsed = HeadStatement::parse(statement)
                    .map_err(|e| bad(format!("its text is not a head statement: {e}")))?;
                if parsed.seq != *seq || &parsed.at.to_string() != at {
                    return Err(bad("its seq or time differ from its signed text".to_owned()));
                }
                let decode =
                    |text: &str| hex::decode(text).map_err(|_| bad(format!("{text:?} is not hex")));
                let statement_key = match key {
                    Some(key) => *key,
                    None => VerifyingKey::try_from(decode(public_key)?.as_slice())
                        .map_err(|_| bad("its public key is not an Ed25519 key".to_owned()))?,
                };
                let found = SignedStatement {
                    statement: parsed,
                    text: statement.clone(),
                    hash: parse_optional_hash(Some(hash))
                        .map_err(bad)?
                        .unwrap_or_default(),
                    signature: decode(signature)?,
                    public_key: decode(public_key)?,
                };
                found.check(&statement_key).map_err(bad)?;
                signed.push(found);
                counted.3 += 1;
            }
            Line::Evidence { .. } => {
                return Err(format!("line {number}: a second header: files were joined"));
            }
            Line::End { .. } => {
                return Err(format!(
                    "line {number}: an end line before the end: files were joined"
                ));
            }
        }
    }
    if counted != (records, selected, checkpoints, statements) {
        return Err(format!(
            "the end line counts {records} records ({selected} selected), {checkpoints} \
             checkpoints and {statements} statements, the file holds {} ({}), {} and {}: lines \
             were removed or added",
            counted.0, counted.1, counted.2, counted.3
        ));
    }

    // Every signed head the file holds a record for must be that record; each target's selected
    // records must lie at or before a signed head.
    let mut covered: HashMap<(String, String), (i64, i64, String)> = HashMap::new();
    for statement in &signed {
        let at = statement.statement.at.to_string();
        for head in &statement.statement.heads {
            let key = (head.repo.clone(), head.server.clone());
            let Some(chain) = chains.get(&key) else {
                continue;
            };
            let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
                continue;
            };
            if head.id < first.id || head.id > last.id {
                continue;
            }
            match chain.iter().find(|record| record.id == head.id) {
                Some(record) if record.hash == head.hash => {
                    let entry = covered.entry(key).or_insert((
                        head.id,
                        statement.statement.seq,
                        at.clone(),
                    ));
                    if head.id > entry.0 {
                        *entry = (head.id, statement.statement.seq, at.clone());
                    }
                }
                Some(record) => {
                    return Err(format!(
                        "statement {} signed record {} of {}/{} with hash {}, but the file's \
                         record hashes to {}: the history up to it was rewritten after it was \
                         signed",
                        statement.statement.seq,
                        head.id,
                        head.repo,
                        head.server,
                        hex::encode(head.hash),
                        hex::encode(record.hash)
                    ));
                }
                None => {
                    return Err(format!(
                        "statement {} signed record {} as the head of {}/{}, but the file's run \
                         of that chain has no such record: it was removed",
                        statement.statement.seq, head.id, head.repo, head.server
                    ));
                }
            }
        }
    }
    let mut targets = Vec::new();
    for ((repo, server), chain) in &chains {
        let chosen: Vec<&Checked> = chain.iter().filter(|record| record.selected).collect();
        let (Some(first), Some(last)) = (chosen.first(), chosen.last()) else {
            continue;
        };
        let Some((head, seq, at)) = covered.get(&(repo.clone(), server.clone())) else {
            return Err(format!(
                "{repo}/{server}: no signed statement in the file covers its records: ask again \
                 after the server's next statement (--sign-interval)"
            ));
        };
        if last.id > *head {
            return Err(format!(
                "{repo}/{server}: record {} is after the last signed head in the file (id \
                 {head}): ask again after the server's next statement",
                last.id
            ));
        }
        targets.push(TargetProof {
            repo: repo.clone(),
            server: server.clone(),
            selected: chosen.len() as i64,
            first: (first.id, first.time.clone()),
            last: (last.id, last.time.clone()),
            statement: (*seq, at.clone()),
        });
    }
    let used: Vec<&SignedStatement> = signed.iter().collect();
    Ok(Proof {
        selection,
        targets,
        signed_by: used.first().map(|s| hex::encode(&s.public_key)),
        key_given: key.is_some(),
        statements: used
            .iter()
            .map(|s| (s.statement.seq, s.statement.at.to_string()))
            .collect(),
    })
}

/// Adds a checked record to its chain: its stored hash must be the recomputed one, and it must
/// link to the record before it in the file (or to a checkpoint after that record).
#[allow(clippy::too_many_arguments, reason = "one call site per record kind")]
fn push_record(
    chains: &mut BTreeMap<(String, String), Vec<Checked>>,
    bridges: &HashMap<(String, String, i64), Hash>,
    (repo, server): (&String, &String),
    noun: &str,
    record: Checked,
    previous: Option<Hash>,
    stored: &str,
    number: usize,
) -> Result<(), String> {
    let where_ = format!("line {number}: {noun} {} of {repo}/{server}", record.id);
    if hex::encode(record.hash) != *stored {
        return Err(format!(
            "{where_}: its hash does not match its fields linked to its previous hash: the \
             record was edited"
        ));
    }
    let chain = chains.entry((repo.clone(), server.clone())).or_default();
    if let Some(before) = chain.last() {
        if record.id <= before.id {
            return Err(format!(
                "{where_}: ids are not increasing: records were reordered"
            ));
        }
        let expected = bridges
            .get(&(repo.clone(), server.clone(), before.id))
            .copied()
            .unwrap_or(before.hash);
        if previous != Some(expected) {
            return Err(format!(
                "{where_}: it does not link to record {} before it: a record between them was \
                 removed or edited",
                before.id
            ));
        }
    }
    chain.push(record);
    Ok(())
}

fn parse_optional_hash(text: Option<&str>) -> Result<Option<Hash>, String> {
    text.map(|text| {
        hex::decode(text)
            .ok()
            .filter(|_| text.len() == 64)
            .and_then(|bytes| chain::from_bytes(&bytes))
            .ok_or_else(|| format!("{text:?} is not a hex SHA-256"))
    })
    .transpose()
}

/// `verify-evidence`: exit 0 when the file checks out, 1 when it does not, 2 when it or the key
/// cannot be read.
pub fn verify_command(args: &VerifyEvidenceArgs) -> ExitCode {
    let key = match args.public_key.as_deref().map(signing::load_public_key) {
        Some(Err(error)) => {
            eprintln!("--public-key: {error}");
            return ExitCode::from(2);
        }
        Some(Ok(key)) => Some(key),
        None => None,
    };
    let text = match read(&args.file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("{}: {error}", args.file.display());
            return ExitCode::from(2);
        }
    };
    match verify(&text, key.as_ref()) {
        Ok(proof) => {
            print!("{proof}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            let mut out = String::new();
            let _ = writeln!(out, "evidence NOT OK: {reason}");
            print!("{out}");
            ExitCode::from(1)
        }
    }
}

fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}
