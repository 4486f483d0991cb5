//! What the client asks of compression (`x-thrifty-compression: off|force`) and
//! what compressing one request did, down to the response header's value. This
//! room holds plain data: it must not decide or count anything.

use std::time::Duration;

/// What the client asked for in `x-thrifty-compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Force {
    /// Compress when over budget.
    Auto,
    /// Never compress this request.
    Off,
    /// Condense every turn outside the recent window, even under budget
    /// (only where the operator left compression enabled).
    Force,
}

impl Force {
    /// `off` or `force`; anything else (or no header) is `Auto`.
    pub fn from_header(value: Option<&str>) -> Force {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("off") => Force::Off,
            Some(v) if v.eq_ignore_ascii_case("force") => Force::Force,
            _ => Force::Auto,
        }
    }
}

/// How the summary cache served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryUse {
    /// No summary involved (extractive strategy, or nothing to condense).
    None,
    /// A new summary of the whole condensed part.
    Created,
    /// A stored summary extended with the newly aged-out messages.
    Extended,
    /// A stored summary used as it was.
    Reused,
    /// The summarizer failed or timed out; the extractive strategy stood in.
    Failed,
}

impl SummaryUse {
    pub fn as_str(self) -> &'static str {
        match self {
            SummaryUse::None => "none",
            SummaryUse::Created => "created",
            SummaryUse::Extended => "extended",
            SummaryUse::Reused => "reused",
            SummaryUse::Failed => "failed",
        }
    }
}

/// What compressing one request did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Prompt tokens before and after.
    pub before: usize,
    pub after: usize,
    pub budget: usize,
    /// False when the recent messages alone did not fit and had to be shortened,
    /// or when the prompt is still over budget.
    pub budget_met: bool,
    /// `extractive` or `summarize`: what produced the condensed message.
    pub strategy: &'static str,
    pub summary: SummaryUse,
    /// Tokens the summarizer spent, overhead for the savings ledger.
    pub summarizer_tokens: u64,
    /// Messages folded into the condensed message.
    pub condensed_messages: usize,
    /// Messages inside the protected part that had to be shortened.
    pub shortened_messages: usize,
    pub elapsed: Duration,
}

impl Outcome {
    /// The `x-thrifty-compression` response header: `45210->31877`, with
    /// `; budget-not-met` appended when the budget could not be met.
    pub fn header_value(&self) -> String {
        let mut value = format!("{}->{}", self.before, self.after);
        if !self.budget_met {
            value.push_str("; budget-not-met");
        }
        value
    }
}
