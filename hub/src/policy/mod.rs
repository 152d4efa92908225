//! Who may do what: principals (departments and operators, from certificate CN or bearer token)
//! and the read policy (grants per purpose, projected fields, sharing classes). Policy answers
//! questions; it performs no I/O and knows nothing of storage.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::catalog::pointer::FieldPointer;
use crate::catalog::RecordType;
use crate::config::{Config, Role, Sharing};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A department system.
    Department(String),
    /// An operator with a role.
    Operator(String, Role),
}

impl Principal {
    /// The id (certificate CN).
    pub fn id(&self) -> &str {
        match self {
            Principal::Department(id) | Principal::Operator(id, _) => id,
        }
    }

    /// `department` or the operator's role.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Department(_) => "department",
            Principal::Operator(_, r) => r.as_str(),
        }
    }

    /// The role, for operators.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Department(_) => None,
            Principal::Operator(_, r) => Some(*r),
        }
    }
}

/// Principals known to the config, by certificate CN and by token digest.
pub struct Directory {
    by_id: HashMap<String, Principal>,
    by_token: HashMap<[u8; 32], Principal>,
}

impl Directory {
    /// Builds the directory from a checked config.
    pub fn new(config: &Config) -> Self {
        let mut by_id = HashMap::new();
        let mut by_token = HashMap::new();
        for d in &config.departments {
            let p = Principal::Department(d.id.get_ref().clone());
            if let Some(t) = &d.token_sha256 {
                if let Some(digest) = decode_digest(t.get_ref()) {
                    by_token.insert(digest, p.clone());
                }
            }
            by_id.insert(d.id.get_ref().clone(), p);
        }
        for o in &config.operators {
            let p = Principal::Operator(o.id.get_ref().clone(), o.role);
            if let Some(t) = &o.token_sha256 {
                if let Some(digest) = decode_digest(t.get_ref()) {
                    by_token.insert(digest, p.clone());
                }
            }
            by_id.insert(o.id.get_ref().clone(), p);
        }
        Self { by_id, by_token }
    }

    /// The principal named by a verified client certificate's CN.
    pub fn by_common_name(&self, cn: &str) -> Option<&Principal> {
        self.by_id.get(cn)
    }

    /// The principal whose configured digest matches this bearer token. The map is keyed by the
    /// digest, so the comparison never touches the token itself.
    pub fn by_token(&self, token: &str) -> Option<&Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_token.get(&digest)
    }

    /// Every principal id (for the development PKI).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }
}

fn decode_digest(hex_text: &str) -> Option<[u8; 32]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

/// What a permitted reader receives.
#[derive(Debug, Clone)]
pub enum Access {
    /// The whole record (the owner, or an unconditionally shared type).
    Full,
    /// Only these fields.
    Fields(Arc<[FieldPointer]>),
}

/// Why a read was refused; the text goes into the audit entry and the 403 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Non-owners must state a purpose.
    #[error("a purpose is required to read another department's records")]
    PurposeRequired,
    /// The purpose is not in the hub's register.
    #[error("this purpose is not declared in the hub's purposes register (GET /v1/catalog lists the purposes you may state)")]
    UndeclaredPurpose,
    /// The purpose is declared for other departments only.
    #[error("this department may not state this purpose (GET /v1/catalog lists the purposes you may state)")]
    PurposeNotYours,
    /// Sharing class `none`.
    #[error("this record type is not shared")]
    NotShared,
    /// No grant for this department, type and purpose.
    #[error("no grant allows this department to read this record type for this purpose")]
    NoGrant,
    /// The grant has expired.
    #[error("the grant for this purpose has expired")]
    Expired,
    /// Operators do not read records.
    #[error("only departments read records")]
    NotADepartment,
}

/// One grant, compiled.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Reader.
    pub department: String,
    /// Type read.
    pub record_type: String,
    /// Purposes it may state.
    pub purposes: Vec<String>,
    /// Fields it receives.
    pub fields: Arc<[FieldPointer]>,
    /// Last valid day.
    pub expires: Option<NaiveDate>,
    /// Legal basis.
    pub basis: Option<String>,
}

/// The read policy.
pub struct Policy {
    grants: Vec<Grant>,
    purposes: crate::config::PurposeRegister,
}

impl Policy {
    /// Compiles the grants of a checked config.
    pub fn new(config: &Config) -> Self {
        let grants = config
            .grants
            .iter()
            .map(|g| Grant {
                department: g.department.get_ref().clone(),
                record_type: g.record_type.get_ref().clone(),
                purposes: g.purposes.iter().map(|p| p.get_ref().clone()).collect(),
                fields: g.fields.iter().filter_map(|f| FieldPointer::parse(f.get_ref()).ok()).collect(),
                expires: g.expires.as_ref().and_then(|e| NaiveDate::parse_from_str(e.get_ref(), "%Y-%m-%d").ok()),
                basis: g.basis.clone(),
            })
            .collect();
        Self { grants, purposes: config.purpose_register() }
    }

    /// May `department` state `purpose` at all (whatever it reads)?
    pub fn may_state(&self, department: &str, purpose: &str) -> Result<(), Denied> {
        self.purposes.allows(purpose, department).map_err(|declared| {
            if declared {
                Denied::PurposeNotYours
            } else {
                Denied::UndeclaredPurpose
            }
        })
    }

    /// The purposes `department` may state.
    pub fn purposes_of<'a>(&'a self, department: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.purposes.of(department)
    }

    /// May `who` read records of `t` for `purpose` on `today`, and which fields?
    pub fn read_access(
        &self,
        t: &RecordType,
        who: &Principal,
        purpose: Option<&str>,
        today: NaiveDate,
    ) -> Result<Access, Denied> {
        let Principal::Department(dept) = who else {
            return Err(Denied::NotADepartment);
        };
        if *dept == t.owner {
            return Ok(Access::Full);
        }
        let Some(purpose) = purpose else {
            return Err(Denied::PurposeRequired);
        };
        // Unconditional sharing still needs a declared purpose: "any purpose" would make the
        // access log say nothing.
        self.may_state(dept, purpose)?;
        match t.sharing {
            Sharing::None => Err(Denied::NotShared),
            Sharing::Unconditional => Ok(Access::Full),
            Sharing::Conditional => {
                let mut expired = false;
                for g in self.grants.iter().filter(|g| g.department == *dept && g.record_type == t.id) {
                    if g.purposes.iter().any(|p| p == purpose) {
                        if g.expires.is_some_and(|e| today > e) {
                            expired = true;
                        } else {
                            return Ok(Access::Fields(g.fields.clone()));
                        }
                    }
                }
                Err(if expired { Denied::Expired } else { Denied::NoGrant })
            }
        }
    }

    /// The grants a department holds (for its catalogue view).
    pub fn grants_of<'a>(&'a self, department: &'a str) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants.iter().filter(move |g| g.department == department)
    }
}
