use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use tracing::{info, instrument};
use warden_approval::ApprovalManager;
use warden_cache::{Cache, RedisPool, Ttl};
use warden_keys::KeyManager;

use crate::{AuditTrail, CoreError, DatabaseBackend, Migrations, Settings};

/// Warden, composed: the one handle front ends (the CLI, the console, a
/// gateway) go through. It owns the database pool, the cache and the
/// settings they were built from, and hands out the domain handles —
/// [`keys`](Self::keys), [`approvals`](Self::approvals),
/// [`audit`](Self::audit), [`health`](Self::health),
/// [`migrations`](Self::migrations) — each configured from those settings,
/// so every front end gets the same bcrypt cost, TTLs, timeouts, redactor
/// and signing key. Cheap to clone (pools are shared handles).
#[derive(Debug, Clone)]
pub struct Warden {
    /// The database pool (sea-orm over sqlx), sized and timed per [`Settings`].
    db: DatabaseConnection,
    /// The cache: Redis when `REDIS_URL` is set, else in-process.
    cache: Cache,
    /// The settings this handle was built from.
    settings: Settings,
    /// The redactor every audit event is built with: the built-in rules plus
    /// the policy's `redaction:` rules, validated when the handle was built.
    redactor: warden_audit::Redactor,
    /// One approval manager per storage: its clones share the decision
    /// subscription and the record of cache entries it could not remove.
    approvals: ApprovalManager,
    /// Keeps this storage's database pool in the pool gauges.
    _pool_probe: Option<std::sync::Arc<crate::telemetry::PoolProbe>>,
}

impl Warden {
    /// Builds both pools and opens at least one database connection, so a wrong
    /// URL or a stopped database fails here with [`CoreError::Database`].
    /// Redis is not contacted: a down Redis shows in [`crate::health::check`].
    #[instrument(name = "storage.connect", skip_all, fields(database = ?settings.database_backend, redis = settings.redis_url.is_some()))]
    pub async fn connect(settings: &Settings) -> Result<Self, CoreError> {
        Self::build(settings, false).await
    }

    /// Like [`Warden::connect`] but opens no connection: the health check uses it
    /// to report an unreachable database instead of failing.
    pub async fn connect_lazy(settings: &Settings) -> Result<Self, CoreError> {
        Self::build(settings, true).await
    }

    async fn build(settings: &Settings, lazy: bool) -> Result<Self, CoreError> {
        // Validated before anything connects: a bad redaction rule is a
        // start-up error naming POLICY_PATH, never a silently weaker redactor.
        // The health check's lazy storage writes no event: it reports the bad
        // policy in its posture check instead of as a database failure.
        let redactor = match settings.redactor() {
            Ok(redactor) => redactor,
            Err(_) if lazy => {
                warden_audit::Redactor::default().with_max_bytes(settings.audit_max_args_bytes)
            }
            Err(e) => return Err(e.into()),
        };
        let pool = &settings.database_pool;
        // sea-orm records its connect options (URL included) in a TRACE span:
        // it only ever sees the URL without credentials. On PostgreSQL the driver's
        // options are rebuilt from the real one, out of sight of any span.
        let mut options = ConnectOptions::new(match settings.database_backend {
            DatabaseBackend::Postgres => settings
                .database_url
                .without_credentials()
                .unwrap_or_else(|| settings.database_url.redacted()),
            DatabaseBackend::Sqlite => settings.database_url.expose().to_owned(),
        });
        if settings.database_backend == DatabaseBackend::Postgres {
            let real = settings.database_url.clone();
            options.map_sqlx_postgres_opts(move |redacted| {
                use sea_orm::sqlx::ConnectOptions as _;
                real.expose()
                    .parse::<sea_orm::sqlx::postgres::PgConnectOptions>()
                    .map(|o| o.disable_statement_logging())
                    .unwrap_or(redacted)
            });
        }
        options
            .max_connections(pool.max_connections)
            .min_connections(if lazy { 0 } else { pool.min_connections })
            .connect_timeout(pool.connect_timeout)
            .acquire_timeout(pool.acquire_timeout)
            .idle_timeout(pool.idle_timeout)
            .connect_lazy(lazy)
            // sqlx statement logging could echo values into logs; spans carry what we need.
            .sqlx_logging(false);
        let db = Database::connect(options)
            .await
            .map_err(|e| CoreError::Database {
                reason: e.to_string(),
            })?;
        let prefix = settings.cache_key_prefix.clone();
        let cache = match settings.redis_pool_config() {
            Some(config) => Cache::redis(RedisPool::new(config)?, prefix),
            None => Cache::in_process_bounded(
                prefix,
                settings.cache_max_entries,
                settings.cache_max_bytes,
                settings.cache_max_value_bytes,
            ),
        };
        info!(
            database = %settings.database_url,
            backend = ?settings.database_backend,
            max_connections = pool.max_connections,
            cache = cache.backend_name(),
            "storage configured"
        );
        let mut approvals =
            ApprovalManager::new(db.clone(), cache.clone(), settings.approval_token_ttl)
                .with_redactor(redactor.clone());
        for notifier in notifiers(&settings.notifiers)? {
            approvals = approvals.with_notifier(notifier);
        }
        let pool_probe = crate::telemetry::observe_pool(&db);
        Ok(Self {
            _pool_probe: pool_probe,
            db,
            cache,
            settings: settings.clone(),
            redactor,
            approvals,
        })
    }

