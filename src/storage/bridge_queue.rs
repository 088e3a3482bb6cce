//! Handing several writes to the group-commit writer at once, through its bounded queue.
//!
//! The writer's queue (`OPENCHAT_STORAGE_QUEUE` places) is the bound on writes waiting for the
//! database. The authority hands it the records of one wake-up together, so that they share a
//! transaction and keep their order; it must never wait inside its loop, and it must not lose a
//! write either. So there are two ways in: [`Storage::try_write_each`] takes room for all the
//! ops at once or, when there is not enough, gives them back untouched (the caller then waits
//! on a task of its own with [`Storage::queue_writes`] and stops taking commands meanwhile);
//! [`Storage::queue_writes`] waits for the room. Either way the ops enter the queue together,
//! in order, or not at all, and each gets its answer through [`Writes`].

use std::future::Future;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{self, PermitIterator};
use tokio::sync::oneshot;

use super::group_commit::PendingWrite;
use super::{Storage, StorageError, WriteOp, WriteOutcome};

/// Writes handed to the writer; [`Writes::outcomes`] waits for their commits.
#[must_use = "the writes are queued; await `outcomes` to learn whether they committed"]
pub struct Writes {
    /// One per op, in order; `None` when the bridge had stopped before the op was queued.
    answers: Vec<Option<oneshot::Receiver<Result<WriteOutcome, StorageError>>>>,
}

impl Writes {
    /// One result per op, in order, once each op's transaction ended.
    pub async fn outcomes(self) -> Vec<Result<WriteOutcome, StorageError>> {
        let mut results = Vec::with_capacity(self.answers.len());
        for answer in self.answers {
            results.push(match answer {
                Some(answer) => answer
                    .await
                    .unwrap_or_else(|_| Err(StorageError::bridge_stopped())),
                None => Err(StorageError::bridge_stopped()),
            });
        }
        results
    }

    /// How many ops these are.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    fn stopped(&mut self, ops: usize) {
        self.answers.extend((0..ops).map(|_| None));
    }

    fn send(&mut self, permits: PermitIterator<'_, PendingWrite>, ops: Vec<WriteOp>) {
        for (permit, op) in permits.zip(ops) {
            let (reply, answer) = oneshot::channel();
            permit.send(PendingWrite { op, reply });
            self.answers.push(Some(answer));
        }
    }
}

/// Takes room for every op of `ops` in `queue` without waiting, or gives `ops` back when the
/// queue has not that much room (or could never hold them all at once).
fn try_queue(
    queue: &mpsc::Sender<PendingWrite>,
    ops: Vec<WriteOp>,
) -> Result<Writes, Vec<WriteOp>> {
    let mut writes = Writes {
        answers: Vec::with_capacity(ops.len()),
    };
    if ops.is_empty() {
        return Ok(writes);
    }
    if ops.len() > queue.max_capacity() {
        return Err(ops);
    }
    match queue.try_reserve_many(ops.len()) {
        Ok(permits) => writes.send(permits, ops),
        Err(TrySendError::Full(())) => return Err(ops),
        Err(TrySendError::Closed(())) => writes.stopped(ops.len()),
    }
    Ok(writes)
}

/// Waits for room for `ops` in `queue` and queues them in order: all at once when they fit in
/// the queue at all, else in pieces of the queue's capacity.
async fn queue(queue: &mpsc::Sender<PendingWrite>, ops: Vec<WriteOp>) -> Writes {
    let mut writes = Writes {
        answers: Vec::with_capacity(ops.len()),
    };
    let mut ops = ops.into_iter();
    loop {
        let piece: Vec<WriteOp> = ops.by_ref().take(queue.max_capacity()).collect();
        if piece.is_empty() {
            return writes;
        }
        match queue.reserve_many(piece.len()).await {
            Ok(permits) => writes.send(permits, piece),
            Err(_) => writes.stopped(piece.len()),
        }
    }
}

impl Storage {
    /// Queues every op of `ops` for the group commit at once, in order, if the write queue has
    /// room for all of them now (so they share a transaction unless the batch is full, and are
    /// committed in this order either way); gives them back untouched when it has not. An op
    /// the database refuses fails alone (see `group_commit`).
    pub fn try_write_each(&self, ops: Vec<WriteOp>) -> Result<Writes, Vec<WriteOp>> {
        try_queue(&self.writes, ops)
    }

    /// Like [`Storage::try_write_each`], but waits for the room.
    pub async fn queue_writes(&self, ops: Vec<WriteOp>) -> Writes {
        queue(&self.writes, ops).await
    }

    /// Queues every op of `ops` when first polled (waiting for room) and resolves to one result
    /// per op, in order.
    pub fn write_each(
        &self,
        ops: Vec<WriteOp>,
    ) -> impl Future<Output = Vec<Result<WriteOutcome, StorageError>>> + use<> {
        let writes = self.writes.clone();
        async move { queue(&writes, ops).await.outcomes().await }
    }

