//! Data parallelism with a fixed reduction order: a mini-batch is cut into one contiguous shard per
//! worker, and results come back in shard order whichever thread finishes first. For a given thread
//! count the arithmetic is therefore the same on every run; a different thread count cuts the batch
//! differently, so sums round differently and results may differ in the last bits.

use super::graph_exec::Workspace;

/// Runs `work` on contiguous shards of `rows`, one per workspace (fewer when there are fewer rows),
/// the first on the calling thread and the others on scoped threads. Results are in shard order.
pub(crate) fn shards<R: Send>(
    workspaces: &mut [Workspace],
    rows: &[usize],
    work: impl Fn(&mut Workspace, &[usize]) -> R + Sync,
) -> Vec<R> {
    let k = workspaces.len().min(rows.len());
    let Some((first, others)) = workspaces[..k].split_first_mut() else { return Vec::new() };
    let bounds = |s: usize| s * rows.len() / k;
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter_mut()
            .enumerate()
            .map(|(s, ws)| {
                let part = &rows[bounds(s + 1)..bounds(s + 2)];
                scope.spawn(move || work(ws, part))
            })
            .collect();
        let mut results = vec![work(first, &rows[..bounds(1)])];
        results.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))));
        results
    })
}
