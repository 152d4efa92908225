//! Check-digit formats of Chinese identifiers, registered with the schema validator as the custom
//! formats `cn-resident-id` (GB 11643-1999) and `cn-uscc` (GB 32100-2015). No library covers
//! these, so they are written here and tested with proptest.

use chrono::{Datelike, NaiveDate, Utc};

/// ISO 7064 MOD 11-2 weights of the first 17 digits of a resident ID.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// Province-level codes of GB/T 2260, plus 71/81/82/83 used by Taiwan, Hong Kong and Macao
/// residents' permits.
const PROVINCES: [u8; 35] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63,
    64, 65, 71, 81, 82, 83,
];

/// The check character of a resident ID's first 17 digits, or `None` if they are not 17 digits.
pub fn resident_id_check(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b.iter().zip(ID_WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    Some(char::from(ID_CHECK[(sum % 11) as usize]))
}

/// A valid 18-character resident identity number: known province, real calendar date of birth not
/// in the future, and a correct check character (upper-case `X` for ten).
pub fn is_resident_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let province = (b[0] - b'0') * 10 + (b[1] - b'0');
    if !PROVINCES.contains(&province) {
        return false;
    }
    let Ok(birth) = NaiveDate::parse_from_str(&s[6..14], "%Y%m%d") else {
        return false;
    };
    // A day of slack: IDs are issued in UTC+8 and this may run in another zone.
    let latest = Utc::now().date_naive().succ_opt().unwrap_or(NaiveDate::MAX);
    if birth.year() < 1850 || birth > latest {
        return false;
    }
    resident_id_check(&s[..17]) == Some(char::from(b[17]))
}

/// The 31 characters of a unified social credit code: digits and capitals without I O S V Z.
pub const USCC_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// The check character of a credit code's first 17 characters, or `None` for a bad character.
pub fn uscc_check(first17: &str) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    let mut weight = 1u32;
    for c in first17.chars() {
        let value = USCC_ALPHABET.find(c)? as u32;
        sum += value * weight;
        weight = weight * 3 % 31;
    }
    let check = (31 - sum % 31) % 31;
    USCC_ALPHABET.chars().nth(check as usize)
}

/// A valid unified social credit code: 18 characters of the alphabet, a numeric administrative
/// area code in positions 3 to 8, and a correct check character.
pub fn is_uscc(s: &str) -> bool {
    if s.len() != 18 || !s.is_ascii() || !s.as_bytes()[2..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    uscc_check(&s[..17]).is_some_and(|c| s.ends_with(c))
}

/// The check character of an organization code's eight-character body (GB 11714-1997: digits
/// and capital letters valued 0–35, weights 3 7 9 10 5 8 4 2, modulo 11; 10 is written `X`).
pub fn org_code_check(body: &str) -> Option<char> {
    const WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    if body.len() != 8 {
        return None;
    }
    let mut sum = 0;
    for (c, w) in body.chars().zip(WEIGHTS) {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return None,
        };
        sum += v * w;
    }
    Some(match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        n => char::from_digit(n, 10)?,
    })
}

