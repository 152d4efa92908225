//! The hub's own secrets in the data directory: the HMAC key that turns subject identifiers into
//! searchable pseudonyms, and the Ed25519 key that signs audit checkpoints. Both files are 0600.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

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
}

/// The hub's secrets.
pub struct HubKeys {
    subject_key: Vec<u8>,
    signing: SigningKey,
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
    /// Loads the keys, creating them on first start.
    pub fn load_or_create(data: &Path) -> Result<Self, KeyError> {
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
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|_| KeyError::Invalid(sign_path.clone()))?;
            write_private(&sign_path, pem.as_bytes()).map_err(io(&sign_path))?;
            let public = key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|_| KeyError::Invalid(sign_path.clone()))?;
            let pub_path = d.join("audit-signing.pub");
            std::fs::write(&pub_path, public).map_err(io(&pub_path))?;
        }
        let pem = std::fs::read_to_string(&sign_path).map_err(io(&sign_path))?;
        let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Invalid(sign_path))?;
        Ok(Self { subject_key, signing })
    }

    /// The keyed hash of a subject identifier: searchable by whoever holds the key, meaningless
    /// to whoever reads the audit log without it.
    pub fn subject_hash(&self, subject: &str) -> String {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.subject_key) else {
            return String::new();
        };
        mac.update(subject.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Signs a checkpoint.
    pub fn checkpoint(&self, seq: u64, digest: &str, time: String) -> Checkpoint {
        use base64::Engine as _;
        let sig = self.signing.sign(checkpoint_message(seq, digest).as_bytes());
        Checkpoint {
            seq,
            digest: digest.to_owned(),
            signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
            time,
        }
    }

    /// Signs arbitrary bytes (reports) with the hub's key; base64.
    pub fn sign(&self, bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.signing.sign(bytes).to_bytes())
    }

    /// The public key in PEM, for whoever verifies a signed report.
    pub fn public_pem(&self) -> String {
        self.signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// The public half of the checkpoint key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

/// Loads the checkpoint public key (for offline verification).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|_| KeyError::Invalid(path.to_path_buf()))
}
