//! A Wing–Gong linearizability checker with Lowe's memoization, per key (a history of a map is
//! linearizable exactly when each key's sub-history is: P-compositionality).
//!
//! Operations that never returned may have taken effect at any point after their call, or never:
//! the search may linearize them but need not.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;

use crate::history::{History, OpKind, OpResult, Operation};

/// The outcome of a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The sub-history of `key` has no valid order; `operations` lists it for the report.
    Violation {
        key: String,
        operations: Vec<String>,
    },
    /// The search exceeded its budget on `key`; treated as a failure so it gets looked at.
    Inconclusive {
        key: String,
        /// The key's sub-history, for the report: how many operations, how many of them writes
        /// that never returned (each may or may not have happened: the search's hard part).
        operations: usize,
        open_writes: usize,
    },
}

/// Search steps allowed per key before giving up: about a minute on this machine. Histories
/// with many writes that never returned (each may or may not have happened) need the most; the
/// hardest madsim seed seen so far (248 with `--disk-loss`) needs more than 20 million.
const STEPS_MAX: u64 = 200_000_000;

/// Why a search gave up, in words (every harness reports it the same way).
pub fn out_of_budget(key: &str, operations: usize, open_writes: usize) -> String {
    format!(
        "linearizability: the search on key {key} ran out of budget ({operations} operations, \
         {open_writes} writes that never returned)"
    )
}

pub fn check(history: &History) -> Verdict {
    let mut by_key: BTreeMap<&Bytes, Vec<&Operation>> = BTreeMap::new();
    for op in &history.operations {
        // A read that never returned constrains nothing.
        if op.kind == OpKind::Get && op.returned.is_none() {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| op.called_at);
        // First without the writes that never returned and whose value nothing saw: taking
        // them as never applied is one of the orders allowed, so an order found this way
        // proves the history linearizable, and the search is far smaller (each such write
        // doubles it). Only if none is found is the whole history searched.
        let observed = observed_values(&ops);
        let unobserved_open_write = |op: &&Operation| {
            op.returned.is_none()
                && matches!(&op.kind, OpKind::Put(value) if !observed.contains(value))
        };
        // Such a write can matter at all only by making a compare-and-swap fail (a read would
        // have seen it): with no failed swap in the history, the reduced search is the whole
        // answer, violation included.
        let failed_swap = ops
            .iter()
            .any(|op| matches!(op.returned, Some((_, OpResult::Swapped(false)))));
        if ops.iter().any(unobserved_open_write) {
            let reduced: Vec<&Operation> = ops
                .iter()
                .copied()
                .filter(|op| !unobserved_open_write(op))
                .collect();
            let verdict = check_key(&reduced);
            if matches!(verdict, KeyVerdict::Ok) {
                continue;
            }
            if !failed_swap {
                ops = reduced;
            }
        }
        match check_key(&ops) {
            KeyVerdict::Ok => {}
            KeyVerdict::Violation => {
                return Verdict::Violation {
                    key: String::from_utf8_lossy(key).into_owned(),
                    operations: ops.iter().map(|op| describe(op)).collect(),
                }
            }
            KeyVerdict::Inconclusive => {
                return Verdict::Inconclusive {
                    key: String::from_utf8_lossy(key).into_owned(),
                    operations: ops.len(),
                    open_writes: ops.iter().filter(|op| op.returned.is_none()).count(),
                }
            }
        }
    }
    Verdict::Linearizable
}

/// Every value some operation of a key's history saw or expected: what reads returned, what
/// compare-and-swaps expected.
fn observed_values(ops: &[&Operation]) -> HashSet<Bytes> {
    let mut observed = HashSet::new();
    for op in ops {
        match (&op.kind, &op.returned) {
            (OpKind::Get, Some((_, OpResult::Value(Some(value))))) => {
                observed.insert(value.clone());
            }
            (
                OpKind::CompareAndSwap {
                    expected: Some(expected),
                    ..
                },
                _,
            ) => {
                observed.insert(expected.clone());
            }
            _ => {}
        }
    }
    observed
}

fn describe(op: &Operation) -> String {
    let result = match &op.returned {
        Some((at, result)) => format!("returned at {at}: {result:?}"),
        None => "never returned".to_string(),
    };
    format!(
        "op {} client {} {:?} called at {}, {result}",
        op.id, op.client, op.kind, op.called_at
    )
}

