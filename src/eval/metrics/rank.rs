//! Orderings with ties, shared by the rank-based metrics.

/// Indices of `values` from smallest to largest; equal values keep their index order.
pub(super) fn ascending(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    order
}

/// An `ascending` order cut into runs of equal values (iterate it `.rev()` for largest first).
pub(super) fn tie_runs<'a>(values: &'a [f64], order: &'a [usize]) -> impl DoubleEndedIterator<Item = &'a [usize]> {
    order.chunk_by(move |&i, &j| values[i] == values[j])
}

/// 1-based ascending ranks, each run of ties given the mean of the ranks it spans.
pub(super) fn average_ranks(values: &[f64]) -> Vec<f64> {
    let order = ascending(values);
    let mut ranks = vec![0.0; values.len()];
    let mut below = 0;
    for run in tie_runs(values, &order) {
        // The run spans ranks below+1 ..= below+len.
        let rank = below as f64 + (run.len() as f64 + 1.0) / 2.0;
        run.iter().for_each(|&i| ranks[i] = rank);
        below += run.len();
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_share_their_mean_rank() {
        assert_eq!(average_ranks(&[3.0, 1.0, 2.0]), [3.0, 1.0, 2.0]);
        assert_eq!(average_ranks(&[5.0, 1.0, 5.0, 5.0, 0.0]), [4.0, 2.0, 4.0, 4.0, 1.0]);
        assert_eq!(average_ranks(&[7.0; 4]), [2.5; 4]);
        assert!(average_ranks(&[]).is_empty());
    }

    #[test]
    fn runs_group_equal_values_in_order() {
        let values = [2.0, 1.0, 2.0, 0.5];
        let order = ascending(&values);
        assert_eq!(order, [3, 1, 0, 2]);
        let runs: Vec<&[usize]> = tie_runs(&values, &order).rev().collect();
        assert_eq!(runs, [&[0, 2][..], &[1], &[3]]);
    }
}
