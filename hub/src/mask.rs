//! Masking of personal identifiers. Resident ID numbers, unified social credit codes and
//! people's names must never reach a log line, a metric label, an error body or anything the
//! maintenance vendor reads in clear; this module is the one place that knows what they look like.

/// Masks an 18-character resident ID as `4401**********123X`: the province and city stay visible
/// for operators, the birth date and serial do not.
pub fn resident_id(id: &str) -> String {
    if id.len() == 18 && id.is_ascii() {
        format!("{}**********{}", &id[..4], &id[14..])
    } else {
        "****".to_owned()
    }
}

/// Masks a unified social credit code as `91440184**********`: the registration authority, the
/// kind of organisation and the region stay visible, the organisation code does not.
pub fn credit_code(code: &str) -> String {
    match code.get(..8) {
        Some(head) if code.len() == 18 => format!("{head}**********"),
        _ => "****".to_owned(),
    }
}

/// Masks identifiers and names in free text (an error message, a log line, a path, a receiver's
/// answer quoted in a dead-letter reason): resident IDs (17 digits and a digit or X), unified
/// social credit codes (18 characters whose check character is right, so hashes and tokens are
/// left alone) and Chinese personal names standing on their own (see [`names`]). Shorter digit
/// runs are left alone: counts and years stay readable.
pub fn scrub(text: &str) -> String {
    names(&credit_codes(&resident_ids(text)))
}

/// Masks a request path: percent-decoded first, so that an ID or a name sent encoded (a browser
/// or client encodes every Chinese character) is found, and logged decoded, as an operator would
/// read it anyway. Decoded control characters (`%0A`) become U+FFFD, so a path cannot forge a
/// line in a human-format log.
pub fn scrub_path(path: &str) -> String {
    let decoded: String = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    scrub(&decoded)
}

fn resident_ids(text: &str) -> String {
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

/// Every 18-character token of the credit code alphabet (GB 32100) whose check character is
/// right, bounded by non-alphanumerics.
fn credit_codes(text: &str) -> String {
    let b = text.as_bytes();
    let (mut out, mut copied, mut i) = (String::with_capacity(text.len()), 0, 0);
    while i < b.len() {
        if b[i].is_ascii_alphanumeric() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let run = b[i..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
            if run == 18 && crate::catalog::formats::is_uscc(&text[i..i + 18]) {
                out.push_str(&text[copied..i]);
                out.push_str(&credit_code(&text[i..i + 18]));
                copied = i + 18;
            }
            i += run;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// The commonest single-character surnames (together over 85 % of the population) and the
/// compound ones still in use.
const SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵钱严覃武戴莫孔汤岑麦植温骆欧伍";
const COMPOUND_SURNAMES: [&str; 10] = ["欧阳", "司马", "诸葛", "上官", "东方", "令狐", "皇甫", "尉迟", "公孙", "慕容"];

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' | '\u{f900}'..='\u{faff}')
}

/// Masks a run of two to three Chinese characters (four with a compound surname) that starts
/// with a surname and stands on its own (a JSON string, a word between spaces or punctuation) as
/// the surname and stars: `陈**`. A name inside a longer Chinese sentence cannot be told from the
/// words around it without a dictionary and is left; department names are longer and stay.
fn names(text: &str) -> String {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let (mut out, mut copied, mut i) = (String::with_capacity(text.len()), 0, 0);
    while i < chars.len() {
        if !is_cjk(chars[i].1) {
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|(_, c)| is_cjk(*c)).count();
        let start = chars[i].0;
        let end = chars.get(i + run).map_or(text.len(), |(at, _)| *at);
        let word = &text[start..end];
        let compound = COMPOUND_SURNAMES.iter().any(|s| word.starts_with(s));
        let name_like =
            if compound { (3..=4).contains(&run) } else { (2..=3).contains(&run) && SURNAMES.contains(chars[i].1) };
        if name_like {
            let kept = if compound { 2 } else { 1 };
            out.push_str(&text[copied..start]);
            out.extend(chars[i..i + kept].iter().map(|(_, c)| *c));
            out.extend(std::iter::repeat_n('*', run - kept));
            copied = end;
        }
        i += run;
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

    #[test]
    fn masks_credit_codes_with_a_right_check_character_only() {
        assert_eq!(scrub("uscc 91440184MA59XK0D1D failed"), "uscc 91440184********** failed");
        // A wrong check character, a longer token, lowercase hex: not codes.
        assert_eq!(scrub("91440184MA59XK0D1E"), "91440184MA59XK0D1E");
        assert_eq!(scrub("91440184MA59XK0D1DX"), "91440184MA59XK0D1DX");
        assert_eq!(scrub("deadbeefdeadbeef12"), "deadbeefdeadbeef12");
    }

    #[test]
    fn masks_encoded_paths() {
        // 陈国强, percent-encoded as a client sends it.
        assert_eq!(
            scrub_path("/v1/records/x/%E9%99%88%E5%9B%BD%E5%BC%BA/91440184MA59XK0D1D"),
            "/v1/records/x/陈**/91440184**********"
        );
        assert_eq!(scrub_path("/v1/records/a%2Fb"), "/v1/records/a/b");
        assert_eq!(scrub_path("/bad%FF%FE"), "/bad\u{fffd}\u{fffd}");
        assert_eq!(scrub_path("/x%0Afake%20line"), "/x\u{fffd}fake line");
    }

    #[test]
    fn masks_names_that_stand_on_their_own() {
        assert_eq!(scrub(r#"{"name":"陈国强","id":"x"}"#), r#"{"name":"陈**","id":"x"}"#);
        assert_eq!(scrub("receiver: 李伟 is unknown"), "receiver: 李* is unknown");
        assert_eq!(scrub("欧阳娜娜, 司马光"), "欧阳**, 司马*");
        // Department names, longer words and words without a surname stay readable.
        assert_eq!(scrub("从化区民政局 answered 500"), "从化区民政局 answered 500");
        assert_eq!(scrub("超时 and 连接失败"), "超时 and 连接失败");
    }
}
