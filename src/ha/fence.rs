//! The fence: the check, against etcd itself, that this instance still leads, made right before
//! each transaction is signed and broadcast and before each Alpaca call with side effects.

use super::leader::Leadership;
use std::sync::Arc;
use std::time::Instant;

/// Why an action was not allowed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FenceError {
    /// This instance does not hold the lease (never won, or lost it since).
    #[error("fenced: this instance is not the leader")]
    NotLeader,
    /// The election key is gone or belongs to a newer term: another instance leads.
    #[error("fenced: leadership lost (election key now {0})")]
    Lost(String),
    /// etcd could not confirm the lease in time: acting would risk a second writer.
    #[error("fenced: etcd could not confirm the lease: {0}")]
    Unconfirmed(String),
}

/// Checks leadership before an outside effect. Cheap to clone. [`Fence::single`] (one instance,
/// no etcd) always passes without I/O.
#[derive(Clone, Default)]
pub struct Fence {
    /// The leadership and the term (the election key's create revision) this fence was made
    /// for: an Alpaca job submitted in one term never acts in a later one of the same instance.
    leadership: Option<(Arc<Leadership>, i64)>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.leadership {
            None => f.write_str("Fence(single instance)"),
            Some((l, term)) => write!(f, "Fence({} term {term})", l.instance()),
        }
    }
}

impl Fence {
    /// The single-instance fence: always passes.
    pub fn single() -> Self {
        Fence::default()
    }

    pub(super) fn leading(leadership: Arc<Leadership>, term: i64) -> Self {
        Fence {
            leadership: Some((leadership, term)),
        }
    }

    /// Whether this is an HA fence (then unknown pending transactions are waited out too).
    pub fn is_ha(&self) -> bool {
        self.leadership.is_some()
    }

    /// Local and cheap, for action boundaries: `false` once the lease is known lost or its last
    /// renewal is too old. Never enough on its own before an effect: see [`Fence::check`].
    pub fn holds(&self) -> bool {
        self.leadership.as_ref().is_none_or(|(l, term)| {
            l.term_if_valid(Instant::now())
                .is_some_and(|t| t.create_revision == *term)
        })
    }

    /// Passes only if etcd confirms, now, that the election key still carries this instance's
    /// name at the create revision it won it with, within a renewed lease. `what` names the
    /// effect (a transaction hash, a callback) in the log line each pass writes: those lines are
    /// how the failover drill proves that only the lease holder acted.
    pub async fn check(&self, what: &str) -> Result<(), FenceError> {
        match &self.leadership {
            None => Ok(()),
            Some((l, term)) => l.confirm(*term, what).await,
        }
    }
}
