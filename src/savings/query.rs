//! What a report covers and how it is shown, parsed from a URL query or CLI arguments.

use super::day::Day;

/// The longest span one report may cover, in days.
pub const MAX_DAYS: i64 = 1_100;

/// The default span: the last 30 days, today included.
pub const DEFAULT_DAYS: i64 = 30;

/// What rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Day,
    Model,
    Team,
    Key,
    Outcome,
    /// The API called: `chat`, `completion`, `embedding`, `responses`, ...
    Endpoint,
}

impl Dimension {
    pub const ALL: [Dimension; 6] = [
        Dimension::Day,
        Dimension::Model,
        Dimension::Team,
        Dimension::Key,
        Dimension::Outcome,
        Dimension::Endpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Day => "day",
            Dimension::Model => "model",
            Dimension::Team => "team",
            Dimension::Key => "key",
            Dimension::Outcome => "outcome",
            Dimension::Endpoint => "endpoint",
        }
    }

    pub fn parse(text: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Json,
    Csv,
    Table,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "table" => Some(Format::Table),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportQuery {
    /// First day, inclusive (UTC).
    pub from: Day,
    /// Last day, inclusive (UTC).
    pub to: Day,
    pub group_by: Vec<Dimension>,
    pub format: Format,
}

/// The `thrifty report` arguments, as typed.
#[derive(Clone, Debug, Default)]
pub struct ReportArgs {
    pub from: Option<String>,
    pub to: Option<String>,
    /// Comma-separated dimensions; empty for totals only.
    pub group_by: Option<String>,
    /// csv, json or table (the default).
    pub format: Option<String>,
}

impl ReportArgs {
    pub fn query(&self, today: Day, default_format: Format) -> Result<ReportQuery, String> {
        build(
            today,
            self.from.as_deref(),
            self.to.as_deref(),
            self.group_by.as_deref(),
            self.format.as_deref(),
            default_format,
        )
    }
}

/// Parses `from=YYYY-MM-DD&to=YYYY-MM-DD&group_by=day,model&format=json|csv`.
/// Defaults: the last 30 days up to `today`, grouped by day, as JSON.
pub fn parse_query(query_string: &str, today: Day) -> Result<ReportQuery, String> {
    let (mut from, mut to, mut group_by, mut format) = (None, None, None, None);
    for (name, value) in form_urlencoded::parse(query_string.as_bytes()) {
        let value = value.into_owned();
        let slot = match name.as_ref() {
            "from" => &mut from,
            "to" => &mut to,
            "group_by" => &mut group_by,
            "format" => &mut format,
            other => {
                return Err(format!(
                    "unknown parameter {other}: expected from, to, group_by or format"
                ));
            }
        };
        *slot = Some(value);
    }
    build(
        today,
        from.as_deref(),
        to.as_deref(),
        group_by.as_deref(),
        format.as_deref(),
        Format::Json,
    )
}

/// Records `GET /admin/savings/audit` returns when no `limit` is given, and at most.
pub const AUDIT_DEFAULT: usize = 100;
pub const AUDIT_MAX: usize = 10_000;

/// `GET /admin/savings/audit?limit=&format=json|csv`: the newest raw records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    pub limit: usize,
    pub format: Format,
}

pub fn parse_audit_query(query_string: &str) -> Result<AuditQuery, String> {
    let mut query = AuditQuery {
        limit: AUDIT_DEFAULT,
        format: Format::Json,
    };
    for (name, value) in form_urlencoded::parse(query_string.as_bytes()) {
        match name.as_ref() {
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=AUDIT_MAX).contains(n))
                    .ok_or_else(|| format!("limit must be a whole number from 1 to {AUDIT_MAX}"))?;
            }
            "format" => {
                query.format = match value.as_ref() {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    _ => return Err("format must be json or csv".to_owned()),
                };
            }
            other => {
                return Err(format!(
                    "unknown parameter {other}: expected limit or format"
                ));
            }
        }
    }
    Ok(query)
}

fn build(
    today: Day,
    from: Option<&str>,
    to: Option<&str>,
    group_by: Option<&str>,
    format: Option<&str>,
    default_format: Format,
) -> Result<ReportQuery, String> {
    let day = |name: &str, text: &str| {
        Day::parse(text.trim())
            .ok_or_else(|| format!("{name}: expected a date YYYY-MM-DD, got {text:?}"))
    };
    let to = match to {
        Some(text) => day("to", text)?,
        None => today,
    };
    let from = match from {
        Some(text) => day("from", text)?,
        None => to.plus(1 - DEFAULT_DAYS),
    };
    if from > to {
        return Err(format!("from ({from}) is after to ({to})"));
    }
    if from.days_until(to) >= MAX_DAYS {
        return Err(format!(
            "from..to spans more than {MAX_DAYS} days: ask for a shorter range"
        ));
    }
    let mut dimensions = Vec::new();
    match group_by {
        None => dimensions.push(Dimension::Day),
        Some(list) => {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let dimension = Dimension::parse(name).ok_or_else(|| {
                    format!("group_by: unknown {name:?}, expected day, model, team, key, outcome or endpoint")
                })?;
                if dimensions.contains(&dimension) {
                    return Err(format!("group_by: {name} is listed twice"));
                }
                dimensions.push(dimension);
            }
        }
    }
    let format = match format {
        None => default_format,
        Some(text) => Format::parse(text.trim())
            .ok_or_else(|| format!("format: expected json, csv or table, got {text:?}"))?,
    };
    Ok(ReportQuery {
        from,
        to,
        group_by: dimensions,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_query() {
        let q = parse_query(
            "from=2025-01-01&to=2025-01-31&group_by=day%2Cmodel,team&format=csv",
            Day::today(),
        )
        .unwrap();
        assert_eq!(q.from.to_string(), "2025-01-01");
        assert_eq!(q.to.to_string(), "2025-01-31");
        assert_eq!(
            q.group_by,
            vec![Dimension::Day, Dimension::Model, Dimension::Team]
        );
        assert_eq!(q.format, Format::Csv);
    }

    #[test]
    fn defaults_to_the_last_30_days_by_day_as_json() {
        let q = parse_query("", Day::today()).unwrap();
        assert_eq!(q.to, Day::today());
        assert_eq!(q.from.days_until(q.to), 29);
        assert_eq!(q.group_by, vec![Dimension::Day]);
        assert_eq!(q.format, Format::Json);
        let totals_only = parse_query("group_by=", Day::today()).unwrap();
        assert!(totals_only.group_by.is_empty());
        let args = ReportArgs {
            to: Some("2025-03-01".into()),
            ..ReportArgs::default()
        };
        let q = args.query(Day::today(), Format::Table).unwrap();
        assert_eq!(
            (q.from.to_string().as_str(), q.format),
            ("2025-01-31", Format::Table)
        );
    }

    #[test]
    fn errors_name_the_parameter() {
        for (query, expected) in [
            ("from=2025-13-01", "from:"),
            ("to=yesterday", "to:"),
            ("from=2025-02-01&to=2025-01-01", "after"),
            ("from=2020-01-01&to=2025-01-01", "spans"),
            ("group_by=day,tenant", "group_by:"),
            ("group_by=day,day", "twice"),
            ("format=xml", "format:"),
            ("limit=5", "unknown parameter limit"),
        ] {
            let err = parse_query(query, Day::today()).unwrap_err();
            assert!(err.contains(expected), "{query}: {err}");
        }
    }
}
