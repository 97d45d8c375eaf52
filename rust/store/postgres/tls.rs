//! TLS to PostgreSQL, as libpq's URL parameters ask: `sslmode` (disable, prefer, require,
//! verify-ca, verify-full; prefer by default, as libpq), `sslrootcert` (a PEM file of CA
//! certificates, or `system`: the platform's roots) and `sslcert` with `sslkey` (a client
//! certificate). rustls with the ring provider, as the Redis client and the callbacks: no C
//! toolchain beyond the one ring needs, in CI and in the manylinux wheel.
//!
//! As libpq: prefer and require encrypt without checking the server's certificate unless an
//! `sslrootcert` is given (then they check it as verify-ca does); verify-ca checks the chain,
//! verify-full the chain and the host name; `sslrootcert=system` makes verify-full the default
//! and refuses weaker modes. Unlike libpq, no file under ~/.postgresql is read by default.

use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// The TLS parameters a URL may carry, taken out of it before tokio-postgres reads the rest.
const PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Splits the TLS parameters off `url`: the URL without them (for tokio-postgres) and the
/// connector they describe, with its files read. The mode tokio-postgres must use is set on
/// the config by `apply`.
pub(crate) fn split(url: &str) -> Result<(String, Connector)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut rest = Vec::new();
    let mut given: [Option<String>; 4] = Default::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
        match PARAMS.iter().position(|p| *p == key) {
            Some(i) => given[i] = Some(percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned()),
            None => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    let [mode, root, cert, key] = given;
    Ok((url, Connector::new(mode.as_deref(), root.as_deref(), cert.as_deref(), key.as_deref())?))
}

/// Opens TLS connections as the URL asks (`MakeTlsConnect`, one per connection attempt).
#[derive(Clone)]
pub(crate) struct Connector {
    mode: Mode,
    /// None with sslmode=disable: nothing to read, nothing to build.
    config: Option<Arc<ClientConfig>>,
    /// What the server's certificate is checked against, for messages.
    roots: Arc<str>,
}

