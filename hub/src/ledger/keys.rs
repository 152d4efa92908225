//! The hub's own secrets in the data directory: the key that turns subject identifiers into
//! searchable pseudonyms, and the key that signs audit checkpoints and reports, of the data's
//! crypto suite (an Ed25519 or an SM2 key in PKCS#8: the file says which). Both files are 0600.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer as _;

use super::suite::{Suite, SM2_DISTID};
use super::{checkpoint_message, Checkpoint};

/// Key-file problems.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key file exists but does not hold a key.
    #[error("key file {0} is not a valid key")]
    Invalid(PathBuf),
    /// The signing key belongs to another suite than the one configured.
    #[error(
        "key file {path} is a key of the {found} suite, but [audit] suite = \"{configured}\": a data directory keeps \
         the suite it was made with (set suite = \"{found}\", or start on a new data directory)"
    )]
    Suite {
        /// The file.
        path: PathBuf,
        /// The suite of the key in it.
        found: Suite,
        /// The suite the config asks for.
        configured: Suite,
    },
}

/// The hub's secrets.
pub struct HubKeys {
    subject_key: Vec<u8>,
    signing: SigningKey,
}

/// A signing key of either suite.
enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    Sm2(sm2::dsa::SigningKey),
}

/// The public half of the checkpoint key, of either suite: what offline verification needs.
#[derive(Debug, Clone)]
pub enum PublicKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// SM2 (with the distinguishing identifier `SM2_DISTID`).
    Sm2(Box<sm2::dsa::VerifyingKey>),
}

impl PublicKey {
    /// Reads an SPKI PEM of either algorithm.
    pub fn from_pem(pem: &str) -> Option<Self> {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Some(PublicKey::Ed25519(k));
        }
        let k = sm2::PublicKey::from_public_key_pem(pem).ok()?;
        sm2::dsa::VerifyingKey::new(SM2_DISTID, k).ok().map(|k| PublicKey::Sm2(Box::new(k)))
    }

    /// The SPKI PEM.
    pub fn to_pem(&self) -> String {
        match self {
            PublicKey::Ed25519(k) => k.to_public_key_pem(LineEnding::LF).unwrap_or_default(),
            PublicKey::Sm2(k) => sm2::PublicKey::from(k.as_ref()).to_public_key_pem(LineEnding::LF).unwrap_or_default(),
        }
    }

    /// The suite the key signs for.
    pub fn suite(&self) -> Suite {
        match self {
            PublicKey::Ed25519(_) => Suite::Sha256Ed25519,
            PublicKey::Sm2(_) => Suite::Sm3Sm2,
        }
    }

    /// Whether `signature` (base64, as the hub writes it) signs `message`. Ed25519 is checked
    /// strictly (no small-order keys, canonical S).
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        use base64::Engine as _;
        use sm2::dsa::signature::Verifier as _;
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        match self {
            PublicKey::Ed25519(k) => {
                ed25519_dalek::Signature::from_slice(&bytes).is_ok_and(|sig| k.verify_strict(message, &sig).is_ok())
            }
            PublicKey::Sm2(k) => {
                sm2::dsa::Signature::from_slice(&bytes).is_ok_and(|sig| k.verify(message, &sig).is_ok())
            }
        }
    }
}

