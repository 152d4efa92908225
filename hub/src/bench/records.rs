//! The requests of each scenario: valid marriage registrations with unique keys and resident
//! IDs whose check digits are right (or, for `publish-invalid`, wrong), reads and lookups of the
//! records published before the run.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Days, NaiveDate};
use serde_json::{json, Value};

use super::Scenario;
use crate::catalog::formats::resident_id_check;

/// One request.
pub struct Request {
    /// `true`: POST `body`; `false`: GET.
    pub post: bool,
    /// Path and query.
    pub path: String,
    /// JSON body.
    pub body: Vec<u8>,
    /// The status that counts as success.
    pub expect: u16,
}

/// Makes the requests of a scenario; record `i` is the same in every run.
pub struct Generator {
    scenario: Scenario,
    next: AtomicU64,
    published: AtomicU64,
}

/// The resident ID of someone born `base + i / 1000` days, sequence `i % 1000`: unique per `i`.
fn resident_id(base: NaiveDate, i: u64, valid: bool) -> (String, String) {
    let birth = base.checked_add_days(Days::new(i / 1000 % 20_000)).unwrap_or(base);
    let first17 = format!("440184{}{:03}", birth.format("%Y%m%d"), i % 1000);
    let check = resident_id_check(&first17).unwrap_or('0');
    let check = if valid {
        check
    } else if check == '1' {
        '2'
    } else {
        '1'
    };
    (format!("{first17}{check}"), birth.format("%Y-%m-%d").to_string())
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

/// Registration number `i`: 100 years of a million registrations.
pub fn registration_no(i: u64) -> String {
    format!("J440184-{}-{:06}", 2000 + i / 1_000_000 % 100, i % 1_000_000)
}

/// Marriage `i`, about 1 KiB, as the registry office writes it.
pub fn marriage(i: u64, valid: bool) -> Value {
    let (a, a_birth) = resident_id(date(1960, 1, 1), i, valid);
    let (b, b_birth) = resident_id(date(1962, 6, 1), i, true);
    json!({
        "registration_no": registration_no(i), "kind": "marriage", "registered_on": "2026-11-20",
        "registry_office": "广州市从化区民政局婚姻登记处（街口街道河滨北路婚姻登记服务中心）",
        "parties": [
            {"id_number": a, "name": "陈志明", "sex": "male", "birth_date": a_birth, "nationality": "CHN",
             "hukou_address": "广东省广州市从化区街口街道新村路8号之三 东区二巷十二号 三楼 从化区街口街道新村社区居民委员会辖区 （原从化市街口镇新村管理区第三经济合作社）"},
            {"id_number": b, "name": "李晓红", "sex": "female", "birth_date": b_birth, "nationality": "CHN",
             "hukou_address": "广东省广州市从化区江埔街道凤院村 凤院北路一百二十三号 二座 五楼 江埔街道凤院村村民委员会辖区 （原从化市江埔镇凤院管理区第五经济合作社）"}
        ]
    })
}

impl Generator {
    /// A generator for `scenario`.
    pub fn new(scenario: Scenario) -> Self {
        Self { scenario, next: AtomicU64::new(0), published: AtomicU64::new(0) }
    }

    /// Size of one record, for the report.
    pub fn sample_len(&self) -> usize {
        serde_json::to_vec(&marriage(0, true)).map_or(0, |v| v.len())
    }

    /// The next new record (also used to preload).
    pub fn publish(&self, valid: bool) -> Request {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if valid {
            self.published.fetch_max(i + 1, Ordering::Relaxed);
        }
        Request {
            post: true,
            path: "/v1/records/marriage-registration".into(),
            body: serde_json::to_vec(&marriage(i, valid)).unwrap_or_default(),
            expect: if valid { 201 } else { 422 },
        }
    }

    /// Records known to exist.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Marks `n` records as preloaded.
    pub fn preloaded(&self, n: u64) {
        self.next.fetch_max(n, Ordering::Relaxed);
        self.published.fetch_max(n, Ordering::Relaxed);
    }

    fn pick(&self, salt: u64) -> u64 {
        // A cheap spread over the published records (no RNG state shared between workers).
        let n = self.published().max(1);
        salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
    }

    /// Request `k` of worker `w`.
    pub fn request(&self, w: usize, k: u64) -> Request {
        let salt = (w as u64) << 40 | k;
        match self.scenario {
            Scenario::Publish | Scenario::Deliver => self.publish(true),
            Scenario::PublishInvalid => self.publish(false),
            Scenario::Read => Request {
                post: false,
                path: format!(
                    "/v1/records/marriage-registration/{}?purpose=birth-service-registration",
                    registration_no(self.pick(salt))
                ),
                body: Vec::new(),
                expect: 200,
            },
            Scenario::Lookup => self.lookup(salt),
            // One worker in five publishes: the ratio holds over connections.
            Scenario::Mixed if w.is_multiple_of(5) => self.publish(true),
            Scenario::Mixed => self.lookup(salt),
        }
    }

    fn lookup(&self, salt: u64) -> Request {
        let (subject, _) = resident_id(date(1960, 1, 1), self.pick(salt), true);
        Request {
            post: true,
            path: "/v1/lookup".into(),
            body: serde_json::to_vec(&json!({"subject": subject, "purpose": "birth-service-registration"}))
                .unwrap_or_default(),
            expect: 200,
        }
    }

    /// Which principal sends the requests of worker `w`.
    pub fn principal(&self, w: usize) -> &'static str {
        match self.scenario {
            Scenario::Read | Scenario::Lookup => "family-planning",
            Scenario::Mixed if !w.is_multiple_of(5) => "family-planning",
            _ => "civil-affairs",
        }
    }
}
