//! The supply-versus-journal chart: cumulative sums per block, thinned for a person's eye.

use super::book::sadd;
use super::{AuditError, Point, SignedQty};

/// The chart is for a person's eye: more points than this are thinned (the last point of each
/// stretch is kept, and the final point always is).
pub const SERIES_POINTS_MAX: usize = 200;

/// Cumulative supply and journal per block, thinned to at most [`SERIES_POINTS_MAX`] points.
pub(super) fn series(
    mut events: Vec<(u64, SignedQty, SignedQty)>,
) -> Result<Vec<Point>, AuditError> {
    events.sort_by_key(|(block, _, _)| *block);
    let mut points: Vec<Point> = Vec::new();
    let mut supply = SignedQty::ZERO;
    let mut journaled = SignedQty::ZERO;
    for (block, d_supply, d_journal) in events {
        supply = sadd(supply, d_supply, "series")?;
        journaled = sadd(journaled, d_journal, "series")?;
        match points.last_mut() {
            Some(last) if last.block == block => {
                last.supply = supply;
                last.journaled = journaled;
            }
            _ => points.push(Point {
                block,
                supply,
                journaled,
            }),
        }
    }
    if points.len() <= SERIES_POINTS_MAX {
        return Ok(points);
    }
    let len = points.len();
    let thinned = (1..=SERIES_POINTS_MAX)
        .filter_map(|k| {
            points
                .get((k * len).div_ceil(SERIES_POINTS_MAX).saturating_sub(1))
                .copied()
        })
        .collect();
    Ok(thinned)
}
