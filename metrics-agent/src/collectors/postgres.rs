//! PostgreSQL collector with postgres_exporter-compatible metric names.

use super::exposition::Exposition;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

const ACTIVITY_STATES: [&str; 6] = [
    "active",
    "disabled",
    "fastpath function call",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
];

/// libpq's `sslmode`, as the collector acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (libpq's default), certificate not checked.
    Prefer,
    /// TLS or nothing, certificate not checked (libpq's `require` without a root file).
    Require,
    /// TLS, the certificate's chain checked, not its name.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

/// Takes `sslmode` and `sslrootcert` out of a DSN (tokio-postgres knows neither
/// `verify-ca`/`verify-full` nor `sslrootcert`): the rest, the mode (`prefer` when
/// absent, as libpq), the root file.
fn tls_options(dsn: &str) -> Result<(String, SslMode, Option<std::path::PathBuf>), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |k: &str, v: &str| -> Result<bool, String> {
        match k {
            "sslmode" => {
                mode = Some(match v {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(format!("unknown sslmode {other:?}")),
                });
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(std::path::PathBuf::from(v));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        match dsn.split_once('?') {
            None => dsn.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for kv in query.split('&') {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                    if !take(k, &v)? {
                        kept.push(kv);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        // key = value pairs; a value may be single-quoted with backslash escapes.
        let mut kept = String::new();
        let b = dsn.as_bytes();
        let mut i = 0;
        while i < b.len() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let start = i;
            while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            let key = &dsn[start..i];
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'=') {
                i += 1;
            }
            let mut value = String::new();
            if i < b.len() && b[i] == b'\'' {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    value.push(b[i] as char);
                    i += 1;
                }
                i += 1;
            } else {
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    value.push(b[i] as char);
                    i += 1;
                }
            }
            if key.is_empty() {
                continue;
            }
            if !take(key, &value)? {
                kept.push_str(&dsn[start..i.min(b.len())]);
                kept.push(' ');
            }
        }
        kept.trim_end().to_string()
    };
    Ok((rest, mode.unwrap_or(SslMode::Prefer), root))
}

