use migration::{CliCommand, Command};
use warden_core::{Settings, Storage};

use crate::{Outcome, output};

pub(crate) async fn run(
    settings: &Settings,
    action: Option<CliCommand>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let storage = Storage::connect(settings).await?;
    let states = migration::run(&storage.db, Command::from(action)).await?;
    storage.close().await?;
    if json {
        output::json(&states);
    } else {
        output::line(&migration::status_table(&states));
    }
    Ok(Outcome::Success)
}
