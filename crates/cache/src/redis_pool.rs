use std::fmt;
use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, Pool, PoolError, RecycleResult, Timeouts};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, aio::ConnectionLike, aio::MultiplexedConnection,
    cluster::ClusterClient, cluster_async::ClusterConnection,
};
use tracing::Instrument;

use crate::{CacheError, LuaScript};

/// Everything needed to build a [`RedisPool`]. Every timeout is mandatory:
/// deadpool's defaults are "wait forever".
#[derive(Clone)]
pub struct RedisPoolConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`); several
    /// comma-separated node URLs mean a Redis Cluster (the nodes are seeds:
    /// the rest of the cluster is discovered). Never printed.
    pub url: String,
    /// Most connections the pool opens (default 50).
    pub max_size: usize,
    /// How long a caller waits for a free pooled connection.
    pub wait_timeout: Duration,
    /// How long opening (TCP connect + handshake + AUTH) a new connection may take.
    pub create_timeout: Duration,
    /// How long the health check of an idle connection may take before reuse.
    pub recycle_timeout: Duration,
    /// How long one command may wait for its reply.
    pub command_timeout: Duration,
}

impl RedisPoolConfig {
    /// A configuration for `url` where every timeout is `timeout` and at most
    /// `max_size` connections are opened.
    pub fn new(url: impl Into<String>, max_size: usize, timeout: Duration) -> Self {
        Self {
            url: url.into(),
            max_size,
            wait_timeout: timeout,
            create_timeout: timeout,
            recycle_timeout: timeout,
            command_timeout: timeout,
        }
    }
}

impl fmt::Debug for RedisPoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPoolConfig")
            .field("url", &"[redacted]")
            .field("max_size", &self.max_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("create_timeout", &self.create_timeout)
            .field("recycle_timeout", &self.recycle_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// How long a connection may sit unused before it is PINGed on checkout. A
/// connection used moments ago is known to work; one whose last command failed
/// at the connection level never returns to the pool.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(2);

/// One pooled connection: to a single Redis, or to a Redis Cluster (which
/// routes each command to its slot's primary and follows MOVED/ASK
/// redirects and failovers itself). Both are multiplexed.
#[derive(Clone)]
pub enum RedisConnection {
    /// A single Redis server.
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// What a [`RedisManager`] connects to.
enum Target {
    Single(redis::Client),
    Cluster {
        client: Box<ClusterClient>,
        /// The seed nodes, for pub/sub (classic pub/sub is cluster-wide:
        /// any node's subscribers get every node's messages).
        nodes: Vec<redis::Client>,
    },
}

/// Creates and health-checks pooled Redis connections (for [`RedisPool`]).
pub struct RedisManager {
    target: Target,
    connection: AsyncConnectionConfig,
}

impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisManager")
    }
}

impl managed::Manager for RedisManager {
    type Type = RedisConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<RedisConnection, redis::RedisError> {
        match &self.target {
            Target::Single(client) => client
                .get_multiplexed_async_connection_with_config(&self.connection)
                .await
                .map(RedisConnection::Single),
            Target::Cluster { client, .. } => client
                .get_async_connection()
                .await
                .map(RedisConnection::Cluster),
        }
    }

    async fn recycle(
        &self,
        conn: &mut RedisConnection,
        metrics: &Metrics,
    ) -> RecycleResult<redis::RedisError> {
        // A cluster connection reconnects to its nodes by itself, and its
        // PING would need every primary to answer: never checked here.
        if metrics.last_used() < IDLE_BEFORE_PING || matches!(conn, RedisConnection::Cluster(_)) {
            return Ok(());
        }
        let pong: String = redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(managed::RecycleError::message("unexpected PING reply"))
        }
    }
}

/// A connection checked out of a [`RedisPool`]; it returns to the pool when dropped.
pub type PooledConnection = Object<RedisManager>;

/// A bounded pool of multiplexed Redis connections.
///
/// Guarantees:
/// - Getting a connection never takes longer than the wait + create timeouts,
///   and a command never waits longer than the command timeout for its reply:
///   a Redis that is down, paused or blackholed gives a typed [`CacheError`].
/// - A connection whose command future was dropped mid-flight stays usable:
///   connections are multiplexed, so a late reply is matched to the request
///   that sent it, never to the next command.
/// - The pool recovers by itself: a connection whose command fails at the
///   connection level is discarded, idle ones are PINGed before reuse, and new
///   ones are opened when Redis is back. A connection used in the last two
///   seconds is reused without a PING, so a command costs one round trip.
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool<RedisManager>,
    config: RedisPoolConfig,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("config", &self.config)
            .field("status", &self.pool.status())
            .finish()
    }
}

impl RedisPool {
    /// Builds the pool. Opens no connection: a Redis that is down is reported by
    /// the first command (or [`RedisPool::ping`]), not here.
    pub fn new(config: RedisPoolConfig) -> Result<Self, CacheError> {
        if config.max_size == 0 {
            return Err(CacheError::InvalidConfig {
                what: "redis pool max size",
                reason: "must be at least 1".into(),
            });
        }
        for (what, value) in [
            ("redis wait timeout", config.wait_timeout),
            ("redis create timeout", config.create_timeout),
            ("redis recycle timeout", config.recycle_timeout),
            ("redis command timeout", config.command_timeout),
        ] {
            if value.is_zero() {
                return Err(CacheError::InvalidConfig {
                    what,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.create_timeout))
            .set_response_timeout(Some(config.command_timeout));
        // The driver's parse errors describe the problem without echoing the URL.
        let invalid = |e: redis::RedisError| CacheError::InvalidConfig {
            what: "REDIS_URL",
            reason: e.to_string(),
        };
        let mut urls: Vec<&str> = redis_nodes(&config.url)
            .into_iter()
            .map(str::trim)
            .collect();
        urls.retain(|u| !u.is_empty());
        let target = if urls.len() > 1 {
            let nodes = urls
                .iter()
                .map(|u| redis::Client::open(*u))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            // Bounded like a single server: each attempt by the command
            // timeout, the whole command (redirects and failover retries
            // included) by twice that.
            let client = ClusterClient::builder(urls.iter().copied())
                .connection_timeout(config.create_timeout)
                .response_timeout(config.command_timeout)
                .overall_response_timeout(Some(config.command_timeout * 2))
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .build()
                .map_err(invalid)?;
            Target::Cluster {
                client: Box::new(client),
                nodes,
            }
        } else {
            Target::Single(redis::Client::open(config.url.as_str()).map_err(invalid)?)
        };
        let manager = RedisManager { target, connection };
        let pool = Pool::builder(manager)
            .max_size(config.max_size)
            .timeouts(Timeouts {
                wait: Some(config.wait_timeout),
                create: Some(config.create_timeout),
                recycle: Some(config.recycle_timeout),
            })
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| CacheError::InvalidConfig {
                what: "redis pool",
                reason: e.to_string(),
            })?;
        crate::metrics::register_pool(pool.weak());
        Ok(Self { pool, config })
    }

    /// The configuration the pool was built with.
    pub fn config(&self) -> &RedisPoolConfig {
        &self.config
    }

    /// A pooled connection, within the wait and create timeouts.
    pub async fn get(&self) -> Result<PooledConnection, CacheError> {
        self.pool.get().await.map_err(|e| {
            if matches!(e, PoolError::Timeout(managed::TimeoutType::Wait)) {
                crate::metrics::pool_timeout();
            }
            self.pool_error(e)
        })
    }

    /// Runs one command on a pooled connection and maps every failure to a
    /// [`CacheError`]. The whole call (acquire + round trip) is bounded by
    /// [`call_bound`](Self::call_bound).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let command = command_name(cmd);
        let span = tracing::debug_span!(
            "redis.query",
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = command,
            "error.type" = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self
            .within_bound(async {
                let mut conn = self.get().await?;
                let result = cmd.query_async(&mut *conn).await;
                self.settle(conn, result)
            })
            .instrument(span.clone())
            .await;
        finish(&span, command, started, result)
    }

    /// Runs `script` with `EVALSHA` (loading it first if Redis does not know
    /// it) on a pooled connection. Bounded like [`RedisPool::query`].
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, CacheError> {
        let span = tracing::debug_span!(
            "redis.eval",
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = "EVALSHA",
            warden.script = script.name(),
            keys = keys.len(),
            "error.type" = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let work = async {
            let mut invocation = script.script().prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            let mut conn = self.get().await?;
            let result = invocation.invoke_async(&mut *conn).await;
            self.settle(conn, result)
        };
        let result = self.within_bound(work).instrument(span.clone()).await;
        finish(&span, "EVALSHA", started, result)
    }

    /// The longest one call (checkout + command, redirects and a script load
    /// included) may take: wait + create + recycle timeouts and four command
    /// timeouts. Past it, [`CacheError::Timeout`].
    pub fn call_bound(&self) -> std::time::Duration {
        self.config.wait_timeout
            + self.config.create_timeout
            + self.config.recycle_timeout
            + self.config.command_timeout * 4
    }

    async fn within_bound<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        let bound = self.call_bound();
        tokio::time::timeout(bound, work)
            .await
            .unwrap_or(Err(CacheError::Timeout {
                operation: "command",
                after: bound,
            }))
    }

    /// Runs `cmds` (writes to keys of one slot: `key`'s) on one connection,
    /// then waits (`WAIT 1`, bounded by the command timeout) until a replica
    /// of that slot's primary has them. When the primary has replicas and
    /// none acknowledged, the writes may not survive a failover:
    /// [`CacheError::Unavailable`], for the caller to retry. A server with no
    /// replica has nothing to fail over to: its acknowledgement suffices.
    pub async fn query_replicated(&self, cmds: &[redis::Cmd], key: &str) -> Result<(), CacheError> {
        let span = tracing::debug_span!(
            "redis.query_replicated",
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = "WAIT",
            commands = cmds.len(),
            "error.type" = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let timeout_ms = u64::try_from(self.config.command_timeout.as_millis()).unwrap_or(1_000);
        let result = self
            .within_bound(async {
                let mut conn = self.get().await?;
                for cmd in cmds {
                    let result = cmd.query_async::<redis::Value>(&mut *conn).await;
                    if let Err(e) = result {
                        return self.settle(conn, Err::<(), _>(e));
                    }
                }
                let mut wait = redis::cmd("WAIT");
                wait.arg(1).arg(timeout_ms);
                let mut info = redis::cmd("INFO");
                info.arg("replication");
                let node = |cmd: &redis::Cmd| {
                    use redis::cluster_routing::{
                        Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
                    };
                    (
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                            key_slot(key),
                            SlotAddr::Master,
                        ))),
                    )
                };
                // Replicas first: on a server without any, WAIT would only
                // wait out its timeout.
                let replicas = |info: &str| {
                    info.lines()
                        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
                        .and_then(|n| n.parse::<u32>().ok())
                        .unwrap_or(0)
                };
                let acked: redis::RedisResult<Option<i64>> = match &mut *conn {
                    RedisConnection::Single(c) => match info.query_async::<String>(&mut *c).await {
                        Ok(i) if replicas(&i) == 0 => Ok(None),
                        Ok(_) => wait.query_async::<i64>(c).await.map(Some),
                        Err(e) => Err(e),
                    },
                    RedisConnection::Cluster(c) => {
                        let (cmd, route) = node(&info);
                        match c
                            .route_command(cmd, route)
                            .await
                            .and_then(|v| Ok(redis::from_redis_value::<String>(v)?))
                        {
                            Ok(i) if replicas(&i) == 0 => Ok(None),
                            Ok(_) => {
                                let (cmd, route) = node(&wait);
                                c.route_command(cmd, route)
                                    .await
                                    .and_then(|v| Ok(redis::from_redis_value::<i64>(v)?))
                                    .map(Some)
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                match acked {
                    Err(e) => self.settle(conn, Err(e)),
                    Ok(None) => Ok(()),
                    Ok(Some(n)) if n >= 1 => Ok(()),
                    Ok(Some(_)) => Err(CacheError::Unavailable {
                        reason: "no replica acknowledged the write in time; it may not survive a \
                             failover"
                            .into(),
                    }),
                }
            })
            .instrument(span.clone())
            .await;
        finish(&span, "WAIT", started, result)
    }

    /// Whether this pool talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.pool.manager().target, Target::Cluster { .. })
    }

    /// A dedicated (unpooled) connection subscribed to `channel`; connecting
    /// and subscribing are bounded by the create timeout. On a cluster it
    /// subscribes on the first seed node that answers: classic pub/sub is
    /// cluster-wide, so it receives what any node's clients publish.
    pub async fn subscribe(&self, channel: &str) -> Result<crate::Subscription, CacheError> {
        let timeout = self.config.create_timeout;
        let timed_out = || CacheError::Timeout {
            operation: "subscribe",
            after: timeout,
        };
        let nodes: Vec<redis::Client> = match &self.pool.manager().target {
            Target::Single(client) => vec![client.clone()],
            Target::Cluster { nodes, .. } => nodes.clone(),
        };
        let mut last = CacheError::Unavailable {
            reason: "no Redis node to subscribe on".into(),
        };
        for client in nodes {
            let attempt = async {
                let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| self.redis_error(&e))?;
                tokio::time::timeout(timeout, pubsub.subscribe(channel))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| self.redis_error(&e))?;
                Ok::<_, CacheError>(pubsub)
            };
            match attempt.await {
                Ok(pubsub) => return Ok(crate::Subscription::redis(pubsub.into_on_message())),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Round trip to Redis: `Ok` when a connection can be had and answers PING.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let reply: String = self.query(&redis::cmd("PING")).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(CacheError::Command {
                reason: format!("unexpected PING reply {reply:?}"),
            })
        }
    }

    /// Maps a command's result; a connection-level failure takes the connection
    /// out of the pool instead of returning it.
    fn settle<T>(
        &self,
        conn: PooledConnection,
        result: redis::RedisResult<T>,
    ) -> Result<T, CacheError> {
        match result {
            Ok(value) => Ok(value),
            Err(e) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                {
                    drop(Object::take(conn));
                }
                Err(self.redis_error(&e))
            }
        }
    }

    fn pool_error(&self, error: PoolError<redis::RedisError>) -> CacheError {
        match error {
            PoolError::Timeout(managed::TimeoutType::Wait) => CacheError::PoolExhausted {
                waited: self.config.wait_timeout,
            },
            PoolError::Timeout(managed::TimeoutType::Create) => CacheError::Timeout {
                operation: "connect",
                after: self.config.create_timeout,
            },
            PoolError::Timeout(managed::TimeoutType::Recycle) => CacheError::Timeout {
                operation: "recycle",
                after: self.config.recycle_timeout,
            },
            PoolError::Backend(e) => self.redis_error(&e),
            other => CacheError::Unavailable {
                reason: other.to_string(),
            },
        }
    }

    fn redis_error(&self, error: &redis::RedisError) -> CacheError {
        if error.is_timeout() {
            CacheError::Timeout {
                operation: "command",
                after: self.config.command_timeout,
            }
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.kind() == redis::ErrorKind::AuthenticationFailed
            || is_cluster_outage(error.kind())
        {
            CacheError::Unavailable {
                reason: error.to_string(),
            }
        } else {
            CacheError::Command {
                reason: error.to_string(),
            }
        }
    }
}

/// Errors a cluster answers while a slot has no reachable primary (between a
/// primary's death and its replica's promotion), or while a node loads: the
/// cache is unavailable, not the command wrong — so a rate limiter applies
/// its fail mode.
fn is_cluster_outage(kind: redis::ErrorKind) -> bool {
    use redis::ServerErrorKind as S;
    matches!(
        kind,
        redis::ErrorKind::ClusterConnectionNotFound
            | redis::ErrorKind::Server(
                S::ClusterDown | S::TryAgain | S::MasterDown | S::BusyLoading | S::Moved | S::Ask
            )
    )
}

/// `text` split into Redis node URLs: at each comma followed by `redis://`
/// or `rediss://`. Any other comma stays inside its URL (a comma may be part
/// of a password).
pub fn redis_nodes(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices(',') {
        let rest = text[i + 1..].trim_start().to_ascii_lowercase();
        if rest.starts_with("redis://") || rest.starts_with("rediss://") {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the
/// first non-empty `{…}`) or of the whole key, modulo 16384.
fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = bytes.get(open + 1..)?;
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for byte in tagged {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// The command's name from a fixed list (`OTHER` for the rest): span and
/// metric attributes never carry an argument.
pub(crate) fn command_name(cmd: &redis::Cmd) -> &'static str {
    const KNOWN: &[&str] = &[
        "BLPOP", "CLUSTER", "DEL", "EVALSHA", "EXPIRE", "GET", "GETDEL", "INFO", "KEYS", "MGET",
        "PING", "PTTL", "PUBLISH", "PUBSUB", "RPUSH", "SCAN", "SCRIPT", "SET", "WAIT",
    ];
    let first = cmd.args_iter().next().and_then(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    first
        .and_then(|name| {
            KNOWN
                .iter()
                .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
        })
        .copied()
        .unwrap_or("OTHER")
}

/// Records the operation's duration and, on failure, its `error.type`.
fn finish<T>(
    span: &tracing::Span,
    operation: &'static str,
    started: std::time::Instant,
    result: Result<T, CacheError>,
) -> Result<T, CacheError> {
    if let Err(e) = &result {
        span.record("error.type", e.kind());
    }
    crate::metrics::operation(operation, started, &result);
    result
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    /// Slots as `CLUSTER KEYSLOT` reports them.
    #[test]
    fn key_slots_match_redis() {
        assert_eq!(key_slot("foo"), 12_182);
        assert_eq!(key_slot("hello"), 866);
        assert_eq!(
            key_slot("{user1000}.following"),
            key_slot("{user1000}.followers")
        );
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));
        assert_ne!(key_slot("a{}x"), key_slot("b{}x"));
    }
}
