//! The benchmark's own databases and key prefix, created for the run and
//! dropped afterwards.

use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use warden_core::{DatabaseBackend, Settings, Warden};

/// Everything a scenario needs.
pub struct Bench {
    /// Warden's storage on the bench database.
    pub storage: Warden,
    /// A second, identically migrated database for raw baselines (so raw
    /// inserts never collide with Warden's chain).
    pub raw_db: DatabaseConnection,
    admin_url: String,
    names: [String; 2],
}

async fn connect(url: &str, max: u32) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

fn with_db(url: &str, name: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url)?;
    u.set_path(&format!("/{name}"));
    Ok(u.to_string())
}

impl Bench {
    /// Creates and migrates the run's databases on the PostgreSQL that
    /// DATABASE_URL names (its role must be allowed to CREATE DATABASE), and
    /// uses REDIS_URL under a prefix of its own.
    pub async fn create() -> anyhow::Result<Self> {
        let env = Settings::from_env()?;
        anyhow::ensure!(
            env.database_backend == DatabaseBackend::Postgres && env.redis_url.is_some(),
            "the benchmark runs on real services: set DATABASE_URL to PostgreSQL and REDIS_URL (scripts/services.sh starts both)"
        );
        let admin_url = env.database_url.expose().to_owned();
        let admin = connect(&admin_url, 1)
            .await
            .context("connecting to DATABASE_URL")?;
        let id = std::process::id();
        let names = [
            format!("warden_bench_{id}"),
            format!("warden_bench_raw_{id}"),
        ];
        for name in &names {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await?;
        }
        admin.close().await?;
        let bench_url = with_db(&admin_url, &names[0])?;
        let raw_url = with_db(&admin_url, &names[1])?;
        let prefix = format!("bench:{id}:");
        let spill = std::env::temp_dir().join(format!("warden-bench-{id}.spill"));
        // Checkpoints are signed, as in production: a key made for this run.
        let key_file = std::env::temp_dir().join(format!("warden-bench-{id}.key"));
        let (secret, _) = warden_audit::CheckpointSigner::generate("bench.warden.local/audit")?;
        std::fs::write(&key_file, secret)?;
        let settings = Settings::from_lookup(|name| match name {
            "DATABASE_URL" => Some(bench_url.clone()),
            "CACHE_KEY_PREFIX" => Some(prefix.clone()),
            "DATABASE_MAX_CONNECTIONS" => Some("40".into()),
            "AUDIT_SPILL_PATH" => Some(spill.display().to_string()),
            "AUDIT_BUFFER_CAPACITY" => Some("1000000".into()),
            "AUDIT_SIGNING_KEY_FILE" => Some(key_file.display().to_string()),
            _ => std::env::var(name).ok(),
        })?;
        let storage = Warden::connect(&settings).await?;
        migration::run(storage.database(), migration::Command::Up(None)).await?;
        let raw_db = connect(&raw_url, 40).await?;
        migration::run(&raw_db, migration::Command::Up(None)).await?;
        Ok(Self {
            storage,
            raw_db,
            admin_url,
            names,
        })
    }

    /// Drops the run's databases and keys.
    pub async fn destroy(self) -> anyhow::Result<()> {
        if let Some(pool) = self.storage.cache().redis_pool() {
            let mut conn = pool.get().await?;
            let pattern = format!("{}*", self.storage.cache().prefix());
            let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut *conn)
                .await?;
            // On a cluster one DEL cannot span slots: one key at a time.
            let chunk_size = if pool.is_cluster() { 1 } else { 1000 };
            for chunk in keys.chunks(chunk_size) {
                let _: () = deadpool_redis::redis::cmd("DEL")
                    .arg(chunk)
                    .query_async(&mut *conn)
                    .await?;
            }
        }
        let _ = std::fs::remove_file(&self.storage.settings().audit_spill_path);
        self.storage.close().await?;
        self.raw_db.close().await?;
        let admin = connect(&self.admin_url, 1).await?;
        for name in &self.names {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
        }
        Ok(())
    }
}
