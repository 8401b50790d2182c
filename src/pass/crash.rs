//! Named points where crash tests kill the process (`ISSUER_CRASH_AT=point`). Production never
//! sets it; the check is one comparison.

use std::str::FromStr;

/// A point in the mint path where a crash must lose nothing and duplicate nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The mint transaction is signed and stored, not broadcast.
    AfterSign,
    /// The mint transaction is broadcast; nothing else recorded.
    AfterBroadcast,
    /// The Deposit log was observed but the observation not yet recorded.
    AfterDepositSeen,
    /// A pass marked its first mint callbacks attempted; none has gone out.
    AfterCallbacksMarked,
    /// Alpaca answered the mint callback; the acknowledgement is not recorded.
    AfterCallback,
    /// Alpaca answered the redeem call; its request id is not recorded.
    AfterRedeemCall,
    /// A poll showed Alpaca completed the journal; not recorded.
    AfterJournalSeen,
    /// The burn transaction is broadcast; nothing else recorded.
    AfterBurnBroadcast,
    /// The burn's Withdraw log was observed but not recorded.
    AfterBurnSeen,
}

impl FromStr for CrashPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "after_sign" => Ok(Self::AfterSign),
            "after_broadcast" => Ok(Self::AfterBroadcast),
            "after_deposit_seen" => Ok(Self::AfterDepositSeen),
            "after_callbacks_marked" => Ok(Self::AfterCallbacksMarked),
            "after_callback" => Ok(Self::AfterCallback),
            "after_redeem_call" => Ok(Self::AfterRedeemCall),
            "after_journal_seen" => Ok(Self::AfterJournalSeen),
            "after_burn_broadcast" => Ok(Self::AfterBurnBroadcast),
            "after_burn_seen" => Ok(Self::AfterBurnSeen),
            other => Err(format!(
                "unknown crash point {other:?} (after_sign, after_broadcast, after_deposit_seen, after_callbacks_marked, after_callback, after_redeem_call, after_journal_seen, after_burn_broadcast, after_burn_seen)"
            )),
        }
    }
}

/// Set by in-process tests: a crash point panics (ending the task it runs in, as a kill ends the
/// process) instead of aborting the whole test binary.
static PANIC_INSTEAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every crash point in this process panic instead of abort (in-process tests only).
pub fn panic_at_crash_points() {
    PANIC_INSTEAD.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Aborts the process, as a kill would, if `at` is the configured point.
pub fn maybe_crash(configured: Option<CrashPoint>, at: CrashPoint) {
    if configured == Some(at) {
        assert!(
            !PANIC_INSTEAD.load(std::sync::atomic::Ordering::SeqCst),
            "crash point {at:?}"
        );
        eprintln!("ISSUER_CRASH_AT: aborting at {at:?}");
        std::process::abort();
    }
}
