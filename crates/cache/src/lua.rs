use std::fmt;

use deadpool_redis::redis;

/// A Lua script run with `EVALSHA`; when the server does not know the script
/// (after a restart or `SCRIPT FLUSH`) it is loaded and run again, transparently.
///
/// Scripts that touch several keys must give them a common hash tag
/// (`{…}`), so they would run unchanged on Redis Cluster.
pub struct LuaScript {
    name: &'static str,
    script: redis::Script,
}

impl LuaScript {
    /// Wraps `source`; `name` labels it in traces and errors.
    pub fn new(name: &'static str, source: &str) -> Self {
        Self {
            name,
            script: redis::Script::new(source),
        }
    }

    /// The script's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The SHA-1 Redis knows the script by.
    pub fn sha1(&self) -> &str {
        self.script.get_hash()
    }

    pub(crate) fn script(&self) -> &redis::Script {
        &self.script
    }
}

impl fmt::Debug for LuaScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LuaScript")
            .field("name", &self.name)
            .field("sha1", &self.sha1())
            .finish()
    }
}

/// `INCRBY` that sets the expiry atomically when the counter is created (and
/// repairs a counter that somehow has none). Returns the new value.
pub(crate) const INCR_WITH_EXPIRY: &str = r"
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value == tonumber(ARGV[1]) or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

/// Replaces a value only when the key exists with an expiry, keeping the
/// remaining expiry. Returns 1 when replaced, 0 otherwise.
pub(crate) const REPLACE_KEEP_TTL: &str = r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return 1
end
return 0
";

/// Sets KEYS[1] to ARGV[1] for ARGV[2] ms unless KEYS[2] exists (a guard,
/// e.g. a revocation marker), atomically. Returns 1 when set, 0 otherwise.
pub(crate) const SET_UNLESS: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// GCRA (generic cell rate algorithm) on the Redis server's clock.
/// KEYS[1]: the theoretical arrival time (TAT, µs). ARGV: emission interval (µs),
/// limit (burst), cost. Returns {allowed 0/1, remaining, retry_after_us}.
/// A missing or non-numeric TAT counts as "no recent requests".
pub(crate) const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tolerance = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '')
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, math.floor((tolerance - (tat - now)) / interval), allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((tolerance - (new_tat - now)) / interval), 0}
";
