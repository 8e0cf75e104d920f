//! The migration lock: one migrator at a time per database.
//!
//! PostgreSQL: a transaction-scoped advisory lock held by a transaction of
//! its own for the whole run (a second migrator waits on it; a migrator that
//! dies releases it with its connection). SQLite: an exclusive file lock on
//! `<database file>.migrate-lock` (in-memory databases need none).

use std::fs::{File, OpenOptions};

use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait,
};

/// `WARDMI` in ASCII: distinct from the audit integrator's lock.
const ADVISORY_KEY: i64 = 0x5741_5244_4d49;

pub(crate) enum MigrationLock {
    Postgres(DatabaseTransaction),
    Sqlite(File),
    None,
}

impl MigrationLock {
    /// Waits until no other migrator holds the lock, then holds it.
    pub(crate) async fn acquire(db: &DatabaseConnection) -> Result<Self, DbErr> {
        match db.get_database_backend() {
            DbBackend::Postgres => {
                let txn = db.begin().await?;
                txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({ADVISORY_KEY})"))
                    .await?;
                Ok(Self::Postgres(txn))
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
                .map_err(|e| DbErr::Custom(format!("migration lock task failed: {e}")))?
                .map_err(|e| DbErr::Custom(format!("cannot take the migration lock: {e}")))?;
                Ok(Self::Sqlite(lock))
            }
        }
    }

    /// Lets the next migrator in.
    pub(crate) async fn release(self) {
        match self {
            // Ending the transaction releases the advisory lock; if even that
            // fails, closing the connection does.
            Self::Postgres(txn) => {
                let _ = txn.rollback().await;
            }
            Self::Sqlite(file) => drop(file),
            Self::None => {}
        }
    }
}