    /// Places in the write queue (`OPENCHAT_STORAGE_QUEUE`): the most writes
    /// [`Storage::try_write_each`] can ever take at once.
    pub fn write_queue_size(&self) -> usize {
        self.writes.max_capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> WriteOp {
        WriteOp::PutMeta {
            key: key.to_owned(),
            value: "v".to_owned(),
        }
    }

    fn keys(queued: &mut mpsc::Receiver<PendingWrite>) -> Vec<String> {
        let mut keys = Vec::new();
        while let Ok(write) = queued.try_recv() {
            match write.op {
                WriteOp::PutMeta { key, .. } => keys.push(key),
                other => panic!("unexpected {other:?}"),
            }
            let _ = write.reply.send(Ok(WriteOutcome::Done));
        }
        keys
    }

    #[test]
    fn ops_that_fit_are_queued_together_and_in_order() {
        let (tx, mut rx) = mpsc::channel(4);
        let writes = try_queue(&tx, vec![put("a"), put("b"), put("c")])
            .ok()
            .unwrap();
        assert_eq!(writes.len(), 3);
        assert_eq!(keys(&mut rx), ["a", "b", "c"]);
        let outcomes = futures_lite::future::block_on(writes.outcomes());
        assert_eq!(outcomes, vec![Ok(WriteOutcome::Done); 3]);
    }

    #[test]
    fn ops_that_do_not_all_fit_are_given_back_and_none_is_queued() {
        let (tx, mut rx) = mpsc::channel(4);
        let _first = try_queue(&tx, vec![put("a"), put("b")]).ok().unwrap();
        let refused = try_queue(&tx, vec![put("c"), put("d"), put("e")])
            .err()
            .unwrap();
        assert_eq!(refused, vec![put("c"), put("d"), put("e")]);
        // More than the queue could ever hold is refused as well, even when it is empty.
        assert_eq!(keys(&mut rx), ["a", "b"]);
        assert!(try_queue(&tx, (0..5).map(|i| put(&i.to_string())).collect()).is_err());
        assert!(keys(&mut rx).is_empty());
    }

    #[test]
    fn waiting_for_room_queues_once_the_writer_took_the_earlier_ops() {
        let (tx, mut rx) = mpsc::channel(2);
        let _first = try_queue(&tx, vec![put("a"), put("b")]).ok().unwrap();
        let mut waiting = Box::pin(queue(&tx, vec![put("c"), put("d")]));
        let early = futures_lite::future::block_on(futures_lite::future::poll_once(&mut waiting));
        assert!(early.is_none(), "queued without room");
        assert_eq!(keys(&mut rx), ["a", "b"]);
        let writes = futures_lite::future::block_on(waiting);
        assert_eq!(writes.len(), 2);
        assert_eq!(keys(&mut rx), ["c", "d"]);
    }

    #[test]
    fn more_ops_than_the_queue_holds_go_in_pieces_in_order() {
        let (tx, mut rx) = mpsc::channel::<PendingWrite>(2);
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some(write) = rx.blocking_recv() {
                if let WriteOp::PutMeta { key, .. } = write.op {
                    seen.push(key);
                }
                let _ = write.reply.send(Ok(WriteOutcome::Done));
            }
            seen
        });
        let ops: Vec<WriteOp> = (0..5).map(|i| put(&i.to_string())).collect();
        let outcomes =
            futures_lite::future::block_on(async { queue(&tx, ops).await.outcomes().await });
        drop(tx);
        assert_eq!(outcomes, vec![Ok(WriteOutcome::Done); 5]);
        assert_eq!(reader.join().unwrap(), ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn a_full_read_queue_is_overloaded_at_once() {
        let (commands, mut inbox) = mpsc::channel(1);
        let (writes, _writes) = mpsc::channel(1);
        let storage = Storage {
            commands,
            writes,
            engine: "test",
            stats: Default::default(),
        };
        let mut first = Box::pin(storage.ping());
        let early = futures_lite::future::block_on(futures_lite::future::poll_once(&mut first));
        assert!(early.is_none(), "the first ping is queued and waits");
        assert_eq!(
            futures_lite::future::block_on(storage.ping()),
            Err(StorageError::Overloaded)
        );
        assert!(inbox.try_recv().is_ok());
        assert!(inbox.try_recv().is_err(), "the refused ping was not queued");
    }

    #[test]
    fn a_stopped_writer_answers_every_op_with_bridge_stopped() {
        let (tx, rx) = mpsc::channel(4);
        drop(rx);
        let writes = try_queue(&tx, vec![put("a"), put("b")]).ok().unwrap();
        let outcomes = futures_lite::future::block_on(writes.outcomes());
        assert_eq!(outcomes, vec![Err(StorageError::bridge_stopped()); 2]);
    }
}