/// A valid organization code, written `XXXXXXXX-C` as on the certificate (组织机构代码证).
pub fn is_org_code(s: &str) -> bool {
    match s.split_once('-') {
        Some((body, check)) if check.len() == 1 => org_code_check(body).is_some_and(|c| check.starts_with(c)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn organization_codes_carry_their_check_character() {
        // Worked by hand from the GB 11714 weights: D2143569 → sum 13·3+2·7+1·9+4·10+3·5+5·8+6·4+9·2
        // = 199, 199 mod 11 = 1, 11 - 1 = 10 → X.
        assert_eq!(org_code_check("D2143569"), Some('X'));
        assert!(is_org_code("D2143569-X"));
        assert!(!is_org_code("D2143569-1"));
        assert!(!is_org_code("D2143569X"), "the hyphen is part of the written form");
        assert!(!is_org_code("d2143569-X"), "letters are capitals");
        // MA59XK0D: 22·3+10·7+5·9+9·10+33·5+20·8+0·4+13·2 = 622, mod 11 = 6 → 5.
        assert!(is_org_code("MA59XK0D-5"));
    }

    #[test]
    fn known_resident_ids() {
        // Computed by hand from the GB 11643 weights.
        assert!(is_resident_id("440184199003151230"));
        assert!(is_resident_id("11010519491231002X"));
        assert!(!is_resident_id("11010519491231002x"));
        assert!(!is_resident_id("440184199003151231"));
        assert!(!is_resident_id("440184199002301234"), "30 February");
        assert!(!is_resident_id("990184199003151230"), "unknown province");
        assert!(!is_resident_id("44018419900315123"));
        assert!(!is_resident_id("44018429900315123X"), "born in the future");
    }

    #[test]
    fn standard_example_has_check_three() {
        // GB 32100-2015 prints 91350100M000100Y4Z; its check character is in fact 3.
        assert_eq!(uscc_check("91350100M000100Y4"), Some('3'));
        assert!(is_uscc("91350100M000100Y43"));
        assert!(!is_uscc("91350100M000100Y4Z"));
        assert!(!is_uscc("91350100M000100O43"), "O is not in the alphabet");
        assert!(!is_uscc("913501A0M000100Y43"), "area code must be digits");
    }

    fn valid_id() -> impl Strategy<Value = String> {
        (0usize..PROVINCES.len(), 0u32..10_000, 1900i32..2020, 1u32..=365, 0u32..1000).prop_map(
            |(p, area, year, day, seq)| {
                let date = NaiveDate::from_yo_opt(year, day).unwrap();
                let first17 = format!("{:02}{:04}{}{:03}", PROVINCES[p], area, date.format("%Y%m%d"), seq);
                let check = resident_id_check(&first17).unwrap();
                format!("{first17}{check}")
            },
        )
    }

    fn valid_uscc() -> impl Strategy<Value = String> {
        (prop::collection::vec(0usize..31, 2), 0u32..1_000_000, prop::collection::vec(0usize..31, 9)).prop_map(
            |(head, area, org)| {
                let a: Vec<char> = USCC_ALPHABET.chars().collect();
                let first17: String = head.iter().map(|i| a[*i]).collect::<String>()
                    + &format!("{area:06}")
                    + &org.iter().map(|i| a[*i]).collect::<String>();
                let check = uscc_check(&first17).unwrap();
                format!("{first17}{check}")
            },
        )
    }

    proptest! {
        #[test]
        fn generated_ids_are_valid(id in valid_id()) {
            prop_assert!(is_resident_id(&id));
        }

        /// Changing any one character of a valid ID (to another digit, or X at the end) breaks it:
        /// the check character catches every single substitution.
        #[test]
        fn any_single_change_breaks_an_id(id in valid_id(), pos in 0usize..18, delta in 1u8..10) {
            let mut b = id.into_bytes();
            let old = if b[pos] == b'X' { 10 } else { b[pos] - b'0' };
            let new = (old + delta) % if pos == 17 { 11 } else { 10 };
            prop_assume!(new != old);
            b[pos] = if new == 10 { b'X' } else { b'0' + new };
            prop_assert!(!is_resident_id(std::str::from_utf8(&b).unwrap()));
        }

        #[test]
        fn generated_credit_codes_are_valid(code in valid_uscc()) {
            prop_assert!(is_uscc(&code));
        }

        #[test]
        fn any_single_change_breaks_a_credit_code(code in valid_uscc(), pos in 0usize..18, delta in 1usize..31) {
            let a: Vec<char> = USCC_ALPHABET.chars().collect();
            let mut chars: Vec<char> = code.chars().collect();
            let i = a.iter().position(|c| *c == chars[pos]).unwrap();
            chars[pos] = a[(i + delta) % 31];
            let changed: String = chars.into_iter().collect();
            prop_assert!(!is_uscc(&changed));
        }
    }
}
