//! The words `kubectl apply` prints: one warning per image with a problem, one for the
//! images no node has an answer for yet, and the denial message in `enforce` namespaces.
//!
//! Bounded for the API server and the terminal: at most [`MAX_WARNINGS`], each at most
//! [`MAX_WARNING_LEN`] characters with no control characters; a tenant's image text is cut
//! to [`MAX_IMAGE_SHOWN`] characters, an agent's reason and host to [`MAX_WORD`].

use super::assess::{Finding, Problem};

/// Warnings in one answer.
pub const MAX_WARNINGS: usize = 10;
/// Characters in one warning.
pub const MAX_WARNING_LEN: usize = 256;
/// Characters of an image reference shown.
pub const MAX_IMAGE_SHOWN: usize = 96;
/// Characters of a reason or host shown (agents write them; the schema bounds them only loosely).
const MAX_WORD: usize = 64;

/// The workload a review is about, for the `kubectl get imagepreflight` hint.
#[derive(Clone, Debug)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    /// `Deployment`, …
    pub kind: &'a str,
    /// Empty when the object has only `generateName`.
    pub name: &'a str,
}

impl Subject<'_> {
    /// `; kubectl get imagepreflight -n NS deployment-NAME` (the rollout guard's object).
    pub fn hint(&self) -> String {
        if self.name.is_empty() {
            return String::new();
        }
        format!(
            "; kubectl get imagepreflight -n {} {}-{}",
            clean(self.namespace, 63),
            self.kind.to_ascii_lowercase(),
            clean(self.name, 253)
        )
    }
}

/// The warnings for `findings` (empty when every candidate node can pull every image).
pub fn warnings(findings: &[Finding], subject: &Subject) -> Vec<String> {
    let hint = subject.hint();
    let failing: Vec<&Finding> = findings.iter().filter(|f| f.cannot > 0).collect();
    let unchecked: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.cannot == 0 && f.unchecked > 0)
        .collect();
    let room = MAX_WARNINGS - usize::from(!unchecked.is_empty());
    let mut out: Vec<String> = Vec::new();
    for (i, f) in failing.iter().enumerate() {
        if i + 1 == room && failing.len() > room {
            out.push(bounded(format!(
                "pullprobe: {} more images cannot be pulled on some nodes{hint}",
                failing.len() - i
            )));
            break;
        }
        out.push(bounded(cannot_line(f, &hint)));
    }
    if !unchecked.is_empty() {
        out.push(bounded(unchecked_line(&unchecked, &hint)));
    }
    out
}

/// `pullprobe: 12 of 40 nodes cannot pull IMAGE: Reason at host (gloss); kubectl get …`
fn cannot_line(f: &Finding, hint: &str) -> String {
    let why = f.problem.as_ref().map(problem_text).unwrap_or_default();
    format!(
        "pullprobe: {} of {} nodes cannot pull {}{why}{hint}",
        f.cannot,
        f.nodes,
        clean(&f.image, MAX_IMAGE_SHOWN)
    )
}

fn unchecked_line(images: &[&Finding], hint: &str) -> String {
    let shown: Vec<String> = images
        .iter()
        .take(3)
        .map(|f| clean(&f.image, MAX_IMAGE_SHOWN / 2))
        .collect();
    let more = match images.len().saturating_sub(3) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let (it, verb) = if images.len() == 1 {
        ("it", "is")
    } else {
        ("them", "are")
    };
    format!(
        "pullprobe: {}{more} {verb} not checked yet; the rollout guard checks {it} now{hint}",
        shown.join(", ")
    )
}

/// `: ManifestNotFound at registry.example (the tag or digest does not exist)`.
fn problem_text(p: &Problem) -> String {
    let reason = clean(&p.reason, MAX_WORD);
    let at = p
        .host
        .as_deref()
        .map(|h| format!(" at {}", clean(h, MAX_WORD)))
        .unwrap_or_default();
    let gloss = gloss(&p.reason)
        .map(|g| format!(" ({g})"))
        .unwrap_or_default();
    format!(": {reason}{at}{gloss}")
}

/// A few words on what a reason means (the README's table has the fix).
fn gloss(reason: &str) -> Option<&'static str> {
    use crate::probe::outcome::{Phase, Reason};
    let r = Reason::ALL.iter().find(|r| r.as_str() == reason)?;
    Some(match (r, r.phase()) {
        (Reason::ManifestNotFound, _) => "the tag or digest does not exist",
        (Reason::RepositoryNotFound, _) => "the repository does not exist",
        (Reason::ReferenceInvalid, _) => "not a valid image reference",
        (_, Phase::Dns) => "the registry's name does not resolve on the nodes",
        (_, Phase::Connect) => "the nodes cannot connect to it",
        (_, Phase::Tls) => "TLS to it fails on the nodes",
        (_, Phase::Auth) => "the nodes' credentials are refused",
        (_, Phase::Platform) => "no image for the nodes' platform",
        _ => return None,
    })
}

/// The denial message in an `enforce` namespace (the first image that fails).
pub fn denial(findings: &[Finding], subject: &Subject) -> Option<String> {
    let f = findings.iter().find(|f| f.cannot > 0)?;
    Some(bounded(format!(
        "pullprobe: namespace {} enforces the rollout guard: {}",
        clean(subject.namespace, 63),
        cannot_line(f, &subject.hint()).trim_start_matches("pullprobe: ")
    )))
}

/// `s` without control characters, cut to `max` characters (`…` marks the cut).
pub fn clean(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().filter(|c| !c.is_control()).nth(max).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// A whole warning within [`MAX_WARNING_LEN`] characters.
pub fn bounded(s: String) -> String {
    clean(&s, MAX_WARNING_LEN)
}
