//! The schema's migrations, through the composed handle.

use migration::{Command, Inventory, MigrationState};
use sea_orm::{DatabaseConnection, DbErr};

/// The migrations of Warden's schema on one database.
#[derive(Debug, Clone)]
pub struct Migrations {
    db: DatabaseConnection,
}

impl Migrations {
    pub(crate) fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Runs `command` and returns every migration's state afterwards.
    /// Destructive commands (`down`, `fresh`, `refresh`, `reset`) run as
    /// asked: confirm them first (see `migration::confirm_destructive`).
    pub async fn run(&self, command: Command) -> Result<Vec<MigrationState>, DbErr> {
        migration::run(&self.db, command).await
    }

    /// Every migration and whether it is applied; changes nothing.
    pub async fn status(&self) -> Result<Vec<MigrationState>, DbErr> {
        migration::status(&self.db).await
    }

    /// What a destructive command would drop: Warden's tables and their rows.
    pub async fn inventory(&self) -> Result<Inventory, DbErr> {
        migration::inventory(&self.db).await
    }
}
