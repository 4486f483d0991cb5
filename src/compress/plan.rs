//! Where a request is cut: the leading instructions, the protected recent window
//! (widened to the start of a tool-call unit), the block boundaries the cut may
//! fall on so consecutive turns keep an identical prefix, and the smallest cut
//! that fits, estimating the condensed part at the ratio. In relevant mode every turn
//! outside the protected window is condensed, since what is kept depends on the question
//! anyway. This room only reads counts: it must not count tokens or change messages.

use crate::chat::{Message, Role};
use crate::config::Mode;

use super::{Counts, Encoding};

/// Estimated cost of the condensed message's header, for choosing the boundary.
const SUMMARY_OVERHEAD: usize = 48;
/// The condensed message always gets at least this many tokens…
const MIN_SUMMARY_TOKENS: usize = 48;
/// …and at most this share of the budget, so recent turns keep most of the room.
const MAX_SUMMARY_SHARE: f64 = 0.25;
/// Room kept for the acknowledgement a condensed user message may need (`placement`).
const PLACEMENT_RESERVE: usize = 8;

/// How hard one call compresses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pressure {
    pub(super) recent: usize,
    pub(super) budget_scale: f64,
    pub(super) force: bool,
}

/// A planned request: its counts and where to cut.
pub(super) struct Prepared {
    pub(super) encoding: Encoding,
    pub(super) budget: usize,
    pub(super) counts: Counts,
    pub(super) plan: Plan,
    pub(super) mode: Mode,
}

impl Prepared {
    /// Tokens the condensed message may use: the ratio of what it replaces, within the room
    /// left; in stable mode also at most a share of the budget, so the verbatim turns after
    /// the cut keep most of it.
    pub(super) fn summary_target(&self, ratio: f64) -> usize {
        let condensed: usize = self
            .plan
            .condensed
            .iter()
            .map(|&i| self.counts.messages[i])
            .sum();
        let kept = self.counts.total() - condensed;
        let room = self.budget.saturating_sub(kept + PLACEMENT_RESERVE);
        let size = match self.mode {
            Mode::Stable => summary_size(condensed, ratio, self.budget),
            Mode::Relevant => (condensed as f64 * ratio) as usize,
        };
        size.min(room).max(MIN_SUMMARY_TOKENS)
    }
}

/// What the condensed message may cost: `ratio` of what it replaces, at most a share of the budget.
fn summary_size(replaced: usize, ratio: f64, budget: usize) -> usize {
    ((replaced as f64 * ratio) as usize).min((budget as f64 * MAX_SUMMARY_SHARE) as usize)
}

/// Where a request is cut.
#[derive(Debug, PartialEq)]
pub(super) struct Plan {
    /// Leading system and developer messages.
    pub(super) lead: usize,
    pub(super) latest_user: Option<usize>,
    /// First message of the verbatim tail, at the start of a unit.
    pub(super) protect_start: usize,
    /// Candidate cuts: block boundaries below `protect_start`, then `protect_start`.
    pub(super) boundaries: Vec<usize>,
    /// Messages `lead..cut` are condensed, except instructions and the latest user message.
    pub(super) cut: usize,
    pub(super) condensed: Vec<usize>,
}

impl Plan {
    pub(super) fn new(
        messages: &[Message],
        counts: &Counts,
        budget: usize,
        pressure: Pressure,
        mode: Mode,
        block: usize,
        ratio: f64,
    ) -> Plan {
        let lead = messages
            .iter()
            .take_while(|m| m.role.is_instruction())
            .count();
        let latest_user = messages.iter().rposition(|m| m.role == Role::User);
        // A tool result belongs to the unit of the call before it.
        let unit_start =
            |i: usize| i <= lead || i >= messages.len() || messages[i].role != Role::Tool;
        let mut protect_start = messages.len().saturating_sub(pressure.recent).max(lead);
        while !unit_start(protect_start) {
            protect_start -= 1;
        }
        let condensable = |i: usize| !messages[i].role.is_instruction() && Some(i) != latest_user;
        let mut boundaries = Vec::new();
        let mut step = 1;
        for i in lead + 1..protect_start {
            if unit_start(i) && i >= lead + step * block {
                boundaries.push(i);
                step = (i - lead) / block + 1;
            }
        }
        if protect_start > lead {
            boundaries.push(protect_start);
        }
        // The smallest cut that fits, estimating the condensed part at the ratio.
        let total = counts.total();
        let mut cut = protect_start;
        if !pressure.force && mode == Mode::Stable {
            let mut removed = 0;
            let mut next = lead;
            for &b in &boundaries {
                removed += (next..b)
                    .filter(|&i| condensable(i))
                    .map(|i| counts.messages[i])
                    .sum::<usize>();
                next = b;
                let estimate =
                    total - removed + summary_size(removed, ratio, budget) + SUMMARY_OVERHEAD;
                if estimate <= budget {
                    cut = b;
                    break;
                }
            }
        }
        let condensed = (lead..cut).filter(|&i| condensable(i)).collect();
        Plan {
            lead,
            latest_user,
            protect_start,
            boundaries,
            cut,
            condensed,
        }
    }
}
