use warden_core::Settings;
use warden_core::health::{self, CheckStatus};

use crate::{Outcome, output};

pub(crate) async fn run(settings: &Settings, strict: bool, json: bool) -> Outcome {
    let report = health::probe(settings).await;
    if json {
        output::json(&report);
    } else {
        for (name, check) in report.checks() {
            let status = match check.status {
                CheckStatus::Pass => "PASS",
                CheckStatus::Warn => "WARN",
                CheckStatus::Fail => "FAIL",
            };
            output::line(&format!(
                "{status}  {name:<10}  {}  ({} ms)",
                check.detail, check.elapsed_ms
            ));
        }
    }
    let ok = if strict {
        report.is_strictly_healthy()
    } else {
        report.is_healthy()
    };
    if ok {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}
