//! Certificates: the development PKI (a CA, a server certificate for localhost, and one client
//! certificate per department and operator, written under `DATA/pki/` with 0600 keys), and the
//! rustls server configuration that verifies client certificates against the configured CA and CRL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::Config;
use crate::ledger::keys::write_private;

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file holds no usable certificate, key or CRL.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The PKCS#12 key store could not be written.
    #[error("PKCS#12: {0}")]
    Pkcs12(String),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// `pki issue` for a name the config does not know.
    #[error("{0:?} is not a department or operator in the config")]
    UnknownName(String),
    /// A private key or secret that others than the hub's user can read.
    #[error("{path}: readable by other users (mode {mode:o}); run chmod 600 on it")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Refuses to start on a private key or secret that the group or others may read or write: a
/// key that leaked through file permissions is a key someone else may hold.
pub fn require_private(paths: impl IntoIterator<Item = PathBuf>) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    for path in paths {
        match std::fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                return Err(PkiError::Exposed { mode: m.permissions().mode() & 0o777, path })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PkiError::Io { path, source: e }),
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

/// Files of the development PKI.
pub struct DevPki {
    dir: PathBuf,
}

/// Common name of the development CA.
pub const DEV_CA_NAME: &str = "Conghua Data Exchange Hub Development CA";

impl DevPki {
    /// The PKI under `DATA/pki/`.
    pub fn new(data: &Path) -> Self {
        Self { dir: data.join("pki") }
    }

