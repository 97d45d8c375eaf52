//! A PostgreSQL server for the tests, started once per test process by testserver.sh; each
//! test gets a database of its own with the schema.

use super::PgStore;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The server's URL without a database, or why there is none.
fn server() -> &'static Result<String, String> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let dir = std::env::temp_dir().join(format!("fastjobs-pg-{}-{port}", std::process::id()));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rust/store/postgres/testserver.sh");
        let out = std::process::Command::new("sh")
            .arg(script)
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(format!("postgresql://postgres@127.0.0.1:{port}"))
    })
}

/// A fresh database with the schema, and its URL; None (the test skips, saying why) when
/// the server binaries are missing, unless CI=true (then the test fails).
pub(crate) async fn database() -> Option<String> {
    let base = match server() {
        Ok(url) => url,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: no PostgreSQL server for the tests: {why}");
            return None;
        }
        Err(why) => panic!("no PostgreSQL server for the tests (CI=true): {why}"),
    };
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let (client, conn) = tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let url = format!("{base}/{name}");
    PgStore::init_schema(&url).await.expect("schema");
    Some(url)
}

/// A store on a fresh database (results kept an hour).
pub(crate) async fn store() -> Option<PgStore> {
    let url = database().await?;
    Some(PgStore::connect(&url, Duration::from_secs(3600)).await.expect("connect"))
}
