//! Edits of a config file's text that tools make before starting a hub on it (the load
//! generator, the end-to-end harness): keeping some front-end exchange connections, dropping
//! the scheduled checks. Text, not a re-serialised document, so comments and line numbers stay.

const EXCHANGE_ADAPTERS: [&str; 3] = ["adapter = \"sql_table\"", "adapter = \"amqp\"", "adapter = \"file_drop\""];

/// The config without its front-end exchange connections (every `[[inbound]]`, and the
/// `sql_table`, `amqp` and `file_drop` subscriptions) except those named in `keep`. A case type
/// whose reply travels through a connection left out goes too, with its steps: it cannot answer.
pub fn keep_exchange(text: &str, keep: &[&str]) -> String {
    // Tables start at a line beginning with `[`; nothing else in a config does.
    let mut kept = String::with_capacity(text.len());
    let mut block = String::new();
    let mut dropped: Vec<String> = Vec::new();
    let mut dropping_case = false;
    let mut flush = |block: &mut String, kept: &mut String| {
        let wanted = keep.iter().any(|k| block.contains(&format!("\nname = \"{k}\"\n")));
        let exchange = block.starts_with("[[inbound]]")
            || (block.starts_with("[[subscriptions]]") && EXCHANGE_ADAPTERS.iter().any(|a| block.contains(a)));
        if block.starts_with("[[case_types]]") {
            dropping_case = dropped.iter().any(|d| block.contains(&format!("\nreply = \"{d}\"\n")));
        } else if !block.starts_with("[[case_types.steps]]") {
            dropping_case = false;
        }
        if exchange && !wanted {
            if let Some(name) = block.lines().find_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"')) {
                dropped.push(name.to_owned());
            }
        } else if !dropping_case {
            kept.push_str(block);
        }
        block.clear();
    };
    for line in text.split_inclusive('\n') {
        if line.starts_with('[') {
            flush(&mut block, &mut kept);
        }
        block.push_str(line);
    }
    flush(&mut block, &mut kept);
    kept
}

/// The config without `[ops]` and the `[[checks]]`, which end a config laid out like
/// `config/conghua.toml`: no probes, backups or alerts during a measurement.
pub fn without_checks(text: &str) -> String {
    match text.find("\n[ops]\n") {
        Some(at) => text[..=at].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_is_named_and_everything_else() {
        let text = "[hub]\nname = \"t\"\n[[subscriptions]]\nname = \"a\"\nadapter = \"webhook\"\n\
                    [[subscriptions]]\nname = \"b\"\nadapter = \"amqp\"\n[[inbound]]\nname = \"c\"\nadapter = \"file_drop\"\n\
                    [[inbound]]\nname = \"d\"\nadapter = \"amqp\"\n[ops]\nx = 1\n[[checks]]\nname = \"e\"\n";
        let kept = keep_exchange(text, &["d"]);
        assert!(kept.contains("name = \"a\"") && kept.contains("name = \"d\""));
        assert!(!kept.contains("name = \"b\"") && !kept.contains("name = \"c\""));
        assert!(without_checks(&kept).ends_with("adapter = \"amqp\"\n"));
    }

    #[test]
    fn a_case_type_whose_reply_is_left_out_goes_with_its_steps() {
        let text = "[[subscriptions]]\nname = \"q\"\nadapter = \"amqp\"\n[[case_types]]\nid = \"a\"\nreply = \"q\"\n\
                    [[case_types.steps]]\nid = \"s1\"\n[[case_types.steps]]\nid = \"s2\"\n\
                    [[case_types]]\nid = \"b\"\nreply = \"w\"\n[[case_types.steps]]\nid = \"s3\"\n[ops]\n";
        let kept = keep_exchange(text, &[]);
        assert!(!kept.contains("id = \"a\"") && !kept.contains("s1") && !kept.contains("s2"), "{kept}");
        assert!(kept.contains("id = \"b\"") && kept.contains("s3") && kept.contains("[ops]"), "{kept}");
        assert_eq!(keep_exchange(text, &["q"]), text);
    }
}