impl Connector {
    fn new(mode: Option<&str>, root: Option<&str>, cert: Option<&str>, key: Option<&str>) -> Result<Connector> {
        let system = root == Some("system");
        let mode = match mode {
            None if system => Mode::VerifyFull,
            None | Some("prefer") => Mode::Prefer,
            Some("disable") => Mode::Disable,
            Some("require") => Mode::Require,
            Some("verify-ca") => Mode::VerifyCa,
            Some("verify-full") => Mode::VerifyFull,
            // libpq's "allow" tries plain first: a silent downgrade fastjobs does not offer.
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "unknown sslmode {other:?} in the PostgreSQL URL: use disable, prefer (the default), require, verify-ca or verify-full"
                )))
            }
        };
        if system && mode != Mode::VerifyFull && mode != Mode::Disable {
            return Err(Error::Invalid(format!(
                "sslmode={} may not be used with sslrootcert=system (the platform's roots name public hosts): use sslmode=verify-full",
                mode.name()
            )));
        }
        if root.is_none() && matches!(mode, Mode::VerifyCa | Mode::VerifyFull) {
            return Err(Error::Invalid(format!(
                "sslmode={} needs the CA to check the server's certificate against: add sslrootcert=/path/to/ca.pem to the \
                 PostgreSQL URL, or sslrootcert=system for the platform's roots",
                mode.name()
            )));
        }
        if cert.is_some() != key.is_some() {
            return Err(Error::Invalid("a client certificate for PostgreSQL needs both sslcert and sslkey in the URL".into()));
        }
        let roots: Arc<str> = match root {
            Some("system") => "the platform's root certificates (sslrootcert=system)".into(),
            Some(path) => format!("sslrootcert={path}").into(),
            None => "nothing (no sslrootcert)".into(),
        };
        if mode == Mode::Disable {
            return Ok(Connector { mode, config: None, roots });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = match root {
            None => None,
            Some(root) => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(root)?), provider.clone())
                    .build()
                    .map_err(|e| Error::Tls(format!("cannot use the certificates of sslrootcert={root}: {e}")))?,
            ),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match chain {
            Some(webpki) if mode == Mode::VerifyFull => webpki,
            chain => Arc::new(Lenient { chain, provider: provider.clone() }),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(format!("TLS for PostgreSQL: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (cert, key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(client_certs(cert)?, client_key(key)?)
                .map_err(|e| Error::Tls(format!("cannot use the client certificate sslcert={cert} with sslkey={key}: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        // Required by servers that take TLS first (sslnegotiation=direct, PostgreSQL 17).
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector { mode, config: Some(Arc::new(config)), roots })
    }

    /// Sets the mode tokio-postgres negotiates with: it knows disable, prefer and require; the
    /// checks of verify-ca and verify-full are this connector's. A Unix socket never has TLS
    /// (the server refuses it there), so it is never asked for, as libpq does.
    pub(crate) fn apply(&self, config: &mut tokio_postgres::Config) {
        let tcp = config.get_hosts().iter().any(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)));
        config.ssl_mode(match self.mode {
            Mode::Disable => SslMode::Disable,
            _ if !tcp => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
    }
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

fn root_store(root: &str) -> Result<RootCertStore> {
    let certs = if root == "system" {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            return Err(Error::Tls(format!("sslrootcert=system: no root certificates found on this machine ({})", why.join("; "))));
        }
        found.certs
    } else {
        read_certs("sslrootcert", root)?
    };
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::Tls(format!("sslrootcert={root}: none of its certificates can be used as a CA")));
    }
    Ok(store)
}

/// The certificates of a PEM file; an error naming the parameter and the file when it cannot
/// be read or holds none.
fn read_certs(param: &str, path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |e: rustls::pki_types::pem::Error| Error::Tls(format!("cannot read the {param} file {path:?}: {}", pem_error(e)));
    let certs = CertificateDer::pem_file_iter(path).map_err(bad)?.collect::<std::result::Result<Vec<_>, _>>().map_err(bad)?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("the {param} file {path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
    }
    Ok(certs)
}

fn client_certs(path: &str) -> Result<Vec<CertificateDer<'static>>> {
    read_certs("sslcert", path)
}

fn client_key(path: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::Tls(format!("cannot read the sslkey file {path:?}: {}", pem_error(e))))
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of that kind in it".into(),
        e => format!("not a valid PEM file ({e})"),
    }
}

/// A certificate checked less than verify-full does, as libpq's modes say: prefer and require
/// without sslrootcert (`chain` None) take any certificate, the connection encrypted and the
/// server proving it holds its certificate's key, but nothing saying whose certificate it is;
/// verify-ca (and prefer or require with sslrootcert) requires the chain to lead to a root of
/// sslrootcert, whatever host name the certificate names (webpki checks the chain before the
/// name, so a wrong name means the chain was good).
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A handshake the server or this side refused (a certificate that does not verify, an alert):
/// the settings must change, unlike a connection that broke meanwhile (an `io::Error`).
#[derive(Debug)]
pub(crate) struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The engine's error for a connection attempt that failed in its TLS part, if it did:
/// `Error::Tls` (not retryable) for a refused handshake or a server without TLS when
/// sslmode asks for it.
pub(crate) fn classify(e: &tokio_postgres::Error, server: &str) -> Option<Error> {
    let source = std::error::Error::source(e)?;
    if let Some(r) = source.downcast_ref::<Refused>() {
        return Some(Error::Tls(format!("TLS with PostgreSQL at {server} failed: {r}")));
    }
    // tokio-postgres's words when the server answers "no TLS" to a connection that needs it.
    if source.to_string() == "server does not support TLS" {
        return Some(Error::Tls(format!(
            "PostgreSQL at {server} does not accept TLS connections (its ssl setting is off?), and the URL's sslmode asks for \
             TLS: turn ssl on at the server, or use sslmode=prefer or disable"
        )));
    }
    None
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for Connector {
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = std::convert::Infallible;

    /// Never fails: tokio-postgres asks even when TLS will not be used (a Unix socket's empty
    /// host name), so a bad name is reported by the handshake, if there is one.
    fn make_tls_connect(&mut self, host: &str) -> std::result::Result<Connect, Self::Error> {
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} cannot name a TLS server: {e}"));
        Ok(Connect { config: self.config.clone(), name, roots: self.roots.clone() })
    }
}