    /// `ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// `ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// `server.crt`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// `server.key`.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// `clients/NAME.crt`.
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.dir.join("clients").join(format!("{name}.crt"))
    }
    /// `clients/NAME.key`.
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.dir.join("clients").join(format!("{name}.key"))
    }

    /// `hub.crt`: the hub's own client certificate, for receivers that ask for mutual TLS.
    pub fn hub_client_cert(&self) -> PathBuf {
        self.dir.join("hub.crt")
    }
    /// `hub.key`.
    pub fn hub_client_key(&self) -> PathBuf {
        self.dir.join("hub.key")
    }

    /// `crl.pem`: used automatically by a development hub when present.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    /// `revoked.txt`: one line per revoked certificate (serial, name, time), the CRL's source.
    pub fn revoked_list(&self) -> PathBuf {
        self.dir.join("revoked.txt")
    }

    /// Creates whatever is missing: the CA, the server certificate, and a client certificate for
    /// every name given. Existing files are kept, so restarts do not invalidate issued certificates.
    pub fn ensure<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<Vec<PathBuf>, PkiError> {
        let mut created = Vec::new();
        std::fs::create_dir_all(self.dir.join("clients")).map_err(io(&self.dir))?;
        if !self.ca_cert().exists() || !self.ca_key().exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = dn(DEV_CA_NAME);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            validity(&mut params, 3650);
            let cert = params.self_signed(&key)?;
            write_private(&self.ca_key(), key.serialize_pem().as_bytes()).map_err(io(&self.ca_key()))?;
            std::fs::write(self.ca_cert(), cert.pem()).map_err(io(&self.ca_cert()))?;
            created.push(self.ca_cert());
        }
        if !self.server_cert().exists() || !self.server_key().exists() {
            let sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
            self.issue_to(
                &self.server_cert(),
                &self.server_key(),
                "localhost",
                sans,
                ExtendedKeyUsagePurpose::ServerAuth,
                825,
            )?;
            created.push(self.server_cert());
        }
        if !self.hub_client_cert().exists() || !self.hub_client_key().exists() {
            let (cert, key) = (self.hub_client_cert(), self.hub_client_key());
            self.issue_to(&cert, &key, "conghua-hub", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, 825)?;
            created.push(cert);
        }
        for name in names {
            if !self.client_cert(name).exists() || !self.client_key(name).exists() {
                self.issue_client(name, 825)?;
                created.push(self.client_cert(name));
            }
        }
        Ok(created)
    }

    /// Issues (or re-issues) a client certificate with `CN=name`, valid for `days`.
    pub fn issue_client(&self, name: &str, days: i64) -> Result<(), PkiError> {
        self.issue_to(
            &self.client_cert(name),
            &self.client_key(name),
            name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            days,
        )
    }

    /// Where [`DevPki::write_pkcs12`] puts the key store of `name`.
    pub fn client_pkcs12(&self, name: &str) -> PathBuf {
        self.dir.join("clients").join(format!("{name}.p12"))
    }

    /// Writes the client key, its certificate and the CA as one PKCS#12 key store (0600), for
    /// clients that take no PEM (Java's `KeyStore`, Windows). PBES2 with AES-256 and an
    /// HMAC-SHA-256 MAC: what OpenSSL 3 and Java 11+ write and read by default, unlike the 3DES
    /// and RC2 of old stores.
    pub fn write_pkcs12(&self, name: &str, password: &str) -> Result<PathBuf, PkiError> {
        use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKeyChain};
        use sha2::Digest;
        let p12 = |e: p12_keystore::error::Error| PkiError::Pkcs12(e.to_string());
        let (cert_path, key_path) = (self.client_cert(name), self.client_key(name));
        let der = |path: &Path| -> Result<Vec<u8>, PkiError> {
            let pem = std::fs::read(path).map_err(io(path))?;
            Ok(CertificateDer::from_pem_slice(&pem).map_err(|e| pem_err(path, e))?.to_vec())
        };
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        // rcgen's serialized key is PKCS#8, which is what a key bag holds.
        let key = KeyPair::from_pem(&key_pem)?.serialize_der();
        let chain = [der(&cert_path)?, der(&self.ca_cert())?]
            .iter()
            .map(|d| Certificate::from_der(d).map_err(p12))
            .collect::<Result<Vec<_>, _>>()?;
        let mut store = KeyStore::new();
        // The local key id ties the key bag to its certificate; a digest of the certificate is
        // what keytool and OpenSSL use.
        let id = sha2::Sha256::digest(chain[0].as_der()).to_vec();
        store.add_entry(name, KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(key, id, chain)));
        let bytes = store.writer(password).write().map_err(p12)?;
        let path = self.client_pkcs12(name);
        write_private(&path, &bytes).map_err(io(&path))?;
        Ok(path)
    }

    /// Revokes the current client certificate of `name` and re-signs `crl.pem` with every
    /// certificate revoked so far. A running hub reads the CRL at start.
    pub fn revoke(&self, name: &str) -> Result<(), PkiError> {
        let cert_path = self.client_cert(name);
        let pem = std::fs::read(&cert_path).map_err(io(&cert_path))?;
        let der = CertificateDer::from_pem_slice(&pem).map_err(|e| pem_err(&cert_path, e))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| pem_err(&cert_path, e))?;
        let serial = hex::encode(cert.raw_serial());
        let list_path = self.revoked_list();
        let mut list = std::fs::read_to_string(&list_path).unwrap_or_default();
        if !list.lines().any(|l| l.split_whitespace().next() == Some(serial.as_str())) {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            list.push_str(&format!("{serial} {name} {now}\n"));
        }
        let mut revoked = Vec::new();
        for line in list.lines() {
            let mut parts = line.split_whitespace();
            let (Some(serial), Some(_), Some(at)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let (Ok(bytes), Ok(at)) = (hex::decode(serial), at.parse::<i64>()) else { continue };
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: time::OffsetDateTime::from_unix_timestamp(at)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            });
        }
        let ca_pem = std::fs::read_to_string(self.ca_cert()).map_err(io(&self.ca_cert()))?;
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(self.ca_key()).map_err(io(&self.ca_key()))?)?;
        let ca = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
        let now = time::OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(30),
            crl_number: SerialNumber::from(revoked.len() as u64),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca, &ca_key)?;
        std::fs::write(&list_path, list).map_err(io(&list_path))?;
        std::fs::write(self.crl(), crl.pem()?).map_err(io(&self.crl()))?;
        Ok(())
    }

    fn issue_to(
        &self,
        cert_path: &Path,
        key_path: &Path,
        cn: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        days: i64,
    ) -> Result<(), PkiError> {
        let ca_pem = std::fs::read_to_string(self.ca_cert()).map_err(io(&self.ca_cert()))?;
        let ca_key_pem = std::fs::read_to_string(self.ca_key()).map_err(io(&self.ca_key()))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)?;
        // rcgen signs with an issuer `Certificate`; rebuilding it from the stored CA keeps the same
        // subject and key, which is all a child certificate refers to.
        let ca = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = dn(cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        write_private(key_path, key.serialize_pem().as_bytes()).map_err(io(key_path))?;
        std::fs::write(cert_path, cert.pem()).map_err(io(cert_path))?;
        Ok(())
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Conghua Data Exchange Hub");
    dn
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

/// Where the server's certificates come from for a config and data directory.
pub struct TlsFiles {
    /// CA that signs client certificates.
    pub ca: PathBuf,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
    /// Optional CRL.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// The configured files, or the development PKI's (whose `crl.pem` is used when present).
    pub fn of(config: &Config, data: &Path) -> Self {
        let dev = DevPki::new(data);
        let pick = |v: &Option<toml::Spanned<String>>, dev_path: PathBuf| {
            v.as_ref().map_or(dev_path, |p| config.resolve(p.get_ref()))
        };
        Self {
            ca: pick(&config.tls.ca, dev.ca_cert()),
            cert: pick(&config.tls.cert, dev.server_cert()),
            key: pick(&config.tls.key, dev.server_key()),
            crl: match &config.tls.crl {
                Some(p) => Some(config.resolve(p.get_ref())),
                None => Some(dev.crl()).filter(|p| config.tls.dev_pki && p.exists()),
            },
        }
    }
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> PkiError {
    PkiError::Pem { path: path.to_path_buf(), message: e.to_string() }
}

/// The rustls server configuration: TLS 1.2 and 1.3 only, ring crypto, client certificates
/// verified against the CA (and CRL) when presented. Presenting none is allowed at this layer so
/// bearer tokens can work; the API answers 401 to callers with neither.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem_err(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(&files.cert, e))?;
    if chain.is_empty() {
        return Err(pem_err(&files.cert, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_err(&files.key, e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| pem_err(&files.ca, e))? {
        roots.add(ca.map_err(|e| pem_err(&files.ca, e))?).map_err(|e| pem_err(&files.ca, e))?;
    }
    if roots.is_empty() {
        return Err(pem_err(&files.ca, "no CA certificate found"));
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).allow_unauthenticated();
    if let Some(crl_path) = &files.crl {
        let bytes = std::fs::read(crl_path).map_err(io(crl_path))?;
        let crls = if bytes.starts_with(b"-----") {
            CertificateRevocationListDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err(crl_path, e))?
        } else {
            vec![CertificateRevocationListDer::from(bytes)]
        };
        verifier = verifier.with_crls(crls);
    }
    let verifier = verifier.build().map_err(|e| PkiError::Tls(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The subject CN of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}
