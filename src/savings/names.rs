//! Names joined into counter fields and price labels: `|` separates them, so each name is
//! escaped (`%`, `|` and control characters as `%XX` bytes) and read back unescaped.

use super::day::Day;

/// `model|upstream|effective`, each part escaped.
pub fn version_label(model: &str, upstream: Option<&str>, effective: Day) -> String {
    format!(
        "{}|{}|{effective}",
        escape(model),
        upstream.map(escape).unwrap_or_default()
    )
}

pub fn parse_version_label(label: &str) -> Option<(String, Option<String>, Day)> {
    let mut parts = label.split('|');
    let model = unescape(parts.next()?);
    let upstream = Some(unescape(parts.next()?)).filter(|u| !u.is_empty());
    let effective = Day::parse(parts.next()?)?;
    parts
        .next()
        .is_none()
        .then_some((model, upstream, effective))
}

/// Escapes `%`, `|` and control characters so names can be joined with `|`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// Appends `text` to `out` with `%`, `|` and control characters as `%XX` bytes.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if c == '%' || c == '|' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

pub fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_separators_round_trip() {
        for name in ["plain", "a|b", "100%", "tab\there", "nul\0x", "ünï|cødé%7C"] {
            assert_eq!(unescape(&escape(name)), name);
            assert!(!escape(name).contains('|'));
        }
        let label = version_label("gpt|4*", Some("ollama*"), Day::parse("2024-07-18").unwrap());
        let (model, upstream, day) = parse_version_label(&label).unwrap();
        assert_eq!(
            (
                model.as_str(),
                upstream.as_deref(),
                day.to_string().as_str()
            ),
            ("gpt|4*", Some("ollama*"), "2024-07-18")
        );
        assert_eq!(
            parse_version_label(&version_label("m", None, day))
                .unwrap()
                .1,
            None
        );
    }
}
