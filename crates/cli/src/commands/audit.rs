use std::path::{Path, PathBuf};

use clap::Subcommand;
use warden_audit::{
    AuditEvent, CheckpointSigner, CheckpointVerifier, ConsistencyBundle, InclusionBundle,
    Verification, VerifyOptions, verify_consistency,
};
use warden_core::Settings;

use crate::{Outcome, output};

#[derive(Subcommand)]
pub(crate) enum Audit {
    /// The newest events.
    Tail {
        /// How many.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: u64,
        #[command(flatten)]
        filter: EventFilter,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every event of one request id, in order: a held call's tool-call
    /// events and its approval's admin events tell the whole story.
    Show {
        /// The request id.
        request_id: String,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute every leaf, the tree and every checkpoint; exit 1 and name
    /// the first problem.
    Verify {
        /// A checkpoint note kept outside the database: the log must still
        /// contain that tree (default: the AUDIT_CHECKPOINT_PUBLISH file, if any).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The log's public key (text or a file holding it); default: the
        /// public half of AUDIT_SIGNING_KEY_FILE.
        #[arg(long)]
        public_key: Option<String>,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest signed checkpoint.
    Checkpoint {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an inclusion proof bundle for one event (JSON).
    Prove {
        /// The event's request id.
        request_id: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an inclusion proof bundle without a database: exit 0 valid, 1 invalid.
    VerifyProof {
        /// The bundle (from `warden audit prove`).
        file: PathBuf,
        /// The log's public key (text or a file holding it).
        #[arg(long)]
        public_key: String,
    },
    /// Check that a newer checkpoint extends an older one: exit 1 on a fork
    /// or a rollback.
    Consistency {
        /// The older checkpoint note.
        #[arg(long)]
        old: PathBuf,
        /// The newer checkpoint note.
        #[arg(long)]
        new: PathBuf,
        /// The log's public key (text or a file holding it).
        #[arg(long)]
        public_key: String,
        /// A consistency bundle with the proof; without it the proof is
        /// read from the database (which is not trusted: the proof is checked).
        #[arg(long)]
        proof: Option<PathBuf>,
    },
    /// Write a new checkpoint signing key file and print its public key.
    Keygen {
        /// The key file to create (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// The log's origin (its name in checkpoints).
        #[arg(long, default_value = warden_audit::DEFAULT_ORIGIN)]
        origin: String,
    },
    /// Integrate queued events into the tree and checkpoint them.
    Integrate {
        /// Keep running (one round per AUDIT_CHECKPOINT_INTERVAL_MS) until Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
    /// Delete the event rows of old leaves; the tree stays, and the act is a leaf.
    Prune {
        /// Prune events that happened before this time (RFC 3339).
        #[arg(long)]
        before: chrono::DateTime<chrono::Utc>,
        /// Who prunes (recorded in the prune leaf).
        #[arg(long, default_value = "operator")]
        actor: String,
    },
    /// Write the stored events as JSON lines, in leaf order.
    Export {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        filter: EventFilter,
    },
}

impl Audit {
    /// Commands that need no settings and no database.
    pub(crate) fn is_offline(&self) -> bool {
        matches!(
            self,
            Self::VerifyProof { .. }
                | Self::Keygen { .. }
                | Self::Consistency { proof: Some(_), .. }
        )
    }
}

fn rows(events: &[AuditEvent]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            let inclusion = e.inclusion();
            vec![
                inclusion
                    .and_then(|i| i.leaf_index)
                    .map_or_else(|| "queued".into(), |l| l.to_string()),
                output::time(e.timestamp()),
                e.request_id().to_owned(),
                e.caller_id().to_owned(),
                e.tool_name().unwrap_or("-").to_owned(),
                e.decision().to_string(),
                e.redaction_flags().len().to_string(),
            ]
        })
        .collect()
}

const HEADERS: [&str; 7] = [
    "LEAF", "TIME", "REQUEST", "CALLER", "TOOL", "DECISION", "REDACTED",
];

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// A public key given as text, or as the path of a file holding it.
fn public_key(arg: &str) -> anyhow::Result<CheckpointVerifier> {
    let text = if Path::new(arg).is_file() {
        read(Path::new(arg))?
    } else {
        arg.to_owned()
    };
    CheckpointVerifier::parse(&text).map_err(|e| anyhow::anyhow!("--public-key: {e}"))
}

fn write_out(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
        None => {
            output::line(text.trim_end());
            Ok(())
        }
    }
}

/// Runs a command that needs no database.
pub(crate) fn run_offline(cmd: Audit) -> anyhow::Result<Outcome> {
    match cmd {
        Audit::VerifyProof {
            file,
            public_key: key,
        } => {
            let verifier = public_key(&key)?;
            match InclusionBundle::verify_json(&read(&file)?, &verifier) {
                Ok((bundle, cp)) => {
                    output::line(&format!(
                        "PASS  request {} is leaf {} of the {}-leaf tree signed by {}",
                        bundle.event.request_id, bundle.leaf_index, cp.size, cp.origin
                    ));
                    Ok(Outcome::Success)
                }
                Err(e) => {
                    output::line(&format!("FAIL  {e}"));
                    Ok(Outcome::Failed)
                }
            }
        }
        Audit::Keygen { out, origin } => {
            let (secret, signer) = CheckpointSigner::generate(&origin)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options
                .open(&out)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
            std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())?;
            file.sync_all()?;
            output::line(signer.verifier_key());
            Ok(Outcome::Success)
        }
        Audit::Consistency {
            old,
            new,
            public_key: key,
            proof: Some(proof),
        } => {
            let verifier = public_key(&key)?;
            let bundle: ConsistencyBundle = serde_json::from_str(&read(&proof)?)
                .map_err(|e| anyhow::anyhow!("--proof: not a consistency bundle: {e}"))?;
            consistency_verdict(&read(&old)?, &read(&new)?, &bundle.proof, &verifier)
        }
        _ => anyhow::bail!("this command needs the database"),
    }
}

fn consistency_verdict(
    old: &str,
    new: &str,
    proof: &[String],
    verifier: &CheckpointVerifier,
) -> anyhow::Result<Outcome> {
    match verify_consistency(old, new, proof, verifier) {
        Ok((o, n)) => {
            output::line(&format!(
                "PASS  the {}-leaf tree extends the {}-leaf tree",
                n.size, o.size
            ));
            Ok(Outcome::Success)
        }
        Err(e) => {
            output::line(&format!("FAIL  {e}"));
            Ok(Outcome::Failed)
        }
    }
}

pub(crate) async fn run(settings: &Settings, cmd: Audit) -> anyhow::Result<Outcome> {
    if cmd.is_offline() {
        return run_offline(cmd);
    }
    let warden = super::connect_migrated(settings).await?;
    let query = warden.audit().query();
    let outcome = match cmd {
        Audit::Tail {
            limit,
            filter,
            json,
        } => {
            let Some(filter) = filter.to_audit_filter() else {
                output::error(&"--kind must be tool_call, admin or prune");
                return Ok(Outcome::Failed);
            };
            let events = query.page(&filter, None, limit).await?.events;
            if json {
                output::json(&events);
            } else {
                output::table(&HEADERS, &rows(&events));
            }
            Outcome::Success
        }
        Audit::Show { request_id, json } => match query.list_by_request_id(&request_id).await? {
            events if !events.is_empty() && json => {
                output::json(&events);
                Outcome::Success
            }
            events if !events.is_empty() => {
                for event in &events {
                    output::table(&HEADERS, &rows(std::slice::from_ref(event)));
                    output::line(&format!(
                        "reason:          {}",
                        event.reason().unwrap_or("-")
                    ));
                    output::line(&format!("raw args sha256: {}", event.raw_args_hash()));
                    output::line(&format!("sanitized args:  {}", event.sanitized_args()));
                    for flag in event.redaction_flags() {
                        output::line(&format!("redacted:        {} ({})", flag.path, flag.reason));
                    }
                    let covered = event.inclusion().and_then(|i| i.checkpoint_size);
                    output::line(&format!(
                        "checkpoint:      {}",
                        covered.map_or_else(|| "not yet".into(), |s| format!("tree of {s} leaves"))
                    ));
                }
                Outcome::Success
            }
            _ => {
                output::error(&format!("no audit event with request id {request_id:?}"));
                Outcome::Failed
            }
        },
        Audit::Verify {
            checkpoint,
            public_key: key,
            json,
        } => {
            let verifier = match key {
                Some(k) => Some(public_key(&k)?),
                None => settings
                    .audit_signing_key
                    .as_ref()
                    .map(CheckpointSigner::verifier)
                    .transpose()?,
            };
            // Without --checkpoint, the published checkpoint (kept outside the
            // database) is the reference, when there is one and a key to check it.
            let external = match (&checkpoint, settings.audit_checkpoint_publisher.file()) {
                (Some(path), _) => Some(read(path)?),
                (None, Some(path)) if verifier.is_some() && path.is_file() => {
                    if !json {
                        output::line(&format!(
                            "against the published checkpoint {}",
                            path.display()
                        ));
                    }
                    Some(read(path)?)
                }
                _ => None,
            };
            let options = VerifyOptions {
                verifier,
                external_checkpoint: external,
                integration_window: None,
                step_timeout: Some(settings.audit_step_timeout),
            };
            let verdict = warden.audit().verify(&options).await?;
            if json {
                output::json(&verdict);
            }
            match verdict {
                Verification::Valid {
                    tree_size,
                    rows_checked,
                    pruned,
                    checkpoints,
                    signatures_checked,
                } => {
                    if !json {
                        output::line(&format!(
                            "PASS  {tree_size} leaves ({rows_checked} rows recomputed, {pruned} pruned), \
                             {checkpoints} checkpoints{}",
                            if signatures_checked {
                                ", signatures checked"
                            } else {
                                " (no public key: signatures not checked)"
                            }
                        ));
                    }
                    Outcome::Success
                }
                Verification::Broken(b) => {
                    if !json {
                        output::line(&format!("FAIL  {b}"));
                    }
                    Outcome::Failed
                }
            }
        }
        Audit::Checkpoint { json } => {
            match super::bounded(settings, warden.audit().latest_checkpoint_note()).await? {
                Some(note) => {
                    if json {
                        let cp = warden_audit::SignedCheckpoint::open_unverified(&note)
                            .map_err(|e| anyhow::anyhow!("stored checkpoint: {e}"))?;
                        output::json(&serde_json::json!({
                            "origin": cp.origin, "tree_size": cp.size, "root_hash": cp.root, "note": note,
                        }));
                    } else {
                        output::line(note.trim_end());
                    }
                    Outcome::Success
                }
                None => {
                    output::error(
                        &"no checkpoint yet: nothing has been integrated (warden audit integrate)",
                    );
                    Outcome::Failed
                }
            }
        }
        Audit::Prove { request_id, out } => {
            let bundle =
                super::bounded(settings, warden.audit().prove_inclusion(&request_id)).await?;
            write_out(out.as_deref(), &serde_json::to_string_pretty(&bundle)?)?;
            Outcome::Success
        }
        Audit::Consistency {
            old,
            new,
            public_key: key,
            proof: None,
        } => {
            let verifier = public_key(&key)?;
            let (old_text, new_text) = (read(&old)?, read(&new)?);
            let sizes = (
                warden_audit::SignedCheckpoint::open(&old_text, &verifier),
                warden_audit::SignedCheckpoint::open(&new_text, &verifier),
            );
            let proof = match sizes {
                (Ok(o), Ok(n)) if o.size > 0 && n.size > o.size => {
                    super::bounded(settings, warden.audit().consistency_proof(o.size, n.size))
                        .await?
                }
                _ => Vec::new(),
            };
            consistency_verdict(&old_text, &new_text, &proof, &verifier)?
        }
        Audit::Integrate { follow } => {
            let integrator = warden.audit().integrator();
            if follow {
                let (stop, rx) = tokio::sync::watch::channel(false);
                let task = tokio::spawn(integrator.clone().run(rx));
                let _ = tokio::signal::ctrl_c().await;
                let _ = stop.send(true);
                let _ = task.await;
            }
            let report = integrator.integrate_all().await?;
            output::line(&format!(
                "integrated {} leaves; tree size {}{}",
                report.integrated,
                report.tree_size,
                if report.leader {
                    ""
                } else {
                    " (another process holds the integrator lock)"
                }
            ));
            Outcome::Success
        }
        Audit::Prune { before, actor } => {
            let integrator = warden.audit().integrator();
            let report = warden_audit::prune(&integrator, before, &actor, 10_000).await?;
            output::line(&format!(
                "pruned {} rows under {} prune leaves",
                report.deleted, report.prune_leaves
            ));
            Outcome::Success
        }
        Audit::Export { out, filter } => {
            let sink: Box<dyn std::io::Write + Send> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::stdout()),
            };
            let mut filtered = FilteredLines {
                inner: sink,
                pending: Vec::new(),
                written: 0,
                wanted: filter.wanted(),
            };
            warden.audit().export(None, None, &mut filtered).await?;
            if out.is_some() {
                output::line(&format!("exported {} events", filtered.written));
            }
            Outcome::Success
        }
        Audit::VerifyProof { .. } | Audit::Keygen { .. } | Audit::Consistency { .. } => {
            unreachable_offline()?
        }
    };
    warden.close().await?;
    Ok(outcome)
}

