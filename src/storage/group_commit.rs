//! Group commit: the single writer task and its failure policy.
//!
//! The writer waits for one write, then takes every write already queued (up to
//! [`MAX_WRITE_BATCH`]) and commits them in one transaction, so a burst of writes costs one
//! round of fsyncs instead of one per write. While that commit is in flight, new writes queue up
//! and become the next batch; nobody waits for a timer to fill a batch. Replies go out only after
//! COMMIT returned: an `Ok` is a durable write.
//!
//! When a batch fails, [`commit_batch`] decides what each write is told:
//! - the database is unavailable (connection lost, pool timeout, command timeout): every write in
//!   the batch gets `Unavailable` — retrying op by op would only multiply the wait;
//! - anything else (one op broke a constraint, say): each op is retried in its own transaction,
//!   so one bad op cannot fail its neighbours.
//!
//! A batch that times out is reported `Unavailable` even though its COMMIT may have reached the
//! database just before the deadline: the outcome is unknown, and "retry later" is the honest
//! answer. So a `WriteOp` must be safe to repeat: `PutMeta` overwrites with the same value, a
//! repeated `InsertMetaIfAbsent` answers `Existing` with its own value, an `Apply` consists of
//! upserts and inserts-if-absent keyed by entity ids, and new variants should keep that property
//! (for example by carrying a client-chosen id). The op-by-op retry works on whole ops, so an
//! `Apply` is still all-or-nothing when its batch is split.
//!
//! `commit_batch` only sees a "commit these ops" function, so the policy is tested without a
//! database.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::engine::Database;
use super::{
    COMMAND_TIMEOUT, MAX_WRITE_BATCH, Reply, StatsCounters, StorageError, WriteOp, WriteOutcome,
};

/// A write waiting in the writer's queue.
pub(super) struct PendingWrite {
    pub(super) op: WriteOp,
    pub(super) reply: Reply<WriteOutcome>,
}

/// Runs until `queue` is closed and empty: the stop signal closes it, and what it still holds is
/// committed, which is how shutdown drains the last batch. The queue is bounded
/// (`OPENCHAT_STORAGE_QUEUE`): while a batch commits, at most that many writes wait behind it.
pub(super) async fn run_writer(
    database: Database,
    mut queue: mpsc::Receiver<PendingWrite>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<StatsCounters>,
) {
    let mut batch = Vec::with_capacity(MAX_WRITE_BATCH);
    let mut stopping = false;
    loop {
        let taken = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                // Writes already in the queue are still delivered after `close`.
                queue.close();
                stopping = true;
                continue;
            }
            taken = queue.recv_many(&mut batch, MAX_WRITE_BATCH) => taken,
        };
        if taken == 0 {
            break;
        }
        // Writes whose caller has gone away are still applied: the caller asked for them and
        // cannot know whether they happened either way, so doing them is the least surprising.
        let (ops, replies): (Vec<WriteOp>, Vec<Reply<WriteOutcome>>) =
            batch.drain(..).map(|w| (w.op, w.reply)).unzip();
        // One deadline for the batch *including* any op-by-op retries, so a write waits at most
        // for the batch ahead of it plus its own: 2 × COMMAND_TIMEOUT.
        let started = tokio::time::Instant::now();
        let deadline = started + COMMAND_TIMEOUT;
        let results = commit_batch(&ops, async |ops: &[WriteOp]| {
            tokio::time::timeout_at(deadline, database.commit(ops))
                .await
                .unwrap_or_else(|_| Err(StorageError::timed_out()))
        })
        .await;
        let committed = results.iter().filter(|r| r.is_ok()).count();
        stats.record_batch(ops.len(), committed, started.elapsed());
        for (reply, result) in replies.into_iter().zip(results) {
            // A closed receiver means the caller stopped waiting; the result has nowhere to go.
            let _ = reply.send(result);
        }
    }
}

/// Commits `ops` together, falling back to one transaction per op after a failure that is not
/// the database's unavailability. Returns exactly one result per op, in order.
pub(super) async fn commit_batch<F>(
    ops: &[WriteOp],
    mut commit: F,
) -> Vec<Result<WriteOutcome, StorageError>>
where
    F: AsyncFnMut(&[WriteOp]) -> Result<Vec<WriteOutcome>, StorageError>,
{
    let batch_error = match commit(ops).await {
        Ok(outcomes) => return checked(outcomes, ops.len()),
        Err(error) => error,
    };
    if batch_error.is_retryable() || ops.len() == 1 {
        return vec![Err(batch_error); ops.len()];
    }
    tracing::debug!(error = %batch_error, size = ops.len(), "batch failed, retrying op by op");

    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match commit(std::slice::from_ref(op)).await {
            Ok(outcomes) => checked(outcomes, 1).remove(0),
            Err(error) => Err(error),
        };
        if let Err(error) = &result
            && error.is_retryable()
        {
            // The database went away mid-retry; the remaining ops would only time out too.
            results.resize(ops.len(), Err(error.clone()));
            break;
        }
        results.push(result);
    }
    results
}

