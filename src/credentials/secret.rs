//! A string that must never be printed: passwords, tokens, identity tokens.
//!
//! `Secret` deliberately has no `Display`, and its `Debug` prints `<redacted>`, so a
//! derived `Debug` on any struct holding one cannot leak it (oci-client's `RegistryAuth`
//! shows how a derived `Debug` does leak). Serialisation is not implemented either.
//! The bytes are wiped when a `Secret` is dropped (`zeroize`), so a credential does not
//! outlive its use in freed heap memory (core dumps, a later allocation's garbage). Copies
//! made to put it on the wire (header text, form bodies) are wiped where the code owns
//! them ([`zeroize::Zeroizing`]).

use std::fmt;

use zeroize::Zeroize;

/// A credential value. Read it only at the point where it goes on the wire.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for building a request header or form body.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Zeroize for Secret {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_value() {
        let s = Secret::new("canary-s3cr3t");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "canary-s3cr3t");
    }

    #[test]
    fn zeroize_wipes_the_value() {
        let mut s = Secret::new(String::from("canary-wipe"));
        let c = s.clone();
        s.zeroize();
        assert!(s.is_empty());
        assert_eq!(c.expose(), "canary-wipe", "clones are independent");
        drop(c); // wiped by Drop
    }
}
