//! The register of purposes (`[[purposes]]`: what a department may say it reads for, on which
//! legal basis) and the plan's online services (`[[services]]`: who runs each, which shared
//! records it reads instead of a citizen's paper copies), with the checks on both.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use toml::Spanned;

use super::{is_kebab, Config, Problem, Problems, Sharing};

/// `[[purposes]]`: one purpose, declared once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeConfig {
    /// Id (kebab-case), stated in reads, lookups, grants and subscriptions.
    pub id: Spanned<String>,
    /// What the purpose is, in words.
    #[serde(default)]
    pub name: Option<String>,
    /// The law, regulation or agreement it rests on.
    pub basis: String,
    /// The departments that may state it.
    pub departments: Vec<Spanned<String>>,
}

/// `[[services]]`: an online service of the plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Id (kebab-case).
    pub id: Spanned<String>,
    /// The service's name as the plan writes it.
    pub name: String,
    /// English name.
    #[serde(default)]
    pub name_en: Option<String>,
    /// The department that runs it.
    pub department: Spanned<String>,
    /// The record or application types the service's decisions are published as.
    #[serde(default)]
    pub produces: Vec<Spanned<String>>,
    /// The shared records it reads instead of asking the citizen for paper.
    #[serde(default)]
    pub reads: Vec<ServiceRead>,
}

/// One shared record a service reads, for one purpose, and the paper it replaces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRead {
    /// The record type read or looked up.
    pub record_type: Spanned<String>,
    /// The purpose stated (the service's department needs a grant for it, unless it owns the
    /// type or the type is shared unconditionally).
    pub purpose: Spanned<String>,
    /// The paper documents a citizen no longer brings, as the counter asked for them.
    pub replaces: Vec<String>,
}

/// Which department may state which purpose.
#[derive(Debug, Clone, Default)]
pub struct PurposeRegister {
    /// True when the config declares `[[purposes]]`; otherwise the register is what its grants,
    /// subscriptions and case steps name (an older config keeps working, and an undeclared
    /// purpose is still refused).
    pub declared: bool,
    /// Purpose id → departments that may state it.
    pub purposes: BTreeMap<String, BTreeSet<String>>,
}

impl PurposeRegister {
    /// May `department` state `purpose`? `Err(false)`: no such purpose; `Err(true)`: declared,
    /// but not for this department.
    pub fn allows(&self, purpose: &str, department: &str) -> Result<(), bool> {
        match self.purposes.get(purpose) {
            None => Err(false),
            Some(d) if d.contains(department) => Ok(()),
            Some(_) => Err(true),
        }
    }

    /// The purposes `department` may state.
    pub fn of<'a>(&'a self, department: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.purposes.iter().filter(move |(_, d)| d.contains(department)).map(|(p, _)| p.as_str())
    }
}

impl Config {
    /// Every (department, purpose) pair a grant, subscription or case step of this file states.
    fn stated_purposes(&self) -> Vec<(&Spanned<String>, &str)> {
        let mut out: Vec<(&Spanned<String>, &str)> = Vec::new();
        for g in &self.grants {
            out.extend(g.purposes.iter().map(|p| (p, g.department.get_ref().as_str())));
        }
        out.extend(self.subscriptions.iter().map(|s| (&s.purpose, s.department.get_ref().as_str())));
        for c in &self.case_types {
            out.extend(c.openers.iter().map(|o| (&c.purpose, o.get_ref().as_str())));
            for s in &c.steps {
                out.push((s.purpose.as_ref().unwrap_or(&c.purpose), s.department.get_ref().as_str()));
            }
        }
        for s in &self.services {
            out.extend(s.reads.iter().map(|r| (&r.purpose, s.department.get_ref().as_str())));
        }
        out
    }

    /// The register reads, lookups and deliveries are held to.
    pub fn purpose_register(&self) -> PurposeRegister {
        let mut purposes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if self.purposes.is_empty() {
            for (p, dept) in self.stated_purposes() {
                purposes.entry(p.get_ref().clone()).or_default().insert(dept.to_owned());
            }
            return PurposeRegister { declared: false, purposes };
        }
        for p in &self.purposes {
            purposes
                .entry(p.id.get_ref().clone())
                .or_default()
                .extend(p.departments.iter().map(|d| d.get_ref().clone()));
        }
        PurposeRegister { declared: true, purposes }
    }

    /// `[[purposes]]`: unique ids, known departments, and every purpose this file states declared
    /// for the department stating it.
    pub(super) fn check_purposes(&self, p: &mut Problems<'_>) {
        for (i, purpose) in self.purposes.iter().enumerate() {
            let id = purpose.id.get_ref();
            if !is_kebab(id) {
                p.at(purpose.id.span(), format!("purpose id {id:?} must be kebab-case"));
            }
            if self.purposes[..i].iter().any(|o| o.id.get_ref() == id) {
                p.at(purpose.id.span(), format!("purpose {id:?} is declared twice"));
            }
            if purpose.basis.trim().is_empty() {
                p.at(purpose.id.span(), format!("purpose {id:?} needs its legal basis"));
            }
            if purpose.departments.is_empty() {
                p.at(purpose.id.span(), format!("purpose {id:?} names no department that may state it"));
            }
            for d in &purpose.departments {
                if self.department(d.get_ref()).is_none() {
                    p.at(d.span(), format!("{:?} is not a department", d.get_ref()));
                }
            }
        }
        if self.purposes.is_empty() {
            return;
        }
        let register = self.purpose_register();
        for (purpose, dept) in self.stated_purposes() {
            match register.allows(purpose.get_ref(), dept) {
                Ok(()) => {}
                Err(false) => {
                    p.at(purpose.span(), format!("purpose {:?} is not declared in [[purposes]]", purpose.get_ref()))
                }
                Err(true) => p.at(
                    purpose.span(),
                    format!("purpose {:?} is not declared for {dept:?} in [[purposes]]", purpose.get_ref()),
                ),
            }
        }
    }

