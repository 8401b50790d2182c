//! Group commit: one thread owns writing. Each job runs inside the current batch's transaction;
//! the batch commits (two-phase, fsynced) and only then is every job in it answered. Under load
//! many jobs share one fsync; alone, a job waits for exactly one commit.
//!
//! After an I/O error (a full disk) redb refuses every later write until the database is
//! reopened. The writer thread does that itself ([`DbCell::recover`]): it closes the database and
//! opens the file again, which rolls back to the last commit (two-phase: a failed commit leaves
//! nothing half-written, and its callers were answered with the error, never with success). Until
//! a reopen succeeds, [`DbCell::broken`] says why and `/readyz` reports it.

use super::StoreError;
use redb::{Database, WriteTransaction};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How often a broken store tries to reopen while no write asks it to.
const RECOVER_EVERY: Duration = Duration::from_millis(500);
/// Longest wait for readers to let go of the database before a reopen (they hold it only while
/// beginning a read transaction).
const READERS_RELEASE_MAX: Duration = Duration::from_secs(2);

/// Opens the database file again (with the same backend and the schema checked).
pub type Reopen = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// The database, replaceable by a reopen, and why writes fail when they do.
pub struct DbCell {
    db: RwLock<Option<Arc<Database>>>,
    /// `Some(reason)` from a write's I/O error until a reopen succeeds.
    broken: Mutex<Option<String>>,
    reopen: Reopen,
}

impl DbCell {
    pub fn new(db: Database, reopen: Reopen) -> DbCell {
        DbCell {
            db: RwLock::new(Some(Arc::new(db))),
            broken: Mutex::new(None),
            reopen,
        }
    }

    /// The current database; an error while a failed reopen left none.
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                StoreError::Storage(format!(
                    "store unavailable: {}",
                    self.broken().unwrap_or_else(|| "reopening".into())
                ))
            })
    }

    /// Why writes fail, while they do.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn mark_broken(&self, reason: &str) {
        tracing::error!(error = %reason, "store: I/O error; writes fail until the file can be reopened");
        *self.broken.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
    }

    /// Closes the database and opens the file again. On success the store is writable again.
    fn recover(&self) {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut old) = slot.take() {
            let waited = Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        // Its error is the one we already know; closing releases the file lock.
                        let _ = db.close();
                        break;
                    }
                    Err(still_shared) if waited.elapsed() < READERS_RELEASE_MAX => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return;
                    }
                }
            }
        }
        match (self.reopen)() {
            Ok(db) => {
                *slot = Some(Arc::new(db));
                *self.broken.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!("store: reopened after an I/O error; writes work again");
            }
            Err(e) => {
                tracing::warn!(error = %e, "store: reopen failed; retrying");
                *self.broken.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(format!("cannot write: {e}"));
            }
        }
    }
}

/// Whether a failure means the file could not be written (and redb wants a reopen), as opposed
/// to a job refusing on its own terms.
fn is_io(detail: &str) -> bool {
    detail.contains("I/O") || detail.contains("store unavailable")
}

/// Most jobs in one transaction: bounds how long the first of them waits.
const JOBS_PER_COMMIT_MAX: usize = 512;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job that refused: its error's text, and the answer to its own caller (with its own error,
/// a record that does not decode is that, not "writer stopped"), sent once the store is marked
/// broken if the error was I/O.
type Failed = (String, Box<dyn FnOnce() + Send>);
/// A queued job: run in the batch's transaction, it yields what answers its caller once the
/// batch is durable, or fails the batch. The jobs before a failed one are answered with the
/// failure's text; those after it are dropped unrun (their callers see an error, never success).
type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<Completion, Failed> + Send>;

/// Wraps `job` with its answer: `send` gets the job's own error, or the batch's outcome after
/// the commit.
fn queued<R, F>(job: F, send: impl FnOnce(Result<R, StoreError>) + Send + 'static) -> Job
where
    R: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
{
    Box::new(move |txn| match job(txn) {
        Ok(value) => Ok(Box::new(move |committed: Result<(), StoreError>| {
            send(committed.map(|()| value));
        }) as Completion),
        Err(e) => {
            let detail = e.to_string();
            Err((detail, Box::new(move || send(Err(e)))))
        }
    })
}

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
    pub fn start(cell: Arc<DbCell>) -> Writer {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&cell, &rx))
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
        // A caller that stopped waiting is no one to answer.
        let boxed = queued(job, move |answer| {
            let _ = tx.send(answer);
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
        let boxed = queued(job, move |answer| {
            let _ = tx.send(answer);
        });
        let jobs = self.jobs.as_ref().ok_or(StoreError::WriterGone)?;
        jobs.send(boxed).map_err(|_| StoreError::WriterGone)?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }
}