impl SigningKey {
    fn generate(suite: Suite) -> Self {
        match suite {
            Suite::Sha256Ed25519 => SigningKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)),
            Suite::Sm3Sm2 => loop {
                // SM2 refuses one secret of the ~2^256 (d = n - 1: 1 + d has no inverse), so this
                // loop turns again all but never.
                let secret = sm2::SecretKey::random(&mut rand::rngs::OsRng);
                if let Ok(k) = sm2::dsa::SigningKey::new(SM2_DISTID, &secret) {
                    break SigningKey::Sm2(k);
                }
            },
        }
    }

    fn from_pem(pem: &str) -> Option<Self> {
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Some(SigningKey::Ed25519(k));
        }
        let secret = sm2::SecretKey::from_pkcs8_pem(pem).ok()?;
        sm2::dsa::SigningKey::new(SM2_DISTID, &secret).ok().map(SigningKey::Sm2)
    }

    fn to_pem(&self) -> Option<String> {
        let pem = match self {
            SigningKey::Ed25519(k) => k.to_pkcs8_pem(LineEnding::LF).ok()?,
            SigningKey::Sm2(k) => sm2::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_pem(LineEnding::LF).ok()?,
        };
        Some(pem.to_string())
    }

    fn public(&self) -> PublicKey {
        match self {
            SigningKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
            SigningKey::Sm2(k) => PublicKey::Sm2(Box::new(k.verifying_key().clone())),
        }
    }

    fn suite(&self) -> Suite {
        match self {
            SigningKey::Ed25519(_) => Suite::Sha256Ed25519,
            SigningKey::Sm2(_) => Suite::Sm3Sm2,
        }
    }

    /// Raw signature bytes: Ed25519's 64, or SM2's r||s (32 + 32, big-endian).
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
            SigningKey::Sm2(k) => sm2::dsa::signature::Signer::<sm2::dsa::Signature>::sign(k, message).to_vec(),
        }
    }
}

/// Folder of the key files inside the data directory.
pub fn dir(data: &Path) -> PathBuf {
    data.join("keys")
}

/// Writes a file readable by its owner only, atomically (temp file + fsync + rename).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl HubKeys {
    /// Loads the keys, creating them for `suite` on first start; refuses a signing key of
    /// another suite.
    pub fn load_or_create(data: &Path, suite: Suite) -> Result<Self, KeyError> {
        let d = dir(data);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        std::fs::create_dir_all(&d).map_err(io(&d))?;
        let hmac_path = d.join("subject-hmac.key");
        if !hmac_path.exists() {
            let mut k = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
            write_private(&hmac_path, hex::encode(k).as_bytes()).map_err(io(&hmac_path))?;
        }
        let text = std::fs::read_to_string(&hmac_path).map_err(io(&hmac_path))?;
        let subject_key = hex::decode(text.trim()).map_err(|_| KeyError::Invalid(hmac_path.clone()))?;
        if subject_key.len() < 32 {
            return Err(KeyError::Invalid(hmac_path));
        }

        let sign_path = d.join("audit-signing.key");
        if !sign_path.exists() {
            let key = SigningKey::generate(suite);
            let pem = key.to_pem().ok_or_else(|| KeyError::Invalid(sign_path.clone()))?;
            write_private(&sign_path, pem.as_bytes()).map_err(io(&sign_path))?;
            let pub_path = d.join("audit-signing.pub");
            std::fs::write(&pub_path, key.public().to_pem()).map_err(io(&pub_path))?;
        }
        let pem = std::fs::read_to_string(&sign_path).map_err(io(&sign_path))?;
        let signing = SigningKey::from_pem(&pem).ok_or_else(|| KeyError::Invalid(sign_path.clone()))?;
        if signing.suite() != suite {
            return Err(KeyError::Suite { path: sign_path, found: signing.suite(), configured: suite });
        }
        Ok(Self { subject_key, signing })
    }

    /// The suite the keys are of.
    pub fn suite(&self) -> Suite {
        self.signing.suite()
    }

    /// The keyed hash of a subject identifier: searchable by whoever holds the key, meaningless
    /// to whoever reads the audit log without it.
    pub fn subject_hash(&self, subject: &str) -> String {
        self.suite().keyed_hash_hex(&self.subject_key, subject.as_bytes())
    }

    /// Signs a checkpoint.
    pub fn checkpoint(&self, seq: u64, digest: &str, time: String) -> Checkpoint {
        let suite = self.suite();
        let signature = self.sign(checkpoint_message(Some(suite), seq, digest).as_bytes());
        Checkpoint { seq, digest: digest.to_owned(), signature, time, suite: Some(suite) }
    }

    /// Signs arbitrary bytes (reports) with the hub's key; base64.
    pub fn sign(&self, bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.signing.sign(bytes))
    }

    /// The public key in PEM, for whoever verifies a signed report.
    pub fn public_pem(&self) -> String {
        self.signing.public().to_pem()
    }

    /// The public half of the checkpoint key.
    pub fn public_key(&self) -> PublicKey {
        self.signing.public()
    }
}

