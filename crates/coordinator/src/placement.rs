//! Placement: which node takes a session. A pure function over a snapshot, so the rule lives in
//! one place and is tested without a database; the caller takes the snapshot and applies the
//! decision inside one transaction that holds the placement lock (see `store`).
//!
//! A session occupies one slot of its node over an interval of time: from its start (now, or
//! its `start_at` when scheduled) to the end of its window (`start + duration`), or without end
//! when it has no duration. A node can take a session over `want` if, at every instant of
//! `want`, fewer than its capacity of intervals overlap. So a scheduled session reserves its
//! window, and an unbounded session blocks later reservations on its node, because nobody
//! knows when it ends.

use pxs_protocol::node::{ApplicationId, NodeId};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A half-open interval `[start, end)`; `end: None` is unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub start: Millis,
    pub end: Option<Millis>,
}

impl Interval {
    pub fn new(start: Millis, end: Option<Millis>) -> Interval {
        Interval { start, end }
    }

    fn overlaps(&self, other: &Interval) -> bool {
        let a_before_b_ends = other.end.is_none_or(|e| self.start < e);
        let b_before_a_ends = self.end.is_none_or(|e| other.start < e);
        a_before_b_ends && b_before_a_ends
    }
}

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSlots {
    pub id: NodeId,
    /// Online, not drained by an admin, not draining itself.
    pub available: bool,
    /// Sessions it can run at once (already limited by its GPUs, see [`capacity`]).
    pub capacity: u32,
    pub applications: Vec<ApplicationId>,
    /// The intervals of the sessions placed or reserved on it.
    pub busy: Vec<Interval>,
}

/// The slots a node offers: `max_sessions`, and no more than `gpus × max_sessions_per_gpu` when
/// it has GPUs and a per-GPU limit.
pub fn capacity(max_sessions: u32, max_sessions_per_gpu: u32, gpus: usize) -> u32 {
    let gpus = u32::try_from(gpus).unwrap_or(u32::MAX);
    if gpus > 0 && max_sessions_per_gpu > 0 {
        max_sessions.min(gpus.saturating_mul(max_sessions_per_gpu))
    } else {
        max_sessions
    }
}

/// The most intervals of `busy` that overlap at one instant within `want`.
pub fn peak(busy: &[Interval], want: &Interval) -> u32 {
    // Sweep the starts and ends of the overlapping intervals, clipped to `want`. At equal times
    // an end comes before a start (half-open intervals do not touch).
    let mut points: Vec<(Millis, i32)> = Vec::new();
    for b in busy.iter().filter(|b| b.overlaps(want)) {
        points.push((b.start.max(want.start), 1));
        if let Some(end) = b.end
            && want.end.is_none_or(|w| end < w)
        {
            points.push((end, -1));
        }
    }
    points.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in points {
        now += d;
        most = most.max(now);
    }
    u32::try_from(most).unwrap_or(0)
}

/// Free slots of `node` over `want` (0 when it is unavailable).
pub fn free_slots(node: &NodeSlots, want: &Interval) -> u32 {
    if !node.available {
        return 0;
    }
    node.capacity.saturating_sub(peak(&node.busy, want))
}

/// Picks the node for a session of `application` over `want`: available, has the application, a
/// free slot over the whole interval; the least loaded first (most free slots, then fewest
/// sessions overall, then the id, so the choice is deterministic). `None`: nowhere.
pub fn place<'a>(
    nodes: &'a [NodeSlots],
    application: &ApplicationId,
    want: &Interval,
) -> Option<&'a NodeId> {
    ranked(nodes, application, want).into_iter().next()
}