pub(crate) struct Connect {
    config: Option<Arc<ClientConfig>>,
    name: std::result::Result<ServerName<'static>, String>,
    roots: Arc<str>,
}

type Handshake<S> = Pin<Box<dyn Future<Output = std::result::Result<Stream<S>, Box<dyn std::error::Error + Send + Sync>>> + Send>>;

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for Connect {
    type Stream = Stream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Handshake<S>;

    fn connect(self, socket: S) -> Handshake<S> {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| Refused("TLS is disabled (sslmode=disable)".into()))?;
            let name = self.name.map_err(Refused)?;
            match tokio_rustls::TlsConnector::from(config).connect(name, socket).await {
                Ok(s) => Ok(Stream(s)),
                Err(e) => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::InvalidCertificate(c)) => {
                        let hint = match c {
                            CertificateError::UnknownIssuer => " (no CA there signed it)",
                            _ => "",
                        };
                        Err(Refused(format!("its certificate does not verify against {}: {c}{hint}", self.roots)).into())
                    }
                    Some(rustls::Error::AlertReceived(alert)) => Err(Refused(format!(
                        "the server refused the handshake ({alert:?}): does it want a client certificate (sslcert and sslkey)?"
                    ))
                    .into()),
                    Some(other) => Err(Refused(other.to_string()).into()),
                    None => Err(e.into()),
                },
            }
        })
    }
}

/// A TLS connection to the server.
pub(crate) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    /// tls-server-end-point (RFC 5929): the hash of the server's certificate, for SCRAM's
    /// channel binding, which ties a password login to this connection (a server in the middle
    /// cannot relay it, even when sslmode checks no certificate).
    fn channel_binding(&self) -> ChannelBinding {
        let cert = self.0.get_ref().1.peer_certificates().and_then(|c| c.first());
        match cert.and_then(|c| signature_hash(c).map(|h| ring::digest::digest(h, c))) {
            Some(d) => ChannelBinding::tls_server_end_point(d.as_ref().to_vec()),
            None => ChannelBinding::none(),
        }
    }
}

/// The hash of a certificate's signature algorithm, SHA-256 for MD5 and SHA-1 (RFC 5929);
/// None for the others (RSA-PSS, EdDSA), as the server has none either.
fn signature_hash(cert: &[u8]) -> Option<&'static ring::digest::Algorithm> {
    use ring::digest::{SHA256, SHA384, SHA512};
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, ... }, ... }
    let (0x30, cert, _) = der(cert)? else { return None };
    let (_, _, rest) = der(cert)?;
    let (0x30, algorithm, _) = der(rest)? else { return None };
    let (0x06, oid, _) = der(algorithm)? else { return None };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04]; // 1.2.840.10045.4
    match (oid.strip_prefix(RSA), oid.strip_prefix(ECDSA)) {
        (Some([4 | 5 | 11]), _) | (_, Some([1] | [3, 2])) => Some(&SHA256),
        (Some([12]), _) | (_, Some([3, 3])) => Some(&SHA384),
        (Some([13]), _) | (_, Some([3, 4])) => Some(&SHA512),
        _ => None,
    }
}

/// The DER element at the start of `bytes`: its tag, its contents and what follows it.
fn der(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (first as usize, rest),
        0x81..=0x84 => {
            let (len, rest) = rest.split_at_checked((first & 0x7f) as usize)?;
            (len.iter().fold(0usize, |a, &b| a << 8 | b as usize), rest)
        }
        _ => return None,
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}
