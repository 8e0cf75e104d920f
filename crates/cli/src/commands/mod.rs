//! One module per `warden` subcommand.

pub(crate) mod health;
pub(crate) mod migrate;