/// Loads the checkpoint public key (for offline verification); its algorithm names the suite.
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    PublicKey::from_pem(&pem).ok_or_else(|| KeyError::Invalid(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // GB/T 32918.5-2017 (GM/T 0003.5-2012), appendix A: the signature example on the recommended
    // curve, message "message digest", ID 1234567812345678.
    const PRIVATE: &str = "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8";
    const PUBLIC_X: &str = "09f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020";
    const PUBLIC_Y: &str = "ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13";
    const R: &str = "f5a03b0648d2c4630eeac513e1bb81a15944da3827d5b74143ac7eaceee720b3";
    const S: &str = "b1b6aa29df212fd8763182bc0d421ca1bb9038fd1f7f42d4840b69c485bbc1aa";

    fn b64(hex_text: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_text).unwrap())
    }

    #[test]
    fn sm2_matches_the_standards_signature_example() {
        let signing = sm2::dsa::SigningKey::from_slice(SM2_DISTID, &hex::decode(PRIVATE).unwrap()).unwrap();
        let sec1 = signing.verifying_key().to_sec1_bytes();
        assert_eq!(hex::encode(&sec1[..]), format!("04{PUBLIC_X}{PUBLIC_Y}"), "the example's public key");

        let public = PublicKey::Sm2(Box::new(signing.verifying_key().clone()));
        let signature = b64(&format!("{R}{S}"));
        assert!(public.verify(b"message digest", &signature), "the example's signature verifies");
        assert!(!public.verify(b"message digesT", &signature));
        assert!(!public.verify(b"message digest", &b64(&format!("{S}{R}"))));

        // What this key signs, the example's public key verifies (through the PEM files the hub writes).
        let ours = SigningKey::Sm2(signing);
        let pem = ours.public().to_pem();
        let read = PublicKey::from_pem(&pem).unwrap();
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::STANDARD.encode(ours.sign(b"message digest"));
        assert!(read.verify(b"message digest", &sig));
        assert_eq!(read.suite(), Suite::Sm3Sm2);
    }

    // RFC 8032, section 7.1, test 2.
    #[test]
    fn ed25519_matches_rfc_8032() {
        let secret: [u8; 32] = hex::decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
            .unwrap()
            .try_into()
            .unwrap();
        let key = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&secret));
        assert_eq!(
            hex::encode(key.sign(&[0x72])),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        );
    }

    #[test]
    fn a_key_of_another_suite_is_refused_with_both_names() {
        let dir = tempfile::tempdir().unwrap();
        let made = HubKeys::load_or_create(dir.path(), Suite::Sm3Sm2).unwrap();
        assert_eq!(made.suite(), Suite::Sm3Sm2);
        assert!(std::fs::read_to_string(dir.path().join("keys/audit-signing.pub")).unwrap().contains("PUBLIC KEY"));
        let again = HubKeys::load_or_create(dir.path(), Suite::Sm3Sm2).unwrap();
        assert_eq!(again.public_pem(), made.public_pem(), "the key is kept");
        assert_eq!(again.subject_hash("110101199003074514"), made.subject_hash("110101199003074514"));

        let err = HubKeys::load_or_create(dir.path(), Suite::Sha256Ed25519).err().unwrap().to_string();
        assert!(
            err.contains("sm3-sm2") && err.contains("sha256-ed25519") && err.contains("audit-signing.key"),
            "{err}"
        );
    }

    #[test]
    fn subject_hashes_differ_between_suites() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ed = HubKeys::load_or_create(a.path(), Suite::Sha256Ed25519).unwrap();
        std::fs::create_dir_all(b.path().join("keys")).unwrap();
        std::fs::copy(a.path().join("keys/subject-hmac.key"), b.path().join("keys/subject-hmac.key")).unwrap();
        let sm = HubKeys::load_or_create(b.path(), Suite::Sm3Sm2).unwrap();
        assert_ne!(ed.subject_hash("x"), sm.subject_hash("x"), "same key, other hash function");
        assert_eq!(sm.subject_hash("x").len(), 64);
    }
}
