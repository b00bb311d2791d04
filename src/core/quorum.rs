//! Majority arithmetic, kept pure so it can be read (and tested) apart from the state machine.

/// The largest value that a majority of `values` (one per voter) has reached or passed.
/// For match indexes this is the commit candidate; for heartbeat rounds, the confirmed round.
pub fn majority_value(values: &mut [u64]) -> u64 {
    assert!(!values.is_empty(), "a quorum needs at least one voter");
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[values.len() / 2]
}

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Counts `granted` and `rejected` answers among `voters` voters.
pub fn vote_result(voters: usize, granted: usize, rejected: usize) -> VoteResult {
    let quorum = voters / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if rejected > voters - quorum {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_value_is_the_median_from_the_top() {
        assert_eq!(majority_value(&mut [5]), 5);
        assert_eq!(majority_value(&mut [1, 5, 3]), 3);
        assert_eq!(majority_value(&mut [9, 1, 5, 3]), 3, "4 voters need 3");
        assert_eq!(majority_value(&mut [9, 8, 1, 2, 7]), 7);
    }

    #[test]
    fn votes_are_decided_only_by_a_majority() {
        assert_eq!(vote_result(3, 2, 0), VoteResult::Won);
        assert_eq!(vote_result(3, 1, 1), VoteResult::Pending);
        assert_eq!(vote_result(3, 1, 2), VoteResult::Lost);
        assert_eq!(
            vote_result(4, 2, 2),
            VoteResult::Lost,
            "a tie cannot be won"
        );
        assert_eq!(vote_result(4, 2, 1), VoteResult::Pending);
        assert_eq!(vote_result(1, 1, 0), VoteResult::Won);
    }
}
