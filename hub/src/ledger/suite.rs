//! The crypto suite a chain is sealed with: the hash of its entries, the keyed hash of subjects and
//! the signature of checkpoints and reports. One seam, so the national suite (SM3 hashes, GB/T
//! 32905; SM2 signatures, GB/T 32918) and the international one never mix within a chain.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sm3::Sm3;

/// The distinguishing identifier SM2 signatures are made and checked with: GM/T 0009's default,
/// which every SM2 library (GmSSL, Tongsuo, BouncyCastle, OpenSSL's `distid`) assumes when none is
/// given, so a verifier elsewhere needs no setting.
pub const SM2_DISTID: &str = "1234567812345678";

/// A crypto suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Suite {
    /// SHA-256 chain and HMAC-SHA-256 subject hashes, Ed25519 signatures: what every chain made
    /// before suites existed was sealed with.
    #[default]
    #[serde(rename = "sha256-ed25519")]
    Sha256Ed25519,
    /// SM3 chain and HMAC-SM3 subject hashes, SM2 signatures (with SM3, ID `SM2_DISTID`).
    #[serde(rename = "sm3-sm2")]
    Sm3Sm2,
}

/// A suite name nobody knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown crypto suite {0:?}: use \"sha256-ed25519\" or \"sm3-sm2\"")]
pub struct UnknownSuite(pub String);

impl Suite {
    /// Every suite.
    pub const ALL: [Suite; 2] = [Suite::Sha256Ed25519, Suite::Sm3Sm2];

    /// Config and stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Suite::Sha256Ed25519 => "sha256-ed25519",
            Suite::Sm3Sm2 => "sm3-sm2",
        }
    }

    /// The signature algorithm, as reports name it for whoever verifies them elsewhere.
    pub fn signature_algorithm(self) -> &'static str {
        match self {
            Suite::Sha256Ed25519 => "Ed25519",
            Suite::Sm3Sm2 => "SM2 with SM3 (GB/T 32918.2), ID 1234567812345678, r||s",
        }
    }

    /// The chain hash of `bytes`, lowercase hex (64 characters for both suites, so the genesis
    /// digest and the stored columns are the same).
    pub fn hash_hex(self, bytes: &[u8]) -> String {
        match self {
            Suite::Sha256Ed25519 => hex::encode(Sha256::digest(bytes)),
            Suite::Sm3Sm2 => hex::encode(Sm3::digest(bytes)),
        }
    }

    /// The keyed hash (HMAC) of `bytes` under `key`, lowercase hex.
    pub fn keyed_hash_hex(self, key: &[u8], bytes: &[u8]) -> String {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        match self {
            Suite::Sha256Ed25519 => {
                Hmac::<Sha256>::new_from_slice(key).map(|m| hex::encode(m.chain_update(bytes).finalize().into_bytes()))
            }
            Suite::Sm3Sm2 => {
                Hmac::<Sm3>::new_from_slice(key).map(|m| hex::encode(m.chain_update(bytes).finalize().into_bytes()))
            }
        }
        .unwrap_or_default()
    }
}

/// A stored suite column: NULL on rows written before suites existed.
pub fn stored(value: Option<String>) -> Result<Option<Suite>, UnknownSuite> {
    value.map(|s| s.parse()).transpose()
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Suite {
    type Err = UnknownSuite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| UnknownSuite(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GB/T 32905-2016, appendix A: examples 1 and 2.
    #[test]
    fn sm3_matches_the_standards_examples() {
        assert_eq!(Suite::Sm3Sm2.hash_hex(b"abc"), "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0");
        assert_eq!(
            Suite::Sm3Sm2.hash_hex("abcd".repeat(16).as_bytes()),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    // FIPS 180-2, appendix B.1.
    #[test]
    fn sha256_matches_fips_180() {
        assert_eq!(
            Suite::Sha256Ed25519.hash_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    // RFC 4231 test case 2 for HMAC-SHA-256. For HMAC-SM3 there is no national example; the
    // expected value is OpenSSL's (`printf 'what do ya want for nothing?' | openssl dgst -sm3
    // -hmac Jefe`), an implementation independent of RustCrypto's.
    #[test]
    fn keyed_hashes_match_independent_implementations() {
        let msg = b"what do ya want for nothing?";
        assert_eq!(
            Suite::Sha256Ed25519.keyed_hash_hex(b"Jefe", msg),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(Suite::Sm3Sm2.keyed_hash_hex(b"Jefe", msg), HMAC_SM3_JEFE);
    }

    const HMAC_SM3_JEFE: &str = "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882";

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in Suite::ALL {
            assert_eq!(s.as_str().parse::<Suite>(), Ok(s));
        }
        assert!("sha1-dsa".parse::<Suite>().unwrap_err().to_string().contains("sm3-sm2"));
    }
}
