//! The controller's assignments (`spec.assignments`, untrusted input: the schema bounds
//! them, this checks them again) and the answers kept for them (`status.answers`).
//!
//! An assignment older than the pre-flight cache TTL is ignored (the controller gave up
//! on it); one this agent will not check is answered `refused` with the reason; the rest
//! go through [`OnDemand`] (its permits, cache, in-flight sharing and rate limit).
//! Answers are kept for the same TTL, at most [`MAX_ANSWERS`], oldest dropped first.

use std::time::{Duration, SystemTime};

use crate::agent::conditions::Clock;
use crate::agent::export::status::rfc3339;
use crate::agent::ondemand::{ImageResult, OnDemand, PreflightRequest, RequestDepth, RequestError};
use crate::agent::outcome::degraded;
use crate::api::{Answer, Assignment, AssignmentDepth, ImageAnswer};

use super::build::{image_cell, path_cell, state_word};

/// Answers kept at most (the schema's bound).
pub const MAX_ANSWERS: usize = 64;
/// Longest assignment id answered (the schema's bound).
pub const MAX_ID_LEN: usize = 128;

/// What to do with one assignment.
#[derive(Debug)]
pub enum Triage {
    /// Not answered: too old, or no id an answer could carry back.
    Ignore,
    /// Answered without a check, with the reason.
    Refuse(String),
    /// Checked.
    Check(PreflightRequest),
}

/// Decide what to do with `a` at `now`: ignored when `issuedAt` is more than `ttl` away
/// from now (either way: a clock far ahead would keep it answerable for ever), refused
/// when it asks what this agent will not do or breaks a bound or a name rule.
pub fn triage(
    a: &Assignment,
    now: SystemTime,
    ttl: Duration,
    max_images: usize,
    reads_secrets: bool,
) -> Triage {
    let id_ok =
        !a.id.is_empty() && a.id.len() <= MAX_ID_LEN && a.id.bytes().all(|b| b.is_ascii_graphic());
    if !id_ok {
        return Triage::Ignore;
    }
    let Ok(issued) = a.issued_at.parse::<jiff::Timestamp>() else {
        return Triage::Refuse("issuedAt is not an RFC 3339 time".into());
    };
    let Ok(now_ts) = jiff::Timestamp::try_from(now) else {
        return Triage::Ignore;
    };
    let age = now_ts.duration_since(issued).unsigned_abs();
    if age > ttl {
        return Triage::Ignore;
    }
    if !a.pull_secrets.is_empty() && !reads_secrets {
        return Triage::Refuse(
            "this agent does not read Secrets (pull_secrets: false): the pull secrets named cannot be used, so the kubelet's answer cannot be told".into(),
        );
    }
    let req = PreflightRequest {
        images: a.images.clone(),
        depth: match a.depth {
            AssignmentDepth::Path => RequestDepth::Path,
            AssignmentDepth::Image => RequestDepth::Image,
        },
        namespace: Some(a.namespace.clone()).filter(|n| !n.is_empty()),
        pull_secrets: a.pull_secrets.clone(),
        service_account: a.service_account.clone(),
    };
    match crate::agent::ondemand::validate_request(&req, max_images) {
        Ok(()) => Triage::Check(req),
        Err(e) => Triage::Refuse(e.to_string()),
    }
}

fn answer_of(a: &Assignment, now: SystemTime) -> Answer {
    Answer {
        id: a.id.clone(),
        depth: a.depth,
        answered_at: rfc3339(now),
        ..Answer::default()
    }
}

/// A refusal of `a`.
pub fn refused(a: &Assignment, why: String, now: SystemTime) -> Answer {
    Answer {
        refused: Some(crate::redact::text_max(&why, 1000)),
        ..answer_of(a, now)
    }
}

/// One image's answer: its path state, and the cell (of the path for a `Path`
/// assignment, of the image for an `Image` one).
fn image_answer(r: &ImageResult, depth: AssignmentDepth) -> ImageAnswer {
    let d = degraded(r.path_state, &r.report.attempts);
    let mut cell = match depth {
        AssignmentDepth::Path => path_cell(r.path_state, &r.report),
        AssignmentDepth::Image => image_cell(&r.report),
    };
    cell.source = serde_json::to_value(r.source)
        .ok()
        .and_then(|v| v.as_str().map(String::from));
    ImageAnswer {
        image: r.image.clone(),
        fingerprint: r.fingerprint.clone(),
        path_state: state_word(r.path_state, d).to_string(),
        cell,
    }
}

