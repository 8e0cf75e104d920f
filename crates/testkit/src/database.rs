use std::time::{Duration, SystemTime, UNIX_EPOCH};

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use tempfile::TempDir;
use url::Url;

/// The database engine a [`TestDatabase`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A database of its own on the shared PostgreSQL server.
    Postgres,
    /// An SQLite file in a temporary directory (the embedded backend).
    Sqlite,
}

impl Backend {
    /// Both backends, for contract tests that run on each.
    pub const ALL: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];
}

/// Databases older than this, left behind by killed test runs, are dropped.
const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);
const NAME_PREFIX: &str = "warden_t_";

/// A database that belongs to one test: created fresh, migrated (unless made
/// with `*_empty`), and dropped when this value is dropped.
pub struct TestDatabase {
    /// A pool connected to the test's database.
    pub db: DatabaseConnection,
    /// The URL of the test's database (for code under test that connects itself).
    pub url: String,
    /// Which engine this is.
    pub backend: Backend,
    cleanup: Cleanup,
    /// The PgBouncer `db` and `url` go through, if any (dropped after the
    /// database).
    pooler: Option<crate::PgBouncer>,
}

enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite { _dir: TempDir },
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish()
    }
}

impl TestDatabase {
    /// A freshly migrated database on `backend`. With
    /// `WARDEN_TEST_VIA_PGBOUNCER=1` in the environment, a PostgreSQL one is
    /// reached through PgBouncer in transaction mode (see
    /// [`TestDatabase::postgres_via_pgbouncer`]): the test command runs the
    /// audit, approval and key suites a second time that way.
    pub async fn new(backend: Backend) -> Self {
        let test_db = Self::migrated(backend).await;
        if backend == Backend::Postgres
            && std::env::var("WARDEN_TEST_VIA_PGBOUNCER").is_ok_and(|v| v == "1")
        {
            return test_db.through_pgbouncer().await;
        }
        test_db
    }

    async fn migrated(backend: Backend) -> Self {
        let test_db = Self::empty(backend).await;
        Migrator::up(&test_db.db, None)
            .await
            .unwrap_or_else(|e| panic!("migrating the test database ({backend:?}) failed: {e}"));
        test_db
    }

    /// A freshly migrated database of its own on the shared PostgreSQL server
    /// (through PgBouncer with `WARDEN_TEST_VIA_PGBOUNCER=1`).
    pub async fn postgres() -> Self {
        Self::new(Backend::Postgres).await
    }

    /// A freshly migrated database of its own on the shared PostgreSQL
    /// server, reached through a private PgBouncer in transaction pooling
    /// mode with 3 server connections for many clients (migrated directly;
    /// `migration/tests/cli.rs` migrates through PgBouncer). `db` and `url`
    /// are PgBouncer's; the pool keeps sqlx's
    /// prepared-statement cache, which PgBouncer 1.21+ carries.
    pub async fn postgres_via_pgbouncer() -> Self {
        Self::migrated(Backend::Postgres)
            .await
            .through_pgbouncer()
            .await
    }

    async fn through_pgbouncer(self) -> Self {
        let mut test_db = self;
        let bouncer = crate::PgBouncer::start(&test_db.url, 3);
        let url = bouncer.url_for(&test_db.url);
        let db = connect(&url, 10)
            .await
            .unwrap_or_else(|e| panic!("connecting through PgBouncer failed: {e}"));
        let _ = std::mem::replace(&mut test_db.db, db).close().await;
        test_db.url = url;
        test_db.pooler = Some(bouncer);
        test_db
    }

    /// A freshly migrated SQLite file in a temporary directory.
    pub async fn sqlite() -> Self {
        Self::new(Backend::Sqlite).await
    }

    /// A new database with no tables at all (for migration tests).
    pub async fn empty(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::postgres_empty().await,
            Backend::Sqlite => Self::sqlite_empty().await,
        }
    }

    async fn postgres_empty() -> Self {
        let admin_url = std::env::var("WARDEN_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
        let admin = connect(&admin_url, 1).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}).\n\
                 Start it with `scripts/services.sh` (installs and starts PostgreSQL and Redis), \
                 or `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                 or point WARDEN_TEST_POSTGRES_URL at a server whose role may CREATE DATABASE.",
                redact(&admin_url)
            )
        });
        sweep_stale_databases(&admin).await;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = format!(
            "{NAME_PREFIX}{created}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        let _ = admin.close().await;

        let mut url = Url::parse(&admin_url).expect("WARDEN_TEST_POSTGRES_URL is not a URL");
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        let db = connect(&url, 5)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test database {name} failed: {e}"));
        Self {
            db,
            url,
            backend: Backend::Postgres,
            cleanup: Cleanup::Postgres { admin_url, name },
            pooler: None,
        }
    }

    async fn sqlite_empty() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("warden-test-")
            .tempdir()
            .expect("creating a temporary directory for SQLite failed");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("warden.db").display()
        );
        let db = connect(&url, 5)
            .await
            .unwrap_or_else(|e| panic!("opening the SQLite test database failed: {e}"));
        Self {
            db,
            url,
            backend: Backend::Sqlite,
            cleanup: Cleanup::Sqlite { _dir: dir },
            pooler: None,
        }
    }

    /// Runs one SQL statement (test set-up and tamper tests).
    pub async fn execute(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs a query returning one text column and collects it, sorted.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out: Vec<String> = rows
            .iter()
            .map(|row| {
                row.try_get_by_index::<String>(0)
                    .unwrap_or_else(|e| panic!("{sql}: column 0 is not text: {e}"))
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            crate::block_on_side_thread(async move {
                if let Ok(admin) = connect(&admin_url, 1).await {
                    // FORCE ends the test's own pooled connections, still open here.
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    if let Err(e) = admin.execute_unprepared(&sql).await {
                        eprintln!("warden-testkit: dropping {name} failed: {e}");
                    }
                    let _ = admin.close().await;
                }
            });
        }
    }
}

async fn connect(url: &str, max: u32) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(options).await
}

/// Drops test databases that killed runs left behind (their names carry their
/// creation time).
async fn sweep_stale_databases(admin: &DatabaseConnection) {
    let Ok(rows) = admin
        .query_all_raw(Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT datname FROM pg_database WHERE datname LIKE '{NAME_PREFIX}%'"),
        ))
        .await
    else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for row in rows {
        let Ok(name) = row.try_get_by_index::<String>(0) else {
            continue;
        };
        let created = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > STALE_AFTER.as_secs()) {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "[unparseable URL]".into(),
    }
}