    /// The API key manager (bcrypt cost, verification cache TTL and cache
    /// MAC key from settings).
    pub fn keys(&self) -> Result<KeyManager, CoreError> {
        let ttl = Ttl::new(self.settings.key_verify_cache_ttl)?;
        let manager = KeyManager::new(
            self.db.clone(),
            self.cache.clone(),
            self.settings.bcrypt_cost,
            ttl,
        )?;
        Ok(match &self.settings.cache_mac_key {
            Some(key) => manager.with_cache_mac_key(key.clone()),
            None => manager,
        })
    }

    /// The approval manager (TTL from `APPROVAL_TOKEN_TTL_SECONDS`): a clone
    /// of this handle's one manager, so every caller shares its decision
    /// subscription and what it knows of stale cache entries.
    pub fn approvals(&self) -> ApprovalManager {
        self.approvals.clone()
    }

    /// The audit trail: the logger, queries, the transparency log's
    /// integrator, proofs, verification and export, configured from settings.
    pub fn audit(&self) -> AuditTrail {
        AuditTrail::new(self.db.clone(), &self.settings)
    }

    /// The schema's migrations on this database.
    pub fn migrations(&self) -> Migrations {
        Migrations::new(self.db.clone())
    }

    /// The health check (database, cache, schema, signing key, secrets and
    /// posture), each part bounded by `HEALTH_TIMEOUT_MS`.
    pub async fn health(&self) -> crate::health::HealthReport {
        crate::health::check(self).await
    }

    /// The cache: its primitives (values, rate limits, pub/sub) under this
    /// deployment's key prefix. Front ends use it for their own state (the
    /// console's sessions); Warden's own entries belong to the domain handles.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The settings this handle was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The redactor every audit event is built with (built-in rules plus the
    /// policy's `redaction:` rules).
    pub fn redactor(&self) -> &warden_audit::Redactor {
        &self.redactor
    }

    /// The raw database pool, for measurement baselines and tests. It
    /// enforces nothing: products go through the domain handles above.
    pub fn database(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which database engine this storage talks to.
    pub fn database_backend(&self) -> DatabaseBackend {
        self.settings.database_backend
    }

    /// Closes the database pool, waiting for connections to be returned.
    pub async fn close(self) -> Result<(), CoreError> {
        self.db.close().await.map_err(|e| CoreError::Database {
            reason: e.to_string(),
        })
    }
}

/// How long one notification attempt may take, and how many attempts.
const NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const NOTIFY_ATTEMPTS: u32 = 5;

/// The notifiers the settings name: the signed webhook and Slack, each
/// linking to the console when `CONSOLE_URL` is set.
fn notifiers(
    settings: &crate::NotifierSettings,
) -> Result<Vec<std::sync::Arc<dyn warden_approval::Notifier>>, CoreError> {
    let mut out: Vec<std::sync::Arc<dyn warden_approval::Notifier>> = Vec::new();
    if let Some((url, secret)) = &settings.webhook {
        let fail = |error| CoreError::Notifier {
            which: "webhook",
            error,
        };
        let mut webhook = warden_approval::WebhookNotifier::new(
            url.expose(),
            secret.expose().as_bytes(),
            NOTIFY_TIMEOUT,
            NOTIFY_ATTEMPTS,
        )
        .map_err(fail)?;
        if let Some(console) = &settings.console_url {
            webhook = webhook.with_console_url(console).map_err(fail)?;
        }
        out.push(std::sync::Arc::new(webhook));
    }
    if let (Some(url), Some(console)) = (&settings.slack_webhook_url, &settings.console_url) {
        let slack = warden_approval::SlackNotifier::new(
            url.expose(),
            console,
            NOTIFY_TIMEOUT,
            NOTIFY_ATTEMPTS,
        )
        .map_err(|error| CoreError::Notifier {
            which: "slack",
            error,
        })?;
        out.push(std::sync::Arc::new(slack));
    }
    Ok(out)
}