    /// `[[services]]`: unique ids, a department that runs each, types it produces, and reads its
    /// department is allowed to make.
    pub(super) fn check_services(&self, p: &mut Problems<'_>) {
        for (i, s) in self.services.iter().enumerate() {
            let id = s.id.get_ref();
            if !is_kebab(id) {
                p.at(s.id.span(), format!("service id {id:?} must be kebab-case"));
            }
            if self.services[..i].iter().any(|o| o.id.get_ref() == id) {
                p.at(s.id.span(), format!("service {id:?} is defined twice"));
            }
            let dept = s.department.get_ref();
            if self.department(dept).is_none() {
                p.at(s.department.span(), format!("service department {dept:?} is not a department"));
            }
            for t in &s.produces {
                let owner = self
                    .record_type(t.get_ref())
                    .map(|r| r.owner.get_ref())
                    .or_else(|| self.case_types.iter().find(|c| c.id.get_ref() == t.get_ref()).map(|_| dept));
                match owner {
                    None => p.at(t.span(), format!("{:?} is not a record type or case type", t.get_ref())),
                    Some(o) if o != dept => {
                        p.at(t.span(), format!("{:?} is published by {o:?}, not by {dept:?}", t.get_ref()))
                    }
                    Some(_) => {}
                }
            }
            for (j, r) in s.reads.iter().enumerate() {
                self.check_service_read(p, s, r);
                // Reads are counted per (department, type, purpose): two services of one
                // department sharing one would count each other's reads.
                let clash = self.services[..=i].iter().flat_map(|o| {
                    let upto = if o.id.get_ref() == id { j } else { o.reads.len() };
                    o.reads[..upto].iter().map(move |q| (o, q))
                });
                for (o, q) in clash {
                    if o.department.get_ref() == dept
                        && q.record_type.get_ref() == r.record_type.get_ref()
                        && q.purpose.get_ref() == r.purpose.get_ref()
                    {
                        p.at(
                            r.purpose.span(),
                            format!(
                                "service {:?} already reads {:?} for this purpose; give each service its own purpose",
                                o.id.get_ref(),
                                r.record_type.get_ref()
                            ),
                        );
                        break;
                    }
                }
            }
        }
    }

    fn check_service_read(&self, p: &mut Problems<'_>, s: &ServiceConfig, r: &ServiceRead) {
        let dept = s.department.get_ref();
        let purpose = r.purpose.get_ref();
        if !is_kebab(purpose) {
            p.at(r.purpose.span(), format!("purpose {purpose:?} must be kebab-case"));
        }
        if r.replaces.is_empty() || r.replaces.iter().any(|d| d.trim().is_empty()) {
            p.at(r.record_type.span(), "a service's read names the paper documents it replaces");
        }
        match self.record_type(r.record_type.get_ref()) {
            None => p.at(r.record_type.span(), format!("{:?} is not a record type", r.record_type.get_ref())),
            Some(t) if t.owner.get_ref() == dept => {}
            Some(t) if *t.sharing.get_ref() == Sharing::None => {
                p.at(r.record_type.span(), format!("{:?} is not shared (sharing = \"none\")", t.id.get_ref()))
            }
            Some(t) if *t.sharing.get_ref() == Sharing::Unconditional => {}
            Some(t) if self.has_grant(dept, t.id.get_ref(), purpose) => {}
            Some(t) => {
                p.at(r.purpose.span(), format!("{dept:?} has no grant on {:?} for purpose {purpose:?}", t.id.get_ref()))
            }
        }
    }

    /// What `hub config check` reports without failing: declared purposes nothing states, and a
    /// config without a register.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut p = Problems::new(&self.path, &self.source);
        if self.purposes.is_empty() {
            if !self.grants.is_empty() {
                p.at(
                    0..0,
                    "no [[purposes]] register: the purposes the grants, subscriptions and case steps name are the \
                     register, and any other purpose is refused",
                );
            }
        } else {
            let stated = self.stated_purposes();
            let granted: BTreeSet<&str> =
                self.grants.iter().flat_map(|g| g.purposes.iter().map(|q| q.get_ref().as_str())).collect();
            for purpose in &self.purposes {
                let id = purpose.id.get_ref().as_str();
                if !granted.contains(id) {
                    let users = stated.iter().filter(|(q, _)| q.get_ref() == id).count();
                    let why = if users == 0 {
                        "nothing states it".to_owned()
                    } else {
                        "it is stated only where no grant is needed: the owner's own records, unconditional \
                         types, case events"
                            .to_owned()
                    };
                    p.at(purpose.id.span(), format!("purpose {id:?} is used by no grant ({why})"));
                }
            }
        }
        match p.finish() {
            Ok(()) => Vec::new(),
            Err(super::ConfigError::Invalid(list)) => list,
            Err(_) => Vec::new(),
        }
    }
}
