//! The Redis backend: each operation is one command or one script run.

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_redis::redis;
use tracing::warn;

use crate::lua::{GCRA, INCR_WITH_EXPIRY, LuaScript, REPLACE_KEEP_TTL, SET_UNLESS};
use crate::rate_limit::{Gcra, RateDecision};
use crate::{CacheError, RedisPool, Ttl};

static INCR: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("incr_with_expiry", INCR_WITH_EXPIRY));
static KEEP_TTL: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("replace_keep_ttl", REPLACE_KEEP_TTL));
static UNLESS: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new("set_unless", SET_UNLESS));
static RATE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new("gcra", GCRA));

pub(crate) async fn set(
    pool: &RedisPool,
    key: &str,
    value: &[u8],
    ttl: Ttl,
) -> Result<(), CacheError> {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("PX").arg(ttl.as_millis());
    pool.query::<()>(&cmd).await
}

pub(crate) async fn set_if_absent(
    pool: &RedisPool,
    key: &str,
    value: &[u8],
    ttl: Ttl,
) -> Result<bool, CacheError> {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key)
        .arg(value)
        .arg("PX")
        .arg(ttl.as_millis())
        .arg("NX");
    Ok(pool.query::<Option<String>>(&cmd).await?.is_some())
}

pub(crate) async fn set_unless(
    pool: &RedisPool,
    key: &str,
    guard: &str,
    value: &[u8],
    ttl: Ttl,
) -> Result<bool, CacheError> {
    let millis = ttl.as_millis().to_string();
    let set: i64 = pool
        .eval(&UNLESS, &[key, guard], &[value, millis.as_bytes()])
        .await?;
    Ok(set == 1)
}

pub(crate) async fn replace_keep_ttl(
    pool: &RedisPool,
    key: &str,
    value: &[u8],
) -> Result<bool, CacheError> {
    let replaced: i64 = pool.eval(&KEEP_TTL, &[key], &[value]).await?;
    Ok(replaced == 1)
}

/// GET, with a value of another Redis type (a list, a hash, …) read as a miss.
pub(crate) async fn get(
    pool: &RedisPool,
    key: &str,
    delete: bool,
) -> Result<Option<Vec<u8>>, CacheError> {
    let mut cmd = redis::cmd(if delete { "GETDEL" } else { "GET" });
    cmd.arg(key);
    match pool.query::<Option<Vec<u8>>>(&cmd).await {
        Err(CacheError::Command { reason }) if reason.contains("WRONGTYPE") => {
            warn!(
                key,
                "cache key holds a non-string value; treating it as a miss"
            );
            Ok(None)
        }
        other => other,
    }
}

pub(crate) async fn delete(pool: &RedisPool, key: &str) -> Result<bool, CacheError> {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(key);
    Ok(pool.query::<i64>(&cmd).await? > 0)
}

pub(crate) async fn ttl(pool: &RedisPool, key: &str) -> Result<Option<Duration>, CacheError> {
    let mut cmd = redis::cmd("PTTL");
    cmd.arg(key);
    let millis: i64 = pool.query(&cmd).await?;
    // -2: no such key; -1: no expiry (a foreign key: Warden never writes one).
    Ok(u64::try_from(millis).ok().map(Duration::from_millis))
}

pub(crate) async fn incr(
    pool: &RedisPool,
    key: &str,
    by: i64,
    ttl: Ttl,
) -> Result<i64, CacheError> {
    let args = [by.to_string(), ttl.as_millis().to_string()];
    match pool
        .eval::<i64>(&INCR, &[key], &[args[0].as_bytes(), args[1].as_bytes()])
        .await
    {
        Err(CacheError::Command { reason })
            if reason.contains("not an integer")
                || reason.contains("WRONGTYPE")
                || reason.contains("overflow") =>
        {
            Err(CacheError::CorruptValue {
                key: key.to_owned(),
            })
        }
        other => other,
    }
}

pub(crate) async fn gcra(
    pool: &RedisPool,
    key: &str,
    gcra: Gcra,
) -> Result<RateDecision, CacheError> {
    let args = [
        gcra.interval_us.to_string(),
        gcra.limit.to_string(),
        gcra.cost.to_string(),
    ];
    let (allowed, remaining, retry_us): (i64, i64, i64) = match pool
        .eval(
            &RATE,
            &[key],
            &[args[0].as_bytes(), args[1].as_bytes(), args[2].as_bytes()],
        )
        .await
    {
        Err(CacheError::Command { reason }) if reason.contains("WRONGTYPE") => {
            return Err(CacheError::CorruptValue {
                key: key.to_owned(),
            });
        }
        other => other?,
    };
    Ok(RateDecision {
        allowed: allowed == 1,
        remaining: u64::try_from(remaining).unwrap_or(0),
        retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
        degraded: false,
    })
}