/// Check `req` for `a`; `None` when it should be tried again later (rate limited, no
/// pull path loaded yet).
pub async fn check(
    od: &OnDemand,
    a: &Assignment,
    req: &PreflightRequest,
    clock: &dyn Clock,
) -> Option<Answer> {
    match od.answer_request(req).await {
        Ok(reply) => Some(Answer {
            pull_secrets_note: crate::redact::text_max(&reply.pull_secrets.note, 1000),
            results: reply
                .results
                .iter()
                .map(|r| image_answer(r, a.depth))
                .collect(),
            ..answer_of(a, clock.now())
        }),
        Err(RequestError::RateLimited | RequestError::NotReady) => None,
        Err(e) => Some(refused(a, e.to_string(), clock.now())),
    }
}

/// The answers kept, oldest first.
#[derive(Debug, Default)]
pub struct Book {
    answers: Vec<(Answer, SystemTime)>,
}

impl Book {
    pub fn answered(&self, id: &str) -> bool {
        self.answers.iter().any(|(a, _)| a.id == id)
    }

    /// Keep `a` (replacing an answer with its id), dropping the oldest beyond
    /// [`MAX_ANSWERS`].
    pub fn push(&mut self, a: Answer, now: SystemTime) {
        self.answers.retain(|(x, _)| x.id != a.id);
        self.answers.push((a, now));
        let over = self.answers.len().saturating_sub(MAX_ANSWERS);
        self.answers.drain(..over);
    }

    /// Forget answers older than `ttl`.
    pub fn expire(&mut self, now: SystemTime, ttl: Duration) {
        self.answers
            .retain(|(_, at)| now.duration_since(*at).map_or(true, |age| age <= ttl));
    }

    pub fn list(&self) -> Vec<Answer> {
        self.answers.iter().map(|(a, _)| a.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(id: &str, issued: SystemTime) -> Assignment {
        Assignment {
            id: id.into(),
            depth: AssignmentDepth::Image,
            images: vec!["reg.example/app:1".into()],
            namespace: "apps".into(),
            issued_at: rfc3339(issued),
            ..Assignment::default()
        }
    }

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn old_or_future_or_nameless_assignments_are_ignored() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = |a: &Assignment| triage(a, now, TTL, 100, true);
        assert!(matches!(t(&assignment("a", now)), Triage::Check(_)));
        let old = assignment("a", now - Duration::from_secs(31));
        assert!(matches!(t(&old), Triage::Ignore));
        let ahead = assignment("a", now + Duration::from_secs(3600));
        assert!(matches!(t(&ahead), Triage::Ignore));
        for id in ["", "with space", &"x".repeat(129)] {
            assert!(matches!(t(&assignment(id, now)), Triage::Ignore), "{id:?}");
        }
        let mut garbled = assignment("a", now);
        garbled.issued_at = "yesterday s3cret".into();
        let Triage::Refuse(why) = t(&garbled) else {
            panic!("refused")
        };
        assert!(!why.contains("s3cret"), "{why}");
    }

    #[test]
    fn untrusted_fields_are_checked_with_the_request_rules() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let refuse = |a: &Assignment, secrets: bool| match triage(a, now, TTL, 2, secrets) {
            Triage::Refuse(why) => why,
            other => panic!("{other:?}"),
        };
        let mut a = assignment("a", now);
        a.images = vec!["x/y:1".into(); 3];
        assert!(refuse(&a, true).contains("at most 2 images"));
        let mut a = assignment("a", now);
        a.images = vec!["r/".to_string() + &"a".repeat(600)];
        assert!(refuse(&a, true).contains("longer than 512"));
        let mut a = assignment("a", now);
        a.pull_secrets = vec!["Not_A_Name".into()];
        assert!(refuse(&a, true).contains("pull_secrets[0]"));
        let mut a = assignment("a", now);
        a.namespace = "Bad NS".into();
        assert!(refuse(&a, true).contains("namespace"));
        // Pull secrets on an agent that reads none: refused, not checked without them.
        let mut a = assignment("a", now);
        a.pull_secrets = vec!["regcred".into()];
        assert!(refuse(&a, false).contains("pull_secrets: false"));
        assert!(matches!(triage(&a, now, TTL, 2, true), Triage::Check(_)));
    }

    #[test]
    fn answers_are_kept_for_the_ttl_at_most_64_oldest_dropped() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut book = Book::default();
        for i in 0..70u64 {
            let a = assignment(&format!("a{i}"), t0);
            book.push(
                refused(&a, "x".into(), t0),
                t0 + Duration::from_secs(i / 10),
            );
        }
        let ids: Vec<String> = book.list().into_iter().map(|a| a.id).collect();
        assert_eq!(ids.len(), MAX_ANSWERS);
        assert_eq!(ids[0], "a6", "the six oldest dropped");
        assert!(book.answered("a69") && !book.answered("a5"));
        // a6..a9 were kept at t0, a10.. later: 31 s after t0 only the former expire.
        book.expire(t0 + Duration::from_secs(31), TTL);
        assert!(!book.answered("a9") && book.answered("a10"));
        book.expire(t0 + Duration::from_secs(3600), TTL);
        assert!(book.list().is_empty());
    }
}