/// Turns a commit's outcomes into per-op results, guarding against an engine returning the
/// wrong count (which would misroute replies to the wrong callers).
fn checked(
    outcomes: Vec<WriteOutcome>,
    expected: usize,
) -> Vec<Result<WriteOutcome, StorageError>> {
    if outcomes.len() == expected {
        outcomes.into_iter().map(Ok).collect()
    } else {
        let error = StorageError::Internal(format!(
            "engine returned {} outcomes for {expected} writes",
            outcomes.len()
        ));
        vec![Err(error); expected]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::Record;

    fn put(key: &str) -> WriteOp {
        WriteOp::PutMeta {
            key: key.to_owned(),
            value: "v".to_owned(),
        }
    }

    fn key_of(op: &WriteOp) -> &str {
        match op {
            WriteOp::PutMeta { key, .. } | WriteOp::InsertMetaIfAbsent { key, .. } => key,
            WriteOp::Apply(records) => match records.first() {
                Some(Record::DeleteCategory { id }) => id,
                _ => "apply",
            },
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A fake engine: fails any transaction containing a key starting with `bad`, fails
    /// everything with `Unavailable` once `down_after` transactions have been attempted.
    struct FakeEngine {
        transactions: Vec<Vec<String>>,
        down_after: usize,
    }

    impl FakeEngine {
        fn new() -> FakeEngine {
            FakeEngine {
                transactions: Vec::new(),
                down_after: usize::MAX,
            }
        }

        fn commit(&mut self, ops: &[WriteOp]) -> Result<Vec<WriteOutcome>, StorageError> {
            self.transactions
                .push(ops.iter().map(|op| key_of(op).to_owned()).collect());
            if self.transactions.len() > self.down_after {
                return Err(StorageError::Unavailable("connection reset".into()));
            }
            if ops.iter().any(|op| key_of(op).starts_with("bad")) {
                return Err(StorageError::Conflict("bad op".into()));
            }
            Ok(vec![WriteOutcome::Done; ops.len()])
        }
    }

    fn run(engine: &mut FakeEngine, ops: &[WriteOp]) -> Vec<Result<WriteOutcome, StorageError>> {
        block_on(commit_batch(ops, async |ops: &[WriteOp]| {
            engine.commit(ops)
        }))
    }

    #[test]
    fn healthy_batch_commits_in_one_transaction() {
        let mut engine = FakeEngine::new();
        let results = run(&mut engine, &[put("a"), put("b"), put("c")]);
        assert_eq!(results, vec![Ok(WriteOutcome::Done); 3]);
        assert_eq!(engine.transactions, vec![vec!["a", "b", "c"]]);
    }

    #[test]
    fn one_bad_op_does_not_fail_its_neighbours() {
        let mut engine = FakeEngine::new();
        let results = run(&mut engine, &[put("a"), put("bad"), put("c")]);
        assert_eq!(
            results,
            vec![
                Ok(WriteOutcome::Done),
                Err(StorageError::Conflict("bad op".into())),
                Ok(WriteOutcome::Done),
            ]
        );
        assert_eq!(
            engine.transactions,
            vec![vec!["a", "bad", "c"], vec!["a"], vec!["bad"], vec!["c"]]
        );
    }

    #[test]
    fn failing_apply_is_retried_alone_and_its_neighbours_commit() {
        let apply = |id: &str| WriteOp::Apply(vec![Record::DeleteCategory { id: id.to_owned() }]);
        let mut engine = FakeEngine::new();
        let results = run(&mut engine, &[apply("a"), apply("bad"), put("c")]);
        assert_eq!(
            results,
            vec![
                Ok(WriteOutcome::Done),
                Err(StorageError::Conflict("bad op".into())),
                Ok(WriteOutcome::Done),
            ]
        );
        assert_eq!(
            engine.transactions,
            vec![vec!["a", "bad", "c"], vec!["a"], vec!["bad"], vec!["c"]]
        );
    }

    #[test]
    fn unavailable_database_fails_the_whole_batch_without_retries() {
        let mut engine = FakeEngine::new();
        engine.down_after = 0;
        let results = run(&mut engine, &[put("a"), put("b")]);
        assert_eq!(
            results,
            vec![Err(StorageError::Unavailable("connection reset".into())); 2]
        );
        assert_eq!(engine.transactions.len(), 1);
    }

    #[test]
    fn database_lost_during_retries_fails_the_rest_as_unavailable() {
        let mut engine = FakeEngine::new();
        engine.down_after = 2; // the batch and the first single retry get through
        let results = run(&mut engine, &[put("a"), put("bad"), put("c"), put("d")]);
        let unavailable = Err(StorageError::Unavailable("connection reset".into()));
        assert_eq!(
            results,
            vec![
                Ok(WriteOutcome::Done),
                unavailable.clone(),
                unavailable.clone(),
                unavailable
            ]
        );
        assert_eq!(engine.transactions.len(), 3);
    }

    #[test]
    fn single_failing_op_is_not_retried() {
        let mut engine = FakeEngine::new();
        let results = run(&mut engine, &[put("bad")]);
        assert_eq!(results, vec![Err(StorageError::Conflict("bad op".into()))]);
        assert_eq!(engine.transactions.len(), 1);
    }

    #[test]
    fn wrong_outcome_count_is_an_internal_error_for_every_op() {
        let results = block_on(commit_batch(
            &[put("a"), put("b")],
            async |_: &[WriteOp]| Ok(vec![WriteOutcome::Done]),
        ));
        assert_eq!(results.len(), 2);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(StorageError::Internal(_))))
        );
    }
}
