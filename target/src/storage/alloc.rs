//! Extent allocation. Free space is never stored: it is derived from the volume table each
//! time (the data area minus every run of every volume), and the same derivation is the
//! "never owned twice" check that runs at open and before every metadata write.
//!
//! Policy, for `n` extents: first extend the volume's last run in place when the extents right
//! after it are free (a grown volume stays contiguous); then the smallest free span that
//! holds all that is left (best fit keeps big spans for big volumes); and when no span is
//! big enough, the biggest spans first until `n` is reached (fewest runs), so a volume may
//! span several runs but never fails while enough extents are free in total.

use super::error::TableProblem;
use super::ids::VolumeId;

/// Physical extents `start..start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Span {
    pub start: u64,
    pub count: u64,
}

impl Span {
    pub fn end(&self) -> u64 {
        self.start + self.count
    }
}

/// The free spans of the data area `first..end` (in physical order) once the `used` spans
/// are taken out, or the first problem: a span outside the data area, or an extent used
/// twice.
pub(crate) fn free_spans(first: u64, end: u64, mut used: Vec<(Span, VolumeId)>) -> Result<Vec<Span>, TableProblem> {
    used.sort_by_key(|(span, _)| span.start);
    let mut free = Vec::new();
    let mut cursor = first;
    let mut previous: Option<VolumeId> = None;
    for (span, owner) in used {
        let span_end = span.start.checked_add(span.count);
        if span.count == 0 || span.start < first || span_end.is_none_or(|e| e > end) {
            return Err(TableProblem::OutOfRange { volume: owner, start: span.start, count: span.count });
        }
        if span.start < cursor {
            let first_owner = previous.expect("cursor only moves past a span with an owner");
            return Err(TableProblem::OwnedTwice { extent: span.start, first: first_owner, second: owner });
        }
        if span.start > cursor {
            free.push(Span { start: cursor, count: span.start - cursor });
        }
        cursor = span.end();
        previous = Some(owner);
    }
    if cursor < end {
        free.push(Span { start: cursor, count: end - cursor });
    }
    Ok(free)
}

/// Chooses `n` free extents (see the module's policy); the spans come back in the order they
/// are to be appended to the volume. `after` is the physical end of the volume's last run,
/// when growing. `None` when fewer than `n` extents are free.
pub(crate) fn allocate(free: &[Span], n: u64, after: Option<u64>) -> Option<Vec<Span>> {
    let total: u64 = free.iter().map(|s| s.count).sum();
    if n == 0 || total < n {
        return (n == 0).then(Vec::new);
    }
    let mut taken = Vec::new();
    let mut left = n;
    let mut skip = None;
    if let Some(index) = after.and_then(|end| free.iter().position(|s| s.start == end)) {
        let count = left.min(free[index].count);
        taken.push(Span { start: free[index].start, count });
        left -= count;
        skip = Some(index);
    }
    if left == 0 {
        return Some(taken);
    }
    let candidates = || free.iter().enumerate().filter(|(i, _)| Some(*i) != skip).map(|(_, s)| *s);
    if let Some(best) = candidates().filter(|s| s.count >= left).min_by_key(|s| (s.count, s.start)) {
        taken.push(Span { start: best.start, count: left });
        return Some(taken);
    }
    let mut biggest: Vec<Span> = candidates().collect();
    biggest.sort_by_key(|s| (std::cmp::Reverse(s.count), s.start));
    for span in biggest {
        let count = left.min(span.count);
        taken.push(Span { start: span.start, count });
        left -= count;
        if left == 0 {
            return Some(taken);
        }
    }
    unreachable!("total free extents were counted above")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn vid(n: u128) -> VolumeId {
        VolumeId::new(Uuid::from_u128(n)).unwrap()
    }

    fn s(start: u64, count: u64) -> Span {
        Span { start, count }
    }

    #[test]
    fn free_spans_are_the_gaps() {
        let used = vec![(s(12, 3), vid(1)), (s(10, 2), vid(2)), (s(20, 5), vid(1))];
        assert_eq!(free_spans(9, 30, used).unwrap(), vec![s(9, 1), s(15, 5), s(25, 5)]);
        assert_eq!(free_spans(9, 30, vec![]).unwrap(), vec![s(9, 21)]);
        assert_eq!(free_spans(9, 12, vec![(s(9, 3), vid(1))]).unwrap(), vec![]);
    }

    #[test]
    fn overlaps_and_strays_are_found() {
        let twice = free_spans(9, 30, vec![(s(10, 5), vid(1)), (s(14, 2), vid(2))]);
        assert_eq!(twice, Err(TableProblem::OwnedTwice { extent: 14, first: vid(1), second: vid(2) }));
        let stray = free_spans(9, 30, vec![(s(8, 1), vid(3))]);
        assert_eq!(stray, Err(TableProblem::OutOfRange { volume: vid(3), start: 8, count: 1 }));
        assert!(free_spans(9, 30, vec![(s(29, 2), vid(3))]).is_err());
        assert!(free_spans(9, 30, vec![(s(20, 0), vid(3))]).is_err());
        assert!(free_spans(9, 30, vec![(s(u64::MAX, 2), vid(3))]).is_err());
    }

    #[test]
    fn policy_extends_then_best_fits_then_takes_the_biggest() {
        let free = [s(10, 4), s(20, 2), s(30, 8)];
        assert_eq!(allocate(&free, 2, None), Some(vec![s(20, 2)]), "best fit");
        assert_eq!(allocate(&free, 3, None), Some(vec![s(10, 3)]));
        assert_eq!(allocate(&free, 3, Some(20)), Some(vec![s(20, 2), s(10, 1)]), "extends in place first");
        assert_eq!(allocate(&free, 13, None), Some(vec![s(30, 8), s(10, 4), s(20, 1)]), "biggest first");
        assert_eq!(allocate(&free, 15, None), None);
        assert_eq!(allocate(&free, 0, None), Some(vec![]));
    }

    fn spans_strategy() -> impl Strategy<Value = Vec<Span>> {
        proptest::collection::vec((0u64..5, 1u64..6), 0..12).prop_map(|gaps| {
            let mut at = 0;
            gaps.into_iter()
                .map(|(gap, count)| {
                    at += gap + 1;
                    let span = s(at, count);
                    at += count;
                    span
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn allocation_takes_exactly_n_free_extents(free in spans_strategy(), n in 0u64..40, after in proptest::option::of(0u64..60)) {
            let total: u64 = free.iter().map(|s| s.count).sum();
            match allocate(&free, n, after) {
                None => prop_assert!(total < n),
                Some(taken) => {
                    prop_assert_eq!(taken.iter().map(|s| s.count).sum::<u64>(), n);
                    let mut extents: Vec<u64> = taken.iter().flat_map(|s| s.start..s.end()).collect();
                    for e in &extents {
                        prop_assert!(free.iter().any(|f| f.start <= *e && *e < f.end()), "extent {} is not free", e);
                    }
                    extents.sort_unstable();
                    extents.dedup();
                    prop_assert_eq!(extents.len() as u64, n, "an extent was taken twice");
                    prop_assert!(taken.iter().all(|s| s.count > 0));
                }
            }
        }
    }
}
