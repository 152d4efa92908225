//! Masking of personal identifiers. Resident ID numbers must never reach a log line, a metric
//! label or an error body in clear; this module is the one place that knows what they look like.

/// Masks an 18-character resident ID as `4401**********123X`: the province and city stay visible
/// for operators, the birth date and serial do not.
pub fn resident_id(id: &str) -> String {
    if id.len() == 18 && id.is_ascii() {
        format!("{}**********{}", &id[..4], &id[14..])
    } else {
        "****".to_owned()
    }
}

/// Masks every run of 17 digits followed by a digit or X in free text (an ID quoted in an error
/// message, a log line, a path). Shorter digit runs are left alone: counts and years stay readable.
pub fn scrub(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let run = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let id_like = run == 18 || (run == 17 && matches!(b.get(i + 17), Some(b'X' | b'x')));
            let end = i + 18;
            let bounded = b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric());
            if id_like && bounded {
                out.push_str(&text[copied..i]);
                out.push_str(&resident_id(&text[i..end]));
                i = end;
                copied = end;
                continue;
            }
            i += run;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_ids_in_text() {
        assert_eq!(resident_id("11010519491231002X"), "1101**********002X");
        assert_eq!(
            scrub("id 440184199003151230 and 11010519491231002X, not 2026 or 1234567890123456789"),
            "id 4401**********1230 and 1101**********002X, not 2026 or 1234567890123456789"
        );
        assert_eq!(scrub("/parties/0/id_number"), "/parties/0/id_number");
        assert_eq!(scrub("中文440184199003151230中文"), "中文4401**********1230中文");
    }
}