/// Checks the chain against the roots but not the name (libpq's `verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end: &rustls::pki_types::CertificateDer<'_>,
        mid: &[rustls::pki_types::CertificateDer<'_>],
        name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end, mid, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS client for a mode: roots from `sslrootcert` (PEM) or the system's.
fn tls_connector(
    mode: SslMode,
    root: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        let mut roots = rustls::RootCertStore::empty();
        match root {
            Some(path) => {
                for c in rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
                {
                    let c = c.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
        if mode == SslMode::VerifyFull {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        }
    } else {
        builder
            .dangerous()
            // libpq's `prefer`/`require`: encrypted, not authenticated.
            .with_custom_certificate_verifier(Arc::new(crate::http_client::NoVerify(provider)))
            .with_no_client_auth()
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

pub struct PostgresCollector {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    client: Option<Client>,
    statements_limit: usize,
}

/// Why a DSN was refused or a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("invalid PostgreSQL DSN: {0}")]
    Dsn(#[source] tokio_postgres::Error),
    #[error("connect: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("not connected")]
    NotConnected,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{query}: {source}")]
    Query {
        /// The statement (or, for pg_stat_statements, its name).
        query: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no version row")]
    NoVersionRow,
}

/// Rows of a simple query as text cells.
type Rows = Vec<Vec<Option<String>>>;

async fn query(c: &Client, sql: &str) -> Result<Rows, tokio_postgres::Error> {
    let msgs = c.simple_query(sql).await?;
    let mut rows = Vec::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    Ok(rows)
}

fn num(cell: &Option<String>) -> f64 {
    match cell.as_deref() {
        Some("t") => 1.0,
        Some("f") => 0.0,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => 0.0,
    }
}

fn text(cell: &Option<String>) -> &str {
    cell.as_deref().unwrap_or("")
}

impl PostgresCollector {
    /// `dsn` is a libpq key/value string or a `postgres://` URL.
    /// `sslmode` as libpq (`disable`, `prefer` (the default), `require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert` are honoured: RDS with `rds.force_ssl` needs TLS.
    pub fn new(dsn: &str) -> Result<Self, PostgresError> {
        let (rest, mode, root) = tls_options(dsn).map_err(PostgresError::Tls)?;
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(PostgresError::Dsn)?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = tls_connector(mode, root.as_deref()).map_err(PostgresError::Tls)?;
        Ok(PostgresCollector {
            config,
            tls,
            client: None,
            statements_limit: 100,
        })
    }

    /// `host:port` of the first configured host, used as the `instance` label.
    pub fn instance(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    async fn connect(&mut self) -> Result<&Client, PostgresError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, conn) = self
                .config
                .connect(self.tls.clone())
                .await
                .map_err(PostgresError::Connect)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("postgres connection closed: {e}");
                }
            });
            self.client = Some(client);
        }
        self.client.as_ref().ok_or(PostgresError::NotConnected)
    }

    pub async fn collect(&mut self) -> String {
        let started = Instant::now();
        let mut e = Exposition::new();
        let res = self.collect_into(&mut e).await;
        let mut out = Exposition::new();
        match res {
            Ok(()) => {
                out.sample("pg_up", &[], 1.0);
                out.sample("pg_exporter_last_scrape_error", &[], 0.0);
            }
            Err(err) => {
                tracing::debug!("postgres collector: {err}");
                self.client = None;
                out.sample("pg_up", &[], 0.0);
                out.sample("pg_exporter_last_scrape_error", &[], 1.0);
                e = Exposition::new();
            }
        }
        out.sample(
            "pg_exporter_last_scrape_duration_seconds",
            &[],
            started.elapsed().as_secs_f64(),
        );
        let mut s = out.finish();
        s.push_str(&e.finish());
        s
    }

    async fn collect_into(&mut self, e: &mut Exposition) -> Result<(), PostgresError> {
        let limit = self.statements_limit;
        let c = self.connect().await?;
        let q = |sql: &'static str| async move {
            query(c, sql).await.map_err(|source| PostgresError::Query {
                query: sql.to_string(),
                source,
            })
        };

        let info = q("SELECT current_setting('server_version_num'), current_setting('server_version'), \
                      extract(epoch from pg_postmaster_start_time()), current_setting('max_connections'), \
                      current_setting('superuser_reserved_connections'), pg_is_in_recovery(), \
                      CASE WHEN NOT pg_is_in_recovery() THEN 0 \
                           ELSE GREATEST(0, extract(epoch from now() - pg_last_xact_replay_timestamp())) END, \
                      (SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements')")
        .await?;
        let row = info.first().ok_or(PostgresError::NoVersionRow)?;
        let version_num = num(&row[0]);
        let version = text(&row[1]).to_string();
        let short = version.split_whitespace().next().unwrap_or("").to_string();
        e.sample(
            "pg_static",
            &[("version", &version), ("short_version", &short)],
            1.0,
        );
        e.sample("pg_postmaster_start_time_seconds", &[], num(&row[2]));
        e.sample("pg_settings_max_connections", &[], num(&row[3]));
        e.sample(
            "pg_settings_superuser_reserved_connections",
            &[],
            num(&row[4]),
        );
        e.sample("pg_replication_is_replica", &[], num(&row[5]));
        e.sample("pg_replication_lag_seconds", &[], num(&row[6]));
        e.sample("pg_replication_lag", &[], num(&row[6]));
        let has_statements = num(&row[7]) > 0.0;

        for r in q("SELECT datid, datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit, \
                    tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted, conflicts, temp_files, \
                    temp_bytes, deadlocks, blk_read_time, blk_write_time FROM pg_stat_database WHERE datname IS NOT NULL")
        .await?
        {
            let l = [("datid", text(&r[0])), ("datname", text(&r[1]))];
            let names = [
                "numbackends",
                "xact_commit",
                "xact_rollback",
                "blks_read",
                "blks_hit",
                "tup_returned",
                "tup_fetched",
                "tup_inserted",
                "tup_updated",
                "tup_deleted",
                "conflicts",
                "temp_files",
                "temp_bytes",
                "deadlocks",
                "blk_read_time",
                "blk_write_time",
            ];
            for (i, n) in names.iter().enumerate() {
                e.sample(&format!("pg_stat_database_{n}"), &l, num(&r[i + 2]));
            }
            let (read, hit) = (num(&r[5]), num(&r[6]));
            if read + hit > 0.0 {
                e.sample("pg_stat_database_cache_hit_ratio", &l, hit / (read + hit));
            }
        }

        let dbs = q("SELECT datname, pg_database_size(datname), datconnlimit FROM pg_database WHERE datallowconn").await?;
        for r in &dbs {
            let l = [("datname", text(&r[0]))];
            e.sample("pg_database_size_bytes", &l, num(&r[1]));
            e.sample("pg_database_connection_limit", &l, num(&r[2]));
        }
        let activity = q("SELECT datname, state, count(*), \
                          coalesce(max(extract(epoch from now() - xact_start)), 0) \
                          FROM pg_stat_activity WHERE datname IS NOT NULL GROUP BY datname, state")
        .await?;
        for db in &dbs {
            let d = text(&db[0]);
            for st in ACTIVITY_STATES {
                let found = activity
                    .iter()
                    .find(|r| text(&r[0]) == d && text(&r[1]) == st);
                let (count, max_tx) = found
                    .map(|r| (num(&r[2]), num(&r[3])))
                    .unwrap_or((0.0, 0.0));
                e.sample(
                    "pg_stat_activity_count",
                    &[("datname", d), ("state", st)],
                    count,
                );
                e.sample(
                    "pg_stat_activity_max_tx_duration",
                    &[("datname", d), ("state", st)],
                    max_tx,
                );
            }
        }
        for r in q("SELECT d.datname, lower(l.mode), count(*) FROM pg_locks l \
                    JOIN pg_database d ON d.oid = l.database GROUP BY 1, 2")
        .await?
        {
            e.sample(
                "pg_locks_count",
                &[("datname", text(&r[0])), ("mode", text(&r[1]))],
                num(&r[2]),
            );
        }
        for r in q("SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''), coalesce(state, ''), \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication \
                    WHERE NOT pg_is_in_recovery()")
        .await?
        {
            e.sample(
                "pg_stat_replication_pg_wal_lsn_diff",
                &[("application_name", text(&r[0])), ("client_addr", text(&r[1])), ("state", text(&r[2]))],
                num(&r[3]),
            );
        }
        if version_num < 170000.0 {
            let bg = q("SELECT checkpoints_timed, checkpoints_req, buffers_checkpoint, buffers_clean, \
                        buffers_backend, buffers_backend_fsync, buffers_alloc, maxwritten_clean FROM pg_stat_bgwriter")
            .await?;
            if let Some(r) = bg.first() {
                let names = [
                    "checkpoints_timed_total",
                    "checkpoints_req_total",
                    "buffers_checkpoint_total",
                    "buffers_clean_total",
                    "buffers_backend_total",
                    "buffers_backend_fsync_total",
                    "buffers_alloc_total",
                    "maxwritten_clean_total",
                ];
                for (i, n) in names.iter().enumerate() {
                    e.sample(&format!("pg_stat_bgwriter_{n}"), &[], num(&r[i]));
                }
            }
        }
        if has_statements {
            let time_col = if version_num >= 130000.0 {
                "total_exec_time"
            } else {
                "total_time"
            };
            let (rd, wr) = if version_num >= 170000.0 {
                ("shared_blk_read_time", "shared_blk_write_time")
            } else {
                ("blk_read_time", "blk_write_time")
            };
            let sql = format!(
                "SELECT pg_get_userbyid(s.userid), d.datname, s.queryid, s.calls, s.{time_col} / 1000.0, s.rows, \
                 s.{rd} / 1000.0, s.{wr} / 1000.0 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
                 WHERE s.queryid IS NOT NULL ORDER BY s.{time_col} DESC LIMIT {limit}"
            );
            let rows = query(c, &sql)
                .await
                .map_err(|source| PostgresError::Query {
                    query: "pg_stat_statements".into(),
                    source,
                })?;
            for r in rows {
                let l = [
                    ("user", text(&r[0])),
                    ("datname", text(&r[1])),
                    ("queryid", text(&r[2])),
                ];
                e.sample("pg_stat_statements_calls_total", &l, num(&r[3]));
                e.sample("pg_stat_statements_seconds_total", &l, num(&r[4]));
                e.sample("pg_stat_statements_rows_total", &l, num(&r[5]));
                e.sample(
                    "pg_stat_statements_block_read_seconds_total",
                    &l,
                    num(&r[6]),
                );
                e.sample(
                    "pg_stat_statements_block_write_seconds_total",
                    &l,
                    num(&r[7]),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{Format, parse, parse_series};
    use test_support::postgres::start_postgres;

    type Sample = (String, Vec<(String, String)>, f64);

    fn values(text: &str) -> Vec<Sample> {
        parse(text, Format::Text)
            .expect("exposition parses")
            .iter()
            .map(|s| {
                let (n, l) = parse_series(s.series).expect("series");
                (n, l, s.value)
            })
            .collect()
    }

    #[tokio::test]
    async fn collects_from_a_real_server() {
        let server = start_postgres();
        let dsn = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            server.port
        );
        // Workload: a table, committed and rolled-back transactions, pg_stat_statements.
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        for sql in [
            "CREATE EXTENSION pg_stat_statements",
            "CREATE TABLE t(i int)",
            "INSERT INTO t SELECT generate_series(1, 1000)",
            "BEGIN; INSERT INTO t VALUES (1); ROLLBACK",
            "SELECT pg_sleep(0.05)",
            "SELECT count(*) FROM t",
        ] {
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // A backend flushes its statistics when it exits.
        drop(client);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;

        let mut c = PostgresCollector::new(&dsn).expect("dsn");
        assert_eq!(c.instance(), format!("127.0.0.1:{}", server.port));
        let text = c.collect().await;
        let v = values(&text);
        let get = |name: &str, label: Option<(&str, &str)>| -> Vec<f64> {
            v.iter()
                .filter(|(n, l, _)| {
                    n == name
                        && label.is_none_or(|(k, val)| l.iter().any(|(a, b)| a == k && b == val))
                })
                .map(|(_, _, x)| *x)
                .collect()
        };
        assert_eq!(get("pg_up", None), vec![1.0], "{text}");
        assert_eq!(get("pg_settings_max_connections", None), vec![100.0]);
        assert!(
            get(
                "pg_stat_database_xact_commit",
                Some(("datname", "postgres"))
            )[0] > 0.0
        );
        assert!(
            get(
                "pg_stat_database_xact_rollback",
                Some(("datname", "postgres"))
            )[0] >= 1.0
        );
        assert_eq!(
            get("pg_stat_database_deadlocks", Some(("datname", "postgres"))),
            vec![0.0]
        );
        let ratio = get(
            "pg_stat_database_cache_hit_ratio",
            Some(("datname", "postgres")),
        )[0];
        assert!((0.0..=1.0).contains(&ratio));
        // Our own connection is active in 'postgres'; the workload connection is idle.
        let active = get("pg_stat_activity_count", Some(("state", "active")));
        assert!(active.iter().sum::<f64>() >= 1.0, "{text}");
        assert_eq!(get("pg_replication_is_replica", None), vec![0.0]);
        assert_eq!(get("pg_replication_lag_seconds", None), vec![0.0]);
        assert!(get("pg_database_size_bytes", Some(("datname", "postgres")))[0] > 1e6);
        assert!(
            !get("pg_stat_statements_calls_total", None).is_empty(),
            "{text}"
        );
        let slowest = get("pg_stat_statements_seconds_total", None);
        assert!(
            slowest.iter().cloned().fold(0.0, f64::max) >= 0.05,
            "{text}"
        );
        drop(server);
        // Server gone: pg_up drops to 0 and nothing else is reported.
        let text = c.collect().await;
        let v = values(&text);
        assert!(
            v.iter().any(|(n, _, x)| n == "pg_up" && *x == 0.0),
            "{text}"
        );
        assert!(!v.iter().any(|(n, _, _)| n.starts_with("pg_stat_database")));
    }

    #[test]
    fn tls_options_come_out_of_both_dsn_forms() {
        let (rest, mode, root) = tls_options(
            "host=db port=5432 sslmode=verify-full sslrootcert='/etc/rds ca.pem' user=u",
        )
        .expect("kv");
        assert_eq!(rest, "host=db port=5432 user=u");
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(
            root.as_deref(),
            Some(std::path::Path::new("/etc/rds ca.pem"))
        );
        let (rest, mode, root) =
            tls_options("postgres://u:p@db:5432/x?sslmode=require&application_name=a")
                .expect("url");
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!((mode, root), (SslMode::Require, None));
        let (rest, mode, _) =
            tls_options("postgresql://db/x?sslrootcert=%2Ftmp%2Fca.pem&sslmode=verify-ca")
                .expect("url");
        assert_eq!(
            (rest.as_str(), mode),
            ("postgresql://db/x", SslMode::VerifyCa)
        );
        assert_eq!(tls_options("host=db").expect("kv").1, SslMode::Prefer);
        assert!(tls_options("host=db sslmode=sometimes").is_err());
    }

    /// A real PostgreSQL with TLS switched on at run time (certificate from a test CA,
    /// for `localhost`): every sslmode behaves as libpq's.
    #[tokio::test]
    async fn sslmodes_as_libpq_against_a_real_server() {
        use std::os::unix::fs::MetadataExt;
        let server = start_postgres();
        let port = server.port;
        let up = |dsn: String| async move {
            let mut c = PostgresCollector::new(&dsn).expect("dsn");
            let text = c.collect().await;
            values(&text)
                .iter()
                .any(|(n, _, x)| n == "pg_up" && *x == 1.0)
        };
        let kv = |host: &str, extra: &str| {
            format!("host={host} port={port} user=postgres dbname=postgres {extra}")
        };
        // No TLS on the server yet: `require` refuses plain text, `prefer` falls back.
        assert!(!up(kv("127.0.0.1", "sslmode=require")).await);
        assert!(up(kv("127.0.0.1", "")).await);

        let ca = test_support::tls::TestCa::new();
        let leaf = ca.sign(&["localhost"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let (cp, kp, cap) = (
            dir.path().join("server.crt"),
            dir.path().join("server.key"),
            dir.path().join("ca.pem"),
        );
        std::fs::write(&cp, leaf.cert_pem()).expect("cert");
        std::fs::write(&kp, leaf.key_pem()).expect("key");
        std::fs::write(&cap, ca.pem()).expect("ca");
        std::fs::set_permissions(&kp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        if std::fs::metadata(&kp)
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
        {
            // The server runs as `postgres` and must own its key.
            let st = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(st.success());
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("chmod dir");
        }
        let (client, conn) = tokio_postgres::connect(&kv("127.0.0.1", ""), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        for sql in [
            format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cp.display()),
            format!("ALTER SYSTEM SET ssl_key_file = '{}'", kp.display()),
            "ALTER SYSTEM SET ssl = on".to_string(),
            "SELECT pg_reload_conf()".to_string(),
        ] {
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let root = format!("sslrootcert={}", cap.display());
        assert!(up(kv("127.0.0.1", "sslmode=require")).await, "require");
        assert!(
            up(kv("localhost", &format!("sslmode=verify-full {root}"))).await,
            "verify-full"
        );
        assert!(
            up(format!(
                "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
                cap.display()
            ))
            .await,
            "verify-full, URL"
        );
        // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca
        // (chain only) accepts.
        assert!(!up(kv("127.0.0.1", &format!("sslmode=verify-full {root}"))).await);
        assert!(
            up(kv("127.0.0.1", &format!("sslmode=verify-ca {root}"))).await,
            "verify-ca"
        );
        // Against the system roots the test CA is unknown.
        assert!(!up(kv("localhost", "sslmode=verify-full")).await);
    }
}