fn run(cell: &DbCell, rx: &mpsc::Receiver<Job>) {
    loop {
        let first = if cell.broken().is_some() {
            match rx.recv_timeout(RECOVER_EVERY) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        };
        if cell.broken().is_some() {
            cell.recover();
        }
        let Some(first) = first else { continue };
        let mut batch = vec![first];
        while batch.len() < JOBS_PER_COMMIT_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(cell, batch);
    }
}

/// Runs `batch` in one transaction and commits it. An I/O failure marks the store broken before
/// any caller hears of it, so a `/readyz` asked after a failed write already reports it.
fn commit_batch(cell: &DbCell, batch: Vec<Job>) {
    let started = Instant::now();
    let writes = batch.len();
    let began = cell
        .get()
        .and_then(|db| db.begin_write().map_err(StoreError::from));
    let mut txn = match began {
        Ok(txn) => txn,
        Err(e) => {
            tracing::error!(error = %e, "store: cannot begin a write transaction");
            let detail = e.to_string();
            if is_io(&detail) {
                cell.mark_broken(&detail);
            }
            // Dropping the jobs drops their reply senders: callers see an error, never success.
            drop(batch);
            return;
        }
    };
    txn.set_two_phase_commit(true);
    let mut completions = Vec::with_capacity(batch.len());
    let mut failure: Option<Failed> = None;
    for job in batch {
        if failure.is_some() {
            // The transaction is abandoned: the rest are dropped unrun (their callers see an
            // error, never success).
            drop(job);
            continue;
        }
        match job(&txn) {
            Ok(done) => completions.push(done),
            Err(failed) => failure = Some(failed),
        }
    }
    let (outcome, failed_answer) = match failure {
        Some((detail, answer)) => {
            let _ = txn.abort();
            (Err(detail), Some(answer))
        }
        None => (txn.commit().map_err(|e| e.to_string()), None),
    };
    match &outcome {
        Ok(()) => {
            crate::metrics::metrics().store_committed(writes, started.elapsed().as_secs_f64());
        }
        Err(detail) => {
            tracing::error!(error = %detail, "store: batch not committed; its callers get an error");
            if is_io(detail) {
                cell.mark_broken(detail);
            }
        }
    }
    if let Some(answer) = failed_answer {
        answer();
    }
    for done in completions {
        done(outcome.clone().map_err(StoreError::Storage));
    }
}

#[cfg(test)]
mod tests {
    use super::{queued, Arc, DbCell, StoreError, Writer};
    use std::sync::mpsc;

    /// A job's own I/O error marks the store broken before its caller is answered: a `/readyz`
    /// asked right after the failed write already reports it. The answer is taken in the writer
    /// thread at the moment it is sent, so the order is checked, not a race.
    #[test]
    fn a_failed_write_marks_the_store_broken_before_its_caller_hears() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("broken.redb")).unwrap();
        let cell = Arc::new(DbCell::new(
            db,
            Box::new(|| Err(StoreError::Storage("not reopened in this test".into()))),
        ));
        let writer = Writer::start(cell.clone());
        let (heard, broken_when_heard) = mpsc::channel();
        let job = queued(
            |_| -> Result<(), StoreError> {
                Err(StoreError::Storage(
                    "I/O error: no space left on device".into(),
                ))
            },
            move |answer: Result<(), StoreError>| {
                let _ = heard.send((answer.is_err(), cell.broken()));
            },
        );
        writer.jobs.as_ref().unwrap().send(job).unwrap();
        let (failed, broken) = broken_when_heard.recv().unwrap();
        assert!(failed, "the caller hears of the failure");
        assert!(
            broken.is_some_and(|why| why.contains("no space left")),
            "the store was not marked broken when the caller heard"
        );
    }
}
