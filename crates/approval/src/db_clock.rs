//! The database's clock: every expiry and decision time is the database's
//! `now`, so a process whose clock is wrong cannot approve an expired call or
//! expire a valid one.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::ApprovalError;

/// SQL for the database's current instant, in a form comparable with stored
/// timestamps (PostgreSQL `timestamptz`; SQLite RFC 3339 text, as stored).
pub(crate) fn now_sql(backend: DbBackend) -> String {
    plus_sql(backend, 0)
}

/// SQL for the database's current instant plus `millis` milliseconds (our
/// own integer, never input text).
pub(crate) fn plus_sql(backend: DbBackend, millis: u64) -> String {
    match backend {
        DbBackend::Postgres if millis == 0 => "now()".to_owned(),
        DbBackend::Postgres => format!("(now() + interval '{millis} milliseconds')"),
        _ => format!(
            "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '+{}.{:03} seconds')",
            millis / 1000,
            millis % 1000
        ),
    }
}

/// The database's current instant.
pub(crate) async fn db_now<C: ConnectionTrait>(db: &C) -> Result<DateTime<Utc>, ApprovalError> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            format!("SELECT {} AS db_now", now_sql(backend)),
        ))
        .await?
        .ok_or_else(|| ApprovalError::Database {
            reason: "the database returned no time".into(),
        })?;
    Ok(row.try_get::<DateTime<Utc>>("", "db_now")?)
}
