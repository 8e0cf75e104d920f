//! `warden-rate-limit-probe`: makes N rate-limit decisions for one subject
//! against Redis, C at a time, and prints how many were allowed as JSON.
//!
//! A way to check a deployment's limits from several machines at once, and
//! the second process in the cross-process exactness tests. Exit codes: 0
//! done, 2 bad arguments or Redis unreachable.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a CLI's report")]

use std::process::ExitCode;
use std::time::Duration;

use warden_cache::{
    Cache, FailMode, KeyPrefix, RateLimit, RateLimiter, RedisPool, RedisPoolConfig,
};

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-rate-limit-probe: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: --redis-url URL --prefix P --subject S --limit N --period-secs S --attempts N --concurrency C";
    let get = |name: &str| arg(name).ok_or_else(|| format!("missing {name}; {usage}"));
    let pool = RedisPool::new(RedisPoolConfig::new(
        get("--redis-url")?,
        32,
        Duration::from_secs(2),
    ))?;
    let cache = Cache::redis(pool, KeyPrefix::new(&get("--prefix")?)?);
    let limit = RateLimit::new(
        get("--limit")?.parse()?,
        Duration::from_secs(get("--period-secs")?.parse()?),
    )?;
    let limiter = RateLimiter::new(cache, "probe", limit, FailMode::Closed);
    let subject = get("--subject")?;
    let attempts: usize = get("--attempts")?.parse()?;
    let concurrency: usize = get("--concurrency")?.parse::<usize>()?.max(1);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (limiter, subject) = (limiter.clone(), subject.clone());
        let mine = attempts / concurrency + usize::from(worker < attempts % concurrency);
        tasks.push(tokio::spawn(async move {
            let (mut allowed, mut degraded) = (0u64, 0u64);
            for _ in 0..mine {
                let d = limiter.check(&subject).await?;
                allowed += u64::from(d.allowed);
                degraded += u64::from(d.degraded);
            }
            Ok::<_, warden_cache::CacheError>((allowed, degraded))
        }));
    }
    let (mut allowed, mut degraded) = (0, 0);
    for t in tasks {
        let (a, d) = t.await??;
        allowed += a;
        degraded += d;
    }
    println!("{{\"allowed\": {allowed}, \"degraded\": {degraded}, \"attempts\": {attempts}}}");
    Ok(())
}
