//! The migration lock: one migrator at a time per database.
//!
//! PostgreSQL: a transaction-scoped advisory lock (`pg_try_advisory_xact_lock`,
//! retried every 200 ms with nothing held in between) taken in a transaction
//! held open on a dedicated connection opened outside the pool (so a pool of
//! any size works) until the migrator is done. A
//! transaction, unlike a session, keeps its server connection through a
//! transaction-pooling PgBouncer, so the lock means the same there; the
//! transaction opts out of `idle_in_transaction_session_timeout`. A migrator
//! that dies releases the lock with its connection.
//! SQLite: an exclusive file lock on `<database file>.migrate-lock`
//! (in-memory databases need none).

use std::fs::{File, OpenOptions};

use sea_orm_migration::sea_orm::sqlx::{self, Connection as _};
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement,
};

/// `WARDMI` in ASCII: distinct from the audit integrator's lock.
const ADVISORY_KEY: i64 = 0x5741_5244_4d49;

pub(crate) enum MigrationLock {
    Postgres(sqlx::PgConnection),
    Sqlite(File),
    None,
}

fn lock_error(e: impl std::fmt::Display) -> DbErr {
    DbErr::Custom(format!("cannot take the migration lock: {e}"))
}

impl MigrationLock {
    /// Waits until no other migrator holds the lock, then holds it.
    pub(crate) async fn acquire(db: &DatabaseConnection) -> Result<Self, DbErr> {
        match db.get_database_backend() {
            DbBackend::Postgres => {
                let options = db.get_postgres_connection_pool().connect_options();
                let mut conn = sqlx::PgConnection::connect_with(&options)
                    .await
                    .map_err(lock_error)?;
                // Try, and between tries hold nothing: a waiting migrator
                // must not pin a server connection behind a pooler.
                let started = std::time::Instant::now();
                let mut tries: u64 = 0;
                loop {
                    tries += 1;
                    if tries.is_multiple_of(25) {
                        tracing::info!(
                            waited_secs = started.elapsed().as_secs(),
                            "waiting for another migrator to finish (it holds the migration lock)"
                        );
                    }
                    for statement in [
                        "BEGIN",
                        // Idle between the migrator's statements, by design.
                        "SET LOCAL idle_in_transaction_session_timeout = 0",
                    ] {
                        sqlx::raw_sql(statement)
                            .execute(&mut conn)
                            .await
                            .map_err(lock_error)?;
                    }
                    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                        .bind(ADVISORY_KEY)
                        .fetch_one(&mut conn)
                        .await
                        .map_err(lock_error)?;
                    if locked {
                        break;
                    }
                    sqlx::raw_sql("ROLLBACK")
                        .execute(&mut conn)
                        .await
                        .map_err(lock_error)?;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Ok(Self::Postgres(conn))
            }
            backend => {
                let file: String = db
                    .query_one_raw(Statement::from_string(
                        backend,
                        "SELECT file FROM pragma_database_list WHERE name = 'main'",
                    ))
                    .await?
                    .map(|row| row.try_get("", "file"))
                    .transpose()?
                    .unwrap_or_default();
                if file.is_empty() {
                    return Ok(Self::None);
                }
                let path = format!("{file}.migrate-lock");
                let lock = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
                    let lock = OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)?;
                    lock.lock()?;
                    Ok(lock)
                })
                .await
                .map_err(lock_error)?
                .map_err(lock_error)?;
                Ok(Self::Sqlite(lock))
            }
        }
    }

    /// Lets the next migrator in.
    pub(crate) async fn release(self) {
        match self {
            // Ending the transaction, or failing that closing the
            // connection, releases it.
            Self::Postgres(mut conn) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
                let _ = conn.close().await;
            }
            Self::Sqlite(file) => drop(file),
            Self::None => {}
        }
    }
}
