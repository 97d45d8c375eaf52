//! PostgreSQL servers for the tests, each started once per test process by testserver.sh (a
//! plain one, and one with TLS only for tls.rs's tests); each test gets a database of its own
//! with the schema.

use super::PgStore;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// A server's URL without a database and its directory, or why there is none.
fn start(tls: bool) -> Result<(String, PathBuf), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let dir = std::env::temp_dir().join(format!("fastjobs-pg-{}-{port}", std::process::id()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rust/store/postgres/testserver.sh");
    let out = std::process::Command::new("sh")
        .arg(script)
        .arg("start")
        .arg(&dir)
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .args(tls.then_some("tls"))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok((format!("postgresql://postgres@127.0.0.1:{port}"), dir))
}

/// The server, or None (the test skips, saying why) when its binaries are missing, unless
/// CI=true (then the test fails).
fn started(server: &'static Result<(String, PathBuf), String>) -> Option<&'static (String, PathBuf)> {
    match server {
        Ok(s) => Some(s),
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: no PostgreSQL server for the tests: {why}");
            None
        }
        Err(why) => panic!("no PostgreSQL server for the tests (CI=true): {why}"),
    }
}

/// A new database on the server of `base` (`?query` appended to reach it), with the schema
/// made over that URL; its URL without the query.
async fn create(base: &str, query: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let admin = super::pool::parse_url(&format!("{base}/postgres{query}")).expect("admin URL");
    let (client, conn) = admin.open("the test server").await.expect("connect");
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let url = format!("{base}/{name}");
    PgStore::init_schema(&format!("{url}{query}")).await.expect("schema");
    url
}

/// A fresh database with the schema on the plain server, and its URL; None when there is no
/// server (`started`).
pub(crate) async fn database() -> Option<String> {
    static SERVER: OnceLock<Result<(String, PathBuf), String>> = OnceLock::new();
    let (base, _) = started(SERVER.get_or_init(|| start(false)))?;
    Some(create(base, "").await)
}

/// A fresh database with the schema on the TLS server (made over verify-full): its URL without
/// TLS parameters, and the directory of the server's CA and client files (ca.pem, other-ca.pem,
/// client.pem, client.key); None when there is no server.
pub(crate) async fn tls_database() -> Option<(String, PathBuf)> {
    static SERVER: OnceLock<Result<(String, PathBuf), String>> = OnceLock::new();
    let (base, dir) = started(SERVER.get_or_init(|| start(true)))?;
    let tls = dir.join("tls");
    let url = create(base, &format!("?sslmode=verify-full&sslrootcert={}", tls.join("ca.pem").display())).await;
    Some((url, tls))
}

/// A store on a fresh database (results kept an hour).
pub(crate) async fn store() -> Option<PgStore> {
    let url = database().await?;
    Some(PgStore::connect(&url, Duration::from_secs(3600)).await.expect("connect"))
}
