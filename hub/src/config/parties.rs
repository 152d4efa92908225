//! Who takes part and what they may see: `[[departments]]`, `[[operators]]` and their roles,
//! `[[record_types]]` with their sharing, and `[[grants]]`.

use serde::Deserialize;
use toml::Spanned;

/// `[[departments]]`: a department system, identified by certificate CN or bearer token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    /// Stable id (kebab-case); also the client certificate's CN.
    pub id: Spanned<String>,
    /// Display name (Chinese).
    pub name: String,
    /// English name.
    #[serde(default)]
    pub name_en: Option<String>,
    /// SHA-256 (hex) of a bearer token this department may use instead of a certificate.
    #[serde(default)]
    pub token_sha256: Option<Spanned<String>>,
    /// Requests per second this department may make (sustained); over it the hub answers 429
    /// with `Retry-After`, so one runaway system cannot starve the others.
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimit>>,
}

/// A department's request budget (GCRA: `per_second` sustained, `burst` at once).
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet spell; defaults to `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Operator roles (CONTRACT.md: identity).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The city's ops team.
    Ops,
    /// The outsourced maintenance vendor: data-blind.
    Vendor,
    /// The supervision bureau.
    Auditor,
    /// The citizen portal (access log only).
    Portal,
}

impl Role {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ops => "ops",
            Role::Vendor => "vendor",
            Role::Auditor => "auditor",
            Role::Portal => "portal",
        }
    }
}

/// `[[operators]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// Stable id; also the client certificate's CN.
    pub id: Spanned<String>,
    /// Display name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 (hex) of a bearer token.
    #[serde(default)]
    pub token_sha256: Option<Spanned<String>>,
}

/// Sharing classes of the national government data-sharing rules (无条件/有条件/不予共享).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Any department may read every field, for a stated purpose.
    Unconditional,
    /// Only through grants, projected to the granted fields.
    Conditional,
    /// Only the owner; granting it is a configuration error.
    None,
}

impl Sharing {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Unconditional => "unconditional",
            Sharing::Conditional => "conditional",
            Sharing::None => "none",
        }
    }
}

/// `[[record_types]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordTypeConfig {
    /// Type id (kebab-case), used in URLs.
    pub id: Spanned<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The only department allowed to publish it.
    pub owner: Spanned<String>,
    /// Path of the JSON Schema (relative to this file), in a folder named `vN` for version N.
    pub schema: Spanned<String>,
    /// JSON pointer of the business key.
    pub key: Spanned<String>,
    /// JSON pointers (with `*` over arrays) of the resident IDs or credit codes it concerns.
    #[serde(default)]
    pub subjects: Vec<Spanned<String>>,
    /// Sharing class.
    pub sharing: Spanned<Sharing>,
}

/// `[[grants]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// Department that may read.
    pub department: Spanned<String>,
    /// Record type it may read.
    pub record_type: Spanned<String>,
    /// Purposes (kebab-case) it may state.
    pub purposes: Vec<Spanned<String>>,
    /// Field pointers it receives; everything else is removed.
    pub fields: Vec<Spanned<String>>,
    /// Last day (inclusive, hub time zone) the grant is valid.
    #[serde(default)]
    pub expires: Option<Spanned<String>>,
    /// The legal basis or agreement the grant rests on.
    #[serde(default)]
    pub basis: Option<String>,
}
