//! The PostgreSQL side of the store: a small pool of tokio-postgres connections
//! used through the same synchronous [`Conn`] as SQLite.
//!
//! Why hand-written: the store's callers are synchronous (they run on the tokio
//! threads, as rusqlite calls always have), and a pool of the synchronous
//! `postgres` crate cannot be used there (its client starts a runtime of its own
//! per call, which tokio forbids inside a runtime). tokio-postgres splits a
//! connection in two: a `Connection` future that does the socket I/O, spawned here
//! on a runtime of the pool's own, and a `Client` that only sends requests to it
//! through channels. Blocking on a `Client` future from any thread is therefore safe.
//! What is left for us is checking clients out and back in, below.

use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use tokio_postgres::Client;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db::{Conn, Dialect, Row, Val, postgres_placeholders};

/// Connections a process opens at most.
const MAX_CONNECTIONS: usize = 8;
/// How long a caller waits for a free connection, and a connection attempt lasts.
const WAIT: Duration = Duration::from_secs(30);

/// A pool of connections to one PostgreSQL database.
pub struct Pool {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    runtime: Option<tokio::runtime::Runtime>,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Client>,
    open: usize,
}

/// The TLS side of every connection: rustls with the system's root certificates
/// and those of `ca_file` (PEM). The `ring` provider is named because the build
/// carries two (`ring` and `aws-lc-rs`, through other crates), and rustls will not
/// pick one itself.
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("database_ca_file: cannot read {}", path.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| anyhow!("database_ca_file: {} is not PEM: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| anyhow!("database_ca_file: {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            bail!(
                "database_ca_file: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            );
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS for the metadata database")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl Pool {
    /// A pool for `url` (`postgres://user:password@host:port/database`, or the
    /// key=value form libpq accepts). Connects once to check the server answers.
    /// TLS follows the URL's `sslmode` (`prefer` by default: when the server
    /// offers it), and the server's certificate is always verified, host name
    /// included, against the system's roots and the PEM certificates of `ca_file`
    /// (libpq's `verify-full`; tokio-postgres has no unverified mode here).
    ///
    /// Errors: the URL does not parse (the message never repeats the URL: it may
    /// hold a password), `ca_file` is unreadable or holds no certificate, the
    /// server cannot be reached, its certificate is not trusted, or the login is
    /// refused.
    pub fn connect(url: &str, ca_file: Option<&std::path::Path>) -> Result<Pool> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            anyhow!(
                "database_url: not a PostgreSQL connection URL \
                 (postgres://user:password@host:port/database): {e}"
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("evidex");
        }
        // Before the runtime: dropping a runtime on an error path would panic
        // inside the caller's async context.
        let tls = tls_connector(ca_file)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("evidex-postgres")
            .enable_all()
            .build()
            .context("cannot start the PostgreSQL connection thread")?;
        let pool = Pool {
            config,
            tls,
            runtime: Some(runtime),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        };
        drop(pool.get()?);
        Ok(pool)
    }

    /// Where the pool connects, for messages (no password).
    pub fn target(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        format!(
            "postgres://{}/{}",
            hosts.join(","),
            self.config.get_dbname().unwrap_or_default()
        )
    }

    fn open_connection(&self) -> Result<Client> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow!("the PostgreSQL pool is closed"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let config = self.config.clone();
        let tls = self.tls.clone();
        runtime.spawn(async move {
            match config.connect(tls).await {
                Ok((client, connection)) => {
                    let _ = tx.send(Ok(client));
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "PostgreSQL connection closed");
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        match rx.recv_timeout(WAIT + Duration::from_secs(5)) {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(anyhow!(
                "cannot connect to the metadata database {}: {}",
                self.target(),
                error_text(&e)
            )),
            Err(_) => bail!(
                "cannot connect to the metadata database {}: no answer",
                self.target()
            ),
        }
    }

    /// Checks out a connection, opening one when none is idle and fewer than the
    /// maximum are open; waits (up to 30 s) otherwise.
    pub fn get(&self) -> Result<Pooled<'_>> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| anyhow!("the PostgreSQL pool lock is poisoned"))?;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            while let Some(client) = state.idle.pop() {
                if !client.is_closed() {
                    return Ok(Pooled {
                        pool: self,
                        client: Some(client),
                        broken: false,
                    });
                }
                state.open -= 1;
            }
            if state.open < MAX_CONNECTIONS {
                state.open += 1;
                drop(state);
                return match self.open_connection() {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        client: Some(client),
                        broken: false,
                    }),
                    Err(e) => {
                        self.release(None);
                        Err(e)
                    }
                };
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                bail!(
                    "the metadata database {} has no free connection after {} s",
                    self.target(),
                    WAIT.as_secs()
                );
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .map_err(|_| anyhow!("the PostgreSQL pool lock is poisoned"))?
                .0;
        }
    }

    fn release(&self, client: Option<Client>) {
        if let Ok(mut state) = self.state.lock() {
            match client {
                Some(c) if !c.is_closed() => state.idle.push(c),
                _ => state.open -= 1,
            }
        }
        self.freed.notify_one();
    }

    /// Listens on `channel` (PostgreSQL `LISTEN`, manual: "NOTIFY") on a connection
    /// of its own for as long as the pool lives, calling `on_notify` for every
    /// notification, and once after each (re)connection, since notifications sent
    /// while it was away are lost. Reconnects after 1 s when the connection drops.
    pub fn listen(&self, channel: &'static str, on_notify: impl Fn() + Send + Sync + 'static) {
        let Some(rt) = &self.runtime else {
            return;
        };
        let config = self.config.clone();
        let tls = self.tls.clone();
        rt.spawn(async move {
            use futures::StreamExt;
            loop {
                match config.connect(tls.clone()).await {
                    Ok((client, mut connection)) => {
                        let (done_tx, done_rx) = futures::channel::oneshot::channel::<()>();
                        let (note_tx, mut note_rx) = futures::channel::mpsc::unbounded::<()>();
                        tokio::spawn(async move {
                            let mut messages = Box::pin(futures::stream::poll_fn(move |cx| {
                                connection.poll_message(cx)
                            }));
                            while let Some(m) = messages.next().await {
                                match m {
                                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                        let _ = note_tx.unbounded_send(());
                                    }
                                    Ok(_) => {}
                                    Err(_) => break,
                                }
                            }
                            let _ = done_tx.send(());
                        });
                        match client.batch_execute(&format!("LISTEN {channel}")).await {
                            Ok(()) => {
                                on_notify();
                                let mut done = done_rx;
                                loop {
                                    tokio::select! {
                                        n = note_rx.next() => match n {
                                            Some(()) => on_notify(),
                                            None => break,
                                        },
                                        _ = &mut done => break,
                                    }
                                }
                            }
                            Err(e) => tracing::warn!(error = %error_text(&e), "LISTEN {channel}"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_text(&e), "LISTEN connection to PostgreSQL");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids on its own threads.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A checked-out connection; back to the pool when dropped.
pub struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    broken: bool,
}

impl Pooled<'_> {
    fn client(&self) -> Result<&Client> {
        self.client
            .as_ref()
            .ok_or_else(|| anyhow!("the PostgreSQL connection was returned"))
    }

    /// Forgets this connection instead of returning it (its state is unknown).
    pub fn discard(&mut self) {
        self.broken = true;
    }

    fn check<T>(&mut self, r: std::result::Result<T, tokio_postgres::Error>) -> Result<T> {
        r.map_err(|e| {
            if e.is_closed() {
                self.broken = true;
            }
            let text = error_text(&e);
            anyhow::Error::new(e).context(text)
        })
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let client = self.client.take().filter(|_| !self.broken);
        self.pool.release(client);
    }
}

/// The server's message (and detail) rather than tokio-postgres' generic "db error".
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => {
            let text = match e.source() {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            };
            if text.contains("certificate") {
                format!(
                    "{text} (the server's TLS certificate is verified: set database_ca_file to the CA that signed it, or sslmode=disable in database_url to connect without TLS)"
                )
            } else {
                text
            }
        }
    }
}

fn params(args: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Conn for Pooled<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Val]) -> Result<u64> {
        let sql = postgres_placeholders(sql);
        let r = futures::executor::block_on(self.client()?.execute(sql.as_str(), &params(args)));
        self.check(r)
    }

    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>> {
        let sql = postgres_placeholders(sql);
        let r = futures::executor::block_on(self.client()?.query(sql.as_str(), &params(args)));
        let rows = self.check(r)?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let columns: std::sync::Arc<[String]> = first
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        rows.iter()
            .map(|r| {
                let values = (0..columns.len())
                    .map(|i| value(r, i))
                    .collect::<Result<Vec<Val>>>()?;
                Ok(Row {
                    columns: columns.clone(),
                    values,
                })
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let r = futures::executor::block_on(self.client()?.batch_execute(sql));
        self.check(r)
    }
}

fn value(row: &tokio_postgres::Row, i: usize) -> Result<Val> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Val::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Val::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Val::Int(v.into())),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(Val::Bool),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            row.try_get::<_, Option<String>>(i)?.map(Val::Text)
        }
        other => bail!(
            "metadata column {} has type {other}, which the store does not read",
            row.columns()[i].name()
        ),
    };
    Ok(v.unwrap_or(Val::Null))
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Val::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT8 => i64::from(*b).to_sql(ty, out),
                Type::INT4 => i32::from(*b).to_sql(ty, out),
                _ => Err(format!("a boolean cannot be sent as {ty}").into()),
            },
            Val::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                _ => Err(format!("text cannot be sent as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