fn unreachable_offline() -> anyhow::Result<Outcome> {
    anyhow::bail!("this command runs without the database")
}

/// Which events a listing keeps: by kind, actor, action and resource.
#[derive(clap::Args)]
pub(crate) struct EventFilter {
    /// Only this kind: tool_call, admin or prune.
    #[arg(long)]
    kind: Option<String>,
    /// Only this actor / caller.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action / method (e.g. key.revoke, approval.approve).
    #[arg(long)]
    action: Option<String>,
    /// Only this resource type / tool (e.g. api_key, approval).
    #[arg(long)]
    resource: Option<String>,
}

impl EventFilter {
    /// The query filter; `None` when `--kind` names no kind.
    fn to_audit_filter(&self) -> Option<warden_audit::AuditFilter> {
        let kind = match self.kind.as_deref() {
            Some(kind) => Some(warden_audit::EventKind::parse(kind)?),
            None => None,
        };
        Some(warden_audit::AuditFilter {
            caller_id: self.actor.clone(),
            kind,
            action: self.action.clone(),
            resource_type: self.resource.clone(),
            ..warden_audit::AuditFilter::default()
        })
    }

    /// The same conditions as (exported JSON field, wanted value) pairs.
    fn wanted(self) -> Vec<(&'static str, String)> {
        [
            ("kind", self.kind),
            ("caller_id", self.actor),
            ("method", self.action),
            ("tool_name", self.resource),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.map(|v| (field, v)))
        .collect()
    }
}

/// Passes through the exported JSON lines whose fields equal every wanted
/// value (kind, actor, action, resource); counts what it wrote.
struct FilteredLines {
    inner: Box<dyn std::io::Write + Send>,
    pending: Vec<u8>,
    written: u64,
    wanted: Vec<(&'static str, String)>,
}

impl FilteredLines {
    fn keep(&self, line: &[u8]) -> bool {
        if self.wanted.is_empty() {
            return true;
        }
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(line) else {
            return false;
        };
        self.wanted
            .iter()
            .all(|(field, value)| event[*field].as_str() == Some(value.as_str()))
    }
}

impl std::io::Write for FilteredLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if self.keep(&line[..line.len() - 1]) {
                self.inner.write_all(&line)?;
                self.written += 1;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
