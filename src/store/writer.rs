//! Group commit: one thread owns writing. Each job runs inside the current batch's transaction;
//! the batch commits (two-phase, fsynced) and only then is every job in it answered. Under load
//! many jobs share one fsync; alone, a job waits for exactly one commit.

use super::StoreError;
use redb::{Database, WriteTransaction};
use std::sync::mpsc;
use std::sync::Arc;

/// Most jobs in one transaction: bounds how long the first of them waits.
const JOBS_PER_COMMIT_MAX: usize = 512;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<Completion, StoreError> + Send>;

/// Handle to the writer thread. Dropping it lets queued jobs finish, then joins the thread, so
/// the database file is closed when the last store handle is gone (a reopen right after works).
pub struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    pub fn start(db: Arc<Database>) -> Writer {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&db, &rx))
            .map_err(|e| {
                // Without the thread every write fails with WriterGone: loud, never silent.
                tracing::error!(error = %e, "cannot start the store writer thread");
            })
            .ok();
        Writer {
            jobs: Some(jobs),
            thread,
        }
    }

    /// Queues `job` for the next batch without blocking: the receiver yields its result once the
    /// batch is durable. For async callers, which must not park a thread on a commit.
    pub fn submit<R, F>(&self, job: F) -> futures::channel::oneshot::Receiver<Result<R, StoreError>>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = futures::channel::oneshot::channel::<Result<R, StoreError>>();
        let boxed: Job = Box::new(move |txn| {
            let value = job(txn)?;
            Ok(Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.map(|()| value));
            }) as Completion)
        });
        if let Some(jobs) = self.jobs.as_ref() {
            // A closed channel drops the job and with it the sender: the receiver sees Canceled.
            let _ = jobs.send(boxed);
        }
        rx
    }

    /// Runs `job` in the next batch and returns its result once the batch is durable.
    /// A job must check before it writes: an `Err` from it aborts the whole batch.
    pub fn write<R, F>(&self, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<Result<R, StoreError>>(1);
        let boxed: Job = Box::new(move |txn| {
            let value = job(txn)?;
            Ok(Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.map(|()| value));
            }) as Completion)
        });
        let jobs = self.jobs.as_ref().ok_or(StoreError::WriterGone)?;
        jobs.send(boxed).map_err(|_| StoreError::WriterGone)?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < JOBS_PER_COMMIT_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(db, batch);
    }
}

fn commit_batch(db: &Database, batch: Vec<Job>) {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            tracing::error!(error = %e, "store: cannot begin a write transaction");
            // Dropping the jobs drops their reply senders: callers see WriterGone-free errors.
            drop(batch);
            return;
        }
    };
    txn.set_two_phase_commit(true);
    let mut completions = Vec::with_capacity(batch.len());
    let mut failure = None;
    for job in batch {
        if failure.is_some() {
            // The transaction is abandoned: the remaining jobs are answered with the failure.
            drop(job);
            continue;
        }
        match job(&txn) {
            Ok(done) => completions.push(done),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    let outcome = match failure {
        Some(detail) => {
            let _ = txn.abort();
            Err(detail)
        }
        None => txn.commit().map_err(|e| e.to_string()),
    };
    if let Err(detail) = &outcome {
        tracing::error!(error = %detail, "store: batch not committed; its callers get an error");
    }
    for done in completions {
        done(outcome.clone().map_err(StoreError::Storage));
    }
}