enum KeyVerdict {
    Ok,
    Violation,
    Inconclusive,
}

/// Register states are interned: 0 is "absent", others index `values`.
struct Interner {
    ids: HashMap<Bytes, u32>,
}

impl Interner {
    fn id(&mut self, value: &Option<Bytes>) -> u32 {
        match value {
            None => 0,
            Some(value) => {
                let next = self.ids.len() as u32 + 1;
                *self.ids.entry(value.clone()).or_insert(next)
            }
        }
    }
}

/// An operation reduced to what the search needs.
struct Step {
    called_at: u64,
    returned_at: u64,
    completed: bool,
    effect: Effect,
}

enum Effect {
    /// A read that saw this state.
    Read(u32),
    Write(u32),
    /// `swapped`: `Some(result)` if known.
    CompareAndSwap {
        expected: u32,
        new: u32,
        swapped: Option<bool>,
    },
}

impl Effect {
    /// The state after this operation, or `None` if its result contradicts `state`.
    fn apply(&self, state: u32) -> Option<u32> {
        match *self {
            Effect::Read(seen) => (seen == state).then_some(state),
            Effect::Write(value) => Some(value),
            Effect::CompareAndSwap {
                expected,
                new,
                swapped,
            } => {
                let matches = state == expected;
                match swapped {
                    Some(swapped) if swapped != matches => None,
                    _ => Some(if matches { new } else { state }),
                }
            }
        }
    }
}

fn to_steps(ops: &[&Operation]) -> Vec<Step> {
    let mut interner = Interner {
        ids: HashMap::new(),
    };
    ops.iter()
        .map(|op| {
            let result = op.returned.as_ref().map(|(_, result)| result);
            let effect = match (&op.kind, result) {
                (OpKind::Get, Some(OpResult::Value(value))) => Effect::Read(interner.id(value)),
                (OpKind::Put(value), _) => Effect::Write(interner.id(&Some(value.clone()))),
                (OpKind::Delete, _) => Effect::Write(0),
                (OpKind::CompareAndSwap { expected, new }, result) => Effect::CompareAndSwap {
                    expected: interner.id(expected),
                    new: interner.id(&Some(new.clone())),
                    swapped: match result {
                        Some(OpResult::Swapped(swapped)) => Some(*swapped),
                        _ => None,
                    },
                },
                (OpKind::Get, _) => unreachable!("reads without a value are filtered out"),
            };
            Step {
                called_at: op.called_at,
                returned_at: op.returned.as_ref().map_or(u64::MAX, |(at, _)| *at),
                completed: op.returned.is_some(),
                effect,
            }
        })
        .collect()
}

