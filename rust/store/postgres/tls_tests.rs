//! TLS to PostgreSQL (tls.rs): the URL's parameters, and connections to a real server with TLS
//! only (testserver.rs) and to the plain one: `cargo test --lib postgres::tls`.

use super::pool::parse_url;
use super::tests::job;
use super::testserver::{database, tls_database};
use super::*;
use std::path::Path;

const TTL: Duration = Duration::from_secs(60);

fn with(url: &str, query: &str) -> String {
    format!("{url}?{query}")
}

fn ca(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

/// Whether every connection the store has open to its database uses TLS, and how many it has.
async fn tls_connections(s: &PgStore) -> (bool, i64) {
    let row = s
        .pool
        .get()
        .await
        .unwrap()
        .client
        .query_one(
            "SELECT coalesce(bool_and(s.ssl), false), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = current_database() AND a.backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn bad_tls_parameters_are_refused_before_connecting() {
    let bad = |query: &str| parse_url(&format!("postgresql://u:secret@db.example:5432/x?{query}")).err().unwrap();
    assert!(matches!(bad("sslmode=on"), Error::Invalid(m) if m.contains("unknown sslmode \"on\"") && m.contains("verify-full")));
    assert!(matches!(bad("sslmode=allow"), Error::Invalid(m) if m.contains("unknown sslmode")));
    assert!(matches!(bad("sslmode=verify-full"), Error::Invalid(m) if m.contains("sslrootcert")));
    assert!(matches!(bad("sslmode=verify-ca"), Error::Invalid(m) if m.contains("sslrootcert")));
    assert!(matches!(bad("sslmode=require&sslrootcert=system"), Error::Invalid(m) if m.contains("use sslmode=verify-full")));
    assert!(matches!(bad("sslcert=/c.pem"), Error::Invalid(m) if m.contains("both sslcert and sslkey")));
    let e = bad("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    assert!(matches!(&e, Error::Tls(m) if m.contains("/nonexistent/ca.pem") && m.contains("No such file")), "{e:?}");
    assert!(!e.is_retryable());
    // A file that holds no certificate.
    let e = bad(&format!("sslmode=require&sslrootcert={}", file!()));
    assert!(matches!(&e, Error::Tls(m) if m.contains("no PEM certificate")), "{e:?}");
}

#[test]
fn tls_parameters_are_taken_out_and_the_rest_left_to_tokio_postgres() {
    let e = parse_url("postgresql://u@h/x?application_name=app&sslmode=require&connect_timeout=3").unwrap();
    assert_eq!(e.config.get_application_name(), Some("app"));
    assert_eq!(e.config.get_connect_timeout(), Some(&Duration::from_secs(3)));
    assert_eq!(e.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
    // The default is prefer, as libpq's; sslrootcert=system makes it verify-full.
    assert_eq!(parse_url("postgresql://u@h/x").unwrap().config.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);
    let system = parse_url("postgresql://u@h/x?sslrootcert=system");
    assert!(matches!(system, Ok(ref e) if e.config.get_ssl_mode() == tokio_postgres::config::SslMode::Require), "{:?}", system.err());
    // A Unix socket has no TLS: the mode is not asked of it, as libpq.
    let socket = parse_url("postgresql://u@%2Ftmp/x?sslmode=require").unwrap();
    assert_eq!(socket.config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    assert!(matches!(parse_url("postgresql://u@h/x?sslfoo=1"), Err(Error::Invalid(m)) if m.contains("sslfoo")));
}

#[tokio::test]
async fn verify_full_against_the_ca_reaches_the_store_on_every_connection() {
    let Some((url, dir)) = tls_database().await else { return };
    for host in ["127.0.0.1", "localhost"] {
        let url = url.replace("127.0.0.1", host);
        let s = PgStore::connect(&with(&url, &format!("sslmode=verify-full&sslrootcert={}", ca(&dir, "ca.pem"))), TTL).await.unwrap();
        let q = Arc::new(PgQueue { name: format!("tls-{host}") });
        // A guarded chunk goes by COPY on the bulk path's own connection.
        let jobs: Vec<NewJob> = (0..3).map(|i| job(&format!("aaaaaaaaaa-{i}"), 0)).collect();
        let mark = Watermark { producer: "aaaaaaaaaa".into(), last_seq: 2, guard: Some(0) };
        s.write_chunk(&q, &(jobs, mark)).await.unwrap();
        assert_eq!(s.counts(&q).await.unwrap().waiting, 3);
        // The pool's four, the listening one and the bulk one: all over TLS (the server takes
        // nothing else).
        assert_eq!(tls_connections(&s).await, (true, 6));
        PgStore::check(&with(&url, &format!("sslmode=verify-full&sslrootcert={}", ca(&dir, "ca.pem")))).await.unwrap();
    }
}

#[tokio::test]
async fn require_encrypts_without_a_ca_and_prefer_takes_tls_when_offered() {
    let Some((url, _)) = tls_database().await else { return };
    for query in ["sslmode=require", "sslmode=prefer", "application_name=x"] {
        let s = PgStore::connect(&with(&url, query), TTL).await.unwrap();
        let (all_tls, n) = tls_connections(&s).await;
        assert!(all_tls && n >= 5, "{query}: {n}");
    }
    // disable: the server takes TLS connections only.
    let e = PgStore::connect(&with(&url, "sslmode=disable"), TTL).await.err().unwrap();
    assert!(matches!(&e, Error::Authentication(m) if m.contains("no encryption")), "{e:?}");
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_a_tls_error_not_retried() {
    let Some((url, dir)) = tls_database().await else { return };
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        let wrong = with(&url, &format!("sslmode={mode}&sslrootcert={}", ca(&dir, "other-ca.pem")));
        let e = PgStore::connect(&wrong, TTL).await.err().unwrap();
        assert!(
            matches!(&e, Error::Tls(m) if m.contains("does not verify against sslrootcert=") && m.contains("other-ca.pem")),
            "{mode}: {e:?}"
        );
        assert!(!e.is_retryable());
        assert!(matches!(PgStore::check(&wrong).await, Err(Error::Tls(_))));
        assert!(matches!(PgStore::init_schema(&wrong).await, Err(Error::Tls(_))));
    }
    // A host name the certificate does not name: verify-full refuses it, verify-ca does not.
    let elsewhere = url.replace("127.0.0.1", "db.invalid");
    let ca_file = ca(&dir, "ca.pem");
    let e = PgStore::connect(&with(&elsewhere, &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca_file}")), TTL)
        .await
        .err()
        .unwrap();
    assert!(matches!(&e, Error::Tls(m) if m.contains("not valid for name")), "{e:?}");
    PgStore::connect(&with(&elsewhere, &format!("hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca_file}")), TTL).await.unwrap();
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_a_tls_error_and_prefer_goes_plain() {
    let Some(url) = database().await else { return };
    let e = PgStore::connect(&with(&url, "sslmode=require"), TTL).await.err().unwrap();
    assert!(matches!(&e, Error::Tls(m) if m.contains("does not accept TLS")), "{e:?}");
    assert!(!e.is_retryable());
    let s = PgStore::connect(&with(&url, "sslmode=prefer"), TTL).await.unwrap();
    let (all_tls, n) = tls_connections(&s).await;
    assert!(!all_tls && n >= 5);
}

#[tokio::test]
async fn a_password_login_binds_the_tls_channel_and_a_client_certificate_logs_in() {
    let Some((url, dir)) = tls_database().await else { return };
    // SCRAM-SHA-256-PLUS: the server's certificate hash (tls-server-end-point) is in the login.
    let scram = url.replace("postgres@", "fastjobs_scram:scram-secret@");
    PgStore::connect(&with(&scram, "sslmode=require&channel_binding=require"), TTL).await.unwrap();
    let cert = url.replace("postgres@", "fastjobs_cert@");
    let (c, k) = (ca(&dir, "client.pem"), ca(&dir, "client.key"));
    let ca_file = ca(&dir, "ca.pem");
    PgStore::connect(&with(&cert, &format!("sslmode=verify-full&sslrootcert={ca_file}&sslcert={c}&sslkey={k}")), TTL).await.unwrap();
    let e = PgStore::connect(&with(&cert, &format!("sslmode=verify-full&sslrootcert={ca_file}")), TTL).await.err().unwrap();
    assert!(matches!(&e, Error::Authentication(_)), "{e:?}");
}
