//! What an answer of Alpaca's means for the call that got it: retry, adopt, wait or stop.
//!
//! Alpaca retries nothing for us and documents its refusals by cause (Broker API reference for
//! `callback/redeem` and `callback/mint`, changelog 2026-08-03 on `Idempotency-Key`). A refusal
//! that no retry can change must stop the item and show it to an operator, never be sent again
//! every pass.

use serde::{Deserialize, Serialize};

/// What to do after the redeem call got a final (non-2xx, non-5xx, non-429) answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedeemRefusal {
    /// Alpaca holds a request under our issuer_request_id (our earlier call went through, its
    /// answer was lost, or the request was replayed): adopt the one the lookup found.
    Adopt,
    /// Alpaca says the issuer_request_id is taken but the lookup does not show it yet (a 404 can
    /// be transient right after creation): ask again later, with backoff. Nothing may be
    /// returned meanwhile: Alpaca may still journal it.
    AskLater,
    /// A refusal no retry changes: the same key with another body, a missing or invalid field, a
    /// malformed key, the replay of a rejected request, or any other 4xx. Stop and flag.
    Stop,
}

/// Classifies a final refusal of the redeem call. `found`: the lookup by issuer_request_id made
/// right after the refusal shows the request.
pub fn redeem_refusal(status: u16, message: &str, found: bool) -> RedeemRefusal {
    if found {
        return RedeemRefusal::Adopt;
    }
    if status == 422 && says_issuer_request_id_taken(message) {
        RedeemRefusal::AskLater
    } else {
        RedeemRefusal::Stop
    }
}

/// Alpaca's 422 for a reused issuer_request_id names the field and says it exists. The other
/// 422 causes (a field missing or invalid, a key reused with another body) do not say both.
fn says_issuer_request_id_taken(message: &str) -> bool {
    let text = message.to_ascii_lowercase();
    let names_field = text.contains("issuer_request_id") || text.contains("issuer request id");
    let taken = ["already", "exists", "duplicate", "in use", "used"]
        .iter()
        .any(|w| text.contains(w));
    let other_cause = ["idempotency", "required", "missing", "invalid", "different"]
        .iter()
        .any(|w| text.contains(w));
    names_field && taken && !other_cause
}

/// What to do after a mint callback got a non-200 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackOutcome {
    /// No answer we can trust (transport failure, timeout, 5xx from a gateway that may answer
    /// after Alpaca acted): the next attempt asks Alpaca first.
    Ambiguous,
    /// Alpaca is busy (429): try again later, nothing happened.
    Later,
    /// Any other status: final. Stop and flag; only an operator starts it again.
    Refused,
}

/// Classifies a mint callback's answer status (anything but 200).
pub fn callback_outcome(status: u16) -> CallbackOutcome {
    match status {
        429 => CallbackOutcome::Later,
        500..=599 => CallbackOutcome::Ambiguous,
        _ => CallbackOutcome::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_alpaca_shows_is_adopted_whatever_the_refusal_said() {
        assert_eq!(redeem_refusal(422, "anything", true), RedeemRefusal::Adopt);
        assert_eq!(
            redeem_refusal(400, "replay of a rejected request", true),
            RedeemRefusal::Adopt
        );
    }

    #[test]
    fn a_taken_id_alpaca_cannot_show_yet_is_asked_again_later() {
        for message in [
            "issuer_request_id red-1-0 already exists",
            "Issuer request id is already used",
            "duplicate issuer_request_id",
        ] {
            assert_eq!(
                redeem_refusal(422, message, false),
                RedeemRefusal::AskLater,
                "{message}"
            );
        }
    }

    #[test]
    fn every_other_refusal_stops() {
        for (status, message) in [
            (422, "Idempotency-Key already used with a different body"),
            (422, "issuer_request_id is required"),
            (422, "invalid issuer_request_id"),
            (422, "qty has more than 9 decimals"),
            (400, "malformed Idempotency-Key"),
            (400, "replay of a rejected request"),
            (400, "issuer_request_id already exists"),
            (404, "not found"),
            (403, "forbidden"),
        ] {
            assert_eq!(
                redeem_refusal(status, message, false),
                RedeemRefusal::Stop,
                "{status} {message}"
            );
        }
    }

    #[test]
    fn callback_answers() {
        assert_eq!(callback_outcome(429), CallbackOutcome::Later);
        assert_eq!(callback_outcome(500), CallbackOutcome::Ambiguous);
        assert_eq!(callback_outcome(503), CallbackOutcome::Ambiguous);
        for status in [400, 401, 403, 404, 409, 422, 204, 302] {
            assert_eq!(
                callback_outcome(status),
                CallbackOutcome::Refused,
                "{status}"
            );
        }
    }
}