/// A write that never returned but whose value a read returned (or a swap found) did take
/// effect, before that read returned: when no other write of the key wrote the same value, it
/// must be linearized, by then. Every order this rules out is invalid anyway, and the search
/// no longer tries each such write at every later point (a seed with 28 of them on one key ran
/// out of a 200-million-step budget).
fn bound_observed_open_writes(ops: &[&Operation], steps: &mut [Step]) {
    let mut writers: HashMap<&Bytes, usize> = HashMap::new();
    for op in ops {
        match &op.kind {
            OpKind::Put(value) | OpKind::CompareAndSwap { new: value, .. } => {
                *writers.entry(value).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    // The earliest return of an operation that saw each value.
    let mut seen_by: HashMap<&Bytes, u64> = HashMap::new();
    for op in ops {
        let saw = match (&op.kind, &op.returned) {
            (OpKind::Get, Some((at, OpResult::Value(Some(value))))) => Some((value, *at)),
            (
                OpKind::CompareAndSwap {
                    expected: Some(expected),
                    ..
                },
                Some((at, OpResult::Swapped(true))),
            ) => Some((expected, *at)),
            _ => None,
        };
        if let Some((value, at)) = saw {
            let earliest = seen_by.entry(value).or_insert(at);
            *earliest = (*earliest).min(at);
        }
    }
    for (op, step) in ops.iter().zip(steps.iter_mut()) {
        if op.returned.is_some() {
            continue;
        }
        if let OpKind::Put(value) = &op.kind {
            if let (Some(&at), Some(1)) = (seen_by.get(value), writers.get(value)) {
                step.returned_at = at;
                step.completed = true;
            }
        }
    }
}

struct Frame {
    state: u32,
    /// The step linearized to reach this frame.
    chosen: Option<usize>,
    /// Candidates are tried from here on.
    next: usize,
    /// The earliest return among steps not yet linearized: no candidate may be called after it.
    min_returned_at: u64,
}

fn check_key(ops: &[&Operation]) -> KeyVerdict {
    let mut steps = to_steps(ops);
    bound_observed_open_writes(ops, &mut steps);
    let completed_total = steps.iter().filter(|step| step.completed).count();
    let mut linearized = vec![0u64; steps.len().div_ceil(64)];
    // Visited (linearized set, state) pairs, as the set's words then the state; looked up
    // through one reused buffer, so a pair already seen costs no allocation.
    let mut seen: HashSet<Box<[u64]>> = HashSet::new();
    let mut key: Vec<u64> = Vec::with_capacity(linearized.len() + 1);
    let mut completed_done = 0;
    let min_returned_at = |linearized: &[u64]| {
        steps
            .iter()
            .enumerate()
            .filter(|(i, _)| linearized[i / 64] & (1 << (i % 64)) == 0)
            .map(|(_, step)| step.returned_at)
            .min()
            .unwrap_or(u64::MAX)
    };
    let mut stack = vec![Frame {
        state: 0,
        chosen: None,
        next: 0,
        min_returned_at: min_returned_at(&linearized),
    }];
    let mut budget = STEPS_MAX;
    while let Some(top) = stack.last_mut() {
        if completed_done == completed_total {
            return KeyVerdict::Ok;
        }
        budget = match budget.checked_sub(1) {
            Some(left) => left,
            None => return KeyVerdict::Inconclusive,
        };
        let mut advanced = None;
        while top.next < steps.len() {
            let i = top.next;
            top.next += 1;
            let step = &steps[i];
            if step.called_at > top.min_returned_at {
                top.next = steps.len();
                break;
            }
            if linearized[i / 64] & (1 << (i % 64)) != 0 {
                continue;
            }
            let Some(state) = step.effect.apply(top.state) else {
                continue;
            };
            linearized[i / 64] |= 1 << (i % 64);
            key.clear();
            key.extend_from_slice(&linearized);
            key.push(u64::from(state));
            if !seen.contains(key.as_slice()) {
                seen.insert(key.as_slice().into());
                advanced = Some((i, state));
                break;
            }
            linearized[i / 64] &= !(1 << (i % 64));
        }
        match advanced {
            Some((i, state)) => {
                if steps[i].completed {
                    completed_done += 1;
                }
                let min_returned_at = min_returned_at(&linearized);
                stack.push(Frame {
                    state,
                    chosen: Some(i),
                    next: 0,
                    min_returned_at,
                });
            }
            None => {
                let frame = stack.pop().expect("stack is not empty");
                if let Some(i) = frame.chosen {
                    linearized[i / 64] &= !(1 << (i % 64));
                    if steps[i].completed {
                        completed_done -= 1;
                    }
                }
            }
        }
    }
    KeyVerdict::Violation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// `(kind, called at, Some((returned at, result)))` on one key.
    type Call = (OpKind, u64, Option<(u64, OpResult)>);

    fn history(ops: Vec<Call>) -> History {
        let mut history = History::default();
        for (id, (kind, called_at, returned)) in ops.into_iter().enumerate() {
            history.operations.push(Operation {
                id: id as u64,
                client: id as u64,
                key: b("k"),
                kind,
                called_at,
                returned,
            });
        }
        history
    }

    fn read(value: Option<&str>) -> OpResult {
        OpResult::Value(value.map(b))
    }

    #[test]
    fn a_read_after_a_write_must_see_it() {
        let ok = history(vec![
            (OpKind::Put(b("1")), 1, Some((2, OpResult::Done))),
            (OpKind::Get, 3, Some((4, read(Some("1"))))),
        ]);
        assert_eq!(check(&ok), Verdict::Linearizable);
        let stale = history(vec![
            (OpKind::Put(b("1")), 1, Some((2, OpResult::Done))),
            (OpKind::Get, 3, Some((4, read(None)))),
        ]);
        assert!(matches!(check(&stale), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let either = history(vec![
            (OpKind::Put(b("1")), 1, Some((4, OpResult::Done))),
            (OpKind::Get, 2, Some((3, read(None)))),
            (OpKind::Get, 5, Some((6, read(Some("1"))))),
        ]);
        assert_eq!(check(&either), Verdict::Linearizable);
    }

    #[test]
    fn a_write_that_never_returned_may_or_may_not_have_happened() {
        let happened = history(vec![
            (OpKind::Put(b("1")), 1, None),
            (OpKind::Get, 5, Some((6, read(Some("1"))))),
        ]);
        assert_eq!(check(&happened), Verdict::Linearizable);
        let did_not = history(vec![
            (OpKind::Put(b("1")), 1, None),
            (OpKind::Get, 5, Some((6, read(None)))),
        ]);
        assert_eq!(check(&did_not), Verdict::Linearizable);
        let but_not_before_its_call = history(vec![
            (OpKind::Get, 1, Some((2, read(Some("1"))))),
            (OpKind::Put(b("1")), 3, None),
        ]);
        assert!(matches!(
            check(&but_not_before_its_call),
            Verdict::Violation { .. }
        ));
    }

    /// Many writes that never returned: those nobody saw are set aside first, and those a read
    /// saw are bounded by that read; the check stays quick, and a stale read is still caught.
    #[test]
    fn many_writes_that_never_returned_are_checked_quickly_and_soundly() {
        let mut ops: Vec<Call> = Vec::new();
        for i in 0..60 {
            ops.push((OpKind::Put(b(&format!("lost-{i}"))), 10 + i, None));
        }
        for i in 0..30 {
            let at = 100 + 10 * i;
            ops.push((OpKind::Put(b(&format!("seen-{i}"))), at, None));
            ops.push((
                OpKind::Get,
                at + 1,
                Some((at + 2, read(Some(&format!("seen-{i}"))))),
            ));
        }
        assert_eq!(check(&history(ops.clone())), Verdict::Linearizable);
        // A completed write, then a read of a value written (and seen) before it.
        ops.push((OpKind::Put(b("last")), 500, Some((501, OpResult::Done))));
        ops.push((OpKind::Get, 502, Some((503, read(Some("seen-3"))))));
        assert!(matches!(check(&history(ops)), Verdict::Violation { .. }));
    }

    #[test]
    fn a_value_cannot_come_back_after_it_was_overwritten() {
        let flicker = history(vec![
            (OpKind::Put(b("1")), 1, Some((2, OpResult::Done))),
            (OpKind::Put(b("2")), 3, Some((4, OpResult::Done))),
            (OpKind::Get, 5, Some((6, read(Some("2"))))),
            (OpKind::Get, 7, Some((8, read(Some("1"))))),
        ]);
        assert!(matches!(check(&flicker), Verdict::Violation { .. }));
    }

    #[test]
    fn compare_and_swap_results_must_match_the_state() {
        let cas = |expected: Option<&str>, new: &str| OpKind::CompareAndSwap {
            expected: expected.map(b),
            new: b(new),
        };
        let ok = history(vec![
            (cas(None, "1"), 1, Some((2, OpResult::Swapped(true)))),
            (cas(None, "2"), 3, Some((4, OpResult::Swapped(false)))),
            (cas(Some("1"), "3"), 5, Some((6, OpResult::Swapped(true)))),
            (OpKind::Get, 7, Some((8, read(Some("3"))))),
        ]);
        assert_eq!(check(&ok), Verdict::Linearizable);
        let double_win = history(vec![
            (cas(None, "1"), 1, Some((2, OpResult::Swapped(true)))),
            (cas(None, "2"), 3, Some((4, OpResult::Swapped(true)))),
        ]);
        assert!(matches!(check(&double_win), Verdict::Violation { .. }));
    }

    #[test]
    fn deletes_make_the_key_absent() {
        let ok = history(vec![
            (OpKind::Put(b("1")), 1, Some((2, OpResult::Done))),
            (OpKind::Delete, 3, Some((4, OpResult::Done))),
            (OpKind::Get, 5, Some((6, read(None)))),
        ]);
        assert_eq!(check(&ok), Verdict::Linearizable);
    }
}