/// Every node that could take a session of `application` over `want`, in [`place`]'s order of
/// preference (the first is its choice). A placement that runs beside others (PostgreSQL) takes
/// the first one no other placement is deciding on.
pub fn ranked<'a>(
    nodes: &'a [NodeSlots],
    application: &ApplicationId,
    want: &Interval,
) -> Vec<&'a NodeId> {
    let mut fit: Vec<(&NodeSlots, u32)> = nodes
        .iter()
        .filter(|n| n.applications.contains(application))
        .map(|n| (n, free_slots(n, want)))
        .filter(|(_, free)| *free > 0)
        .collect();
    fit.sort_by(|(a, fa), (b, fb)| {
        fb.cmp(fa)
            .then(a.busy.len().cmp(&b.busy.len()))
            .then(a.id.cmp(&b.id))
    });
    fit.into_iter().map(|(n, _)| &n.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn app(s: &str) -> ApplicationId {
        ApplicationId::parse(s).unwrap()
    }

    fn node(id: &str, capacity: u32, busy: Vec<Interval>) -> NodeSlots {
        NodeSlots {
            id: NodeId::parse(id).unwrap(),
            available: true,
            capacity,
            applications: vec![app("demo")],
            busy,
        }
    }

    const NOW: Millis = 1_000_000;

    #[test]
    fn the_least_loaded_node_with_the_application_is_chosen() {
        let nodes = vec![
            node("a", 2, vec![Interval::new(NOW, None)]),
            node("b", 2, vec![]),
            NodeSlots {
                applications: vec![app("other")],
                ..node("c", 8, vec![])
            },
        ];
        let want = Interval::new(NOW, None);
        assert_eq!(place(&nodes, &app("demo"), &want).unwrap().as_str(), "b");
        assert_eq!(place(&nodes, &app("other"), &want).unwrap().as_str(), "c");
        assert!(place(&nodes, &app("missing"), &want).is_none());
    }

    #[test]
    fn unavailable_or_full_nodes_take_nothing() {
        let full = node("a", 1, vec![Interval::new(NOW - 5, None)]);
        let drained = NodeSlots {
            available: false,
            ..node("b", 4, vec![])
        };
        let want = Interval::new(NOW, Some(NOW + 10));
        assert!(place(&[full, drained], &app("demo"), &want).is_none());
    }

    #[test]
    fn a_reservation_blocks_only_its_window() {
        // One slot, reserved for [100, 200).
        let n = node("a", 1, vec![Interval::new(NOW + 100, Some(NOW + 200))]);
        let fits_before = Interval::new(NOW, Some(NOW + 100));
        let fits_after = Interval::new(NOW + 200, Some(NOW + 300));
        let overlaps = Interval::new(NOW + 150, Some(NOW + 250));
        let unbounded_now = Interval::new(NOW, None);
        assert_eq!(free_slots(&n, &fits_before), 1);
        assert_eq!(free_slots(&n, &fits_after), 1);
        assert_eq!(free_slots(&n, &overlaps), 0);
        assert_eq!(
            free_slots(&n, &unbounded_now),
            0,
            "an open-ended session would run into the reservation"
        );
    }

    #[test]
    fn the_peak_counts_only_simultaneous_sessions() {
        // Two sessions one after the other use one slot; a third overlapping both needs two.
        let busy = vec![
            Interval::new(0, Some(10)),
            Interval::new(10, Some(20)),
            Interval::new(5, Some(15)),
        ];
        assert_eq!(peak(&busy, &Interval::new(0, Some(20))), 2);
        assert_eq!(peak(&busy[..2], &Interval::new(0, None)), 1);
        assert_eq!(peak(&busy, &Interval::new(20, None)), 0);
    }

    #[test]
    fn gpus_limit_the_capacity() {
        assert_eq!(capacity(8, 2, 2), 4);
        assert_eq!(capacity(8, 0, 2), 8);
        assert_eq!(capacity(3, 2, 0), 3);
        assert_eq!(capacity(3, 4, 2), 3);
    }

    fn interval() -> impl Strategy<Value = Interval> {
        (0i64..100, prop::option::of(1i64..50))
            .prop_map(|(start, len)| Interval::new(start, len.map(|l| start + l)))
    }

    /// The number of intervals covering instant `t`.
    fn covering(busy: &[Interval], t: Millis) -> usize {
        busy.iter()
            .filter(|b| b.start <= t && b.end.is_none_or(|e| t < e))
            .count()
    }

    proptest! {
        /// Whatever arrives in whatever order, accepting each request where `place` says keeps
        /// every node within its capacity at every instant.
        #[test]
        fn placement_never_exceeds_a_nodes_capacity(
            capacities in prop::collection::vec(0u32..4, 1..4),
            requests in prop::collection::vec(interval(), 0..40),
        ) {
            let mut nodes: Vec<NodeSlots> = capacities
                .iter()
                .enumerate()
                .map(|(i, c)| node(&format!("n{i}"), *c, vec![]))
                .collect();
            for want in requests {
                let Some(id) = place(&nodes, &app("demo"), &want).cloned() else { continue };
                let n = nodes.iter_mut().find(|n| n.id == id).unwrap();
                n.busy.push(want);
            }
            for n in &nodes {
                for t in 0..200 {
                    prop_assert!(covering(&n.busy, t) <= n.capacity as usize,
                        "node {} over capacity at {t}: {:?}", n.id, n.busy);
                }
            }
        }

        /// `ranked` lists exactly the nodes with a free slot over the window, best first: its
        /// first is `place`'s choice, and no node after another has more free slots.
        #[test]
        fn ranked_lists_every_fitting_node_in_places_order(
            loads in prop::collection::vec((0u32..4, prop::collection::vec(interval(), 0..6)), 1..6),
            want in interval(),
        ) {
            let nodes: Vec<NodeSlots> = loads
                .into_iter()
                .enumerate()
                .map(|(i, (c, busy))| node(&format!("n{i}"), c, busy))
                .collect();
            let ranked = ranked(&nodes, &app("demo"), &want);
            prop_assert_eq!(ranked.first().copied(), place(&nodes, &app("demo"), &want));
            let fitting = nodes.iter().filter(|n| free_slots(n, &want) > 0).count();
            prop_assert_eq!(ranked.len(), fitting);
            let free = |id: &NodeId| free_slots(nodes.iter().find(|n| &n.id == id).unwrap(), &want);
            for pair in ranked.windows(2) {
                prop_assert!(free(pair[0]) >= free(pair[1]));
            }
        }

        /// The sweep agrees with counting instant by instant.
        #[test]
        fn peak_is_the_most_simultaneous_intervals(
            busy in prop::collection::vec(interval(), 0..12),
            want in interval(),
        ) {
            let end = want.end.unwrap_or(200);
            let brute = (want.start..end).map(|t| covering(&busy, t)).max().unwrap_or(0);
            prop_assert_eq!(peak(&busy, &want) as usize, brute);
        }
    }
}
