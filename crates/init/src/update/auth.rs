//! Request signatures: every request carries
//! `Authorization: Nodeos-Ed25519 key=…,ts=…,nonce=…,sig=…`, an ed25519
//! signature by the update key over [`request_message`]. It is checked
//! before any body byte is read; a request that fails gets nothing but the
//! refusal.
//!
//! What cannot sign each request (Prometheus, a browser) may carry a read
//! token instead ([`ReadToken`], made by `nodeos token`): it grants
//! [`Access::Read`] only, until it expires.

use std::collections::VecDeque;
use std::sync::Mutex;

use ed25519_dalek::{Signature, VerifyingKey};
use nodeos_manifest::update::{
    AUTH_SCHEME, Authorization, MAX_CLOCK_SKEW_MS, MAX_TOKEN_TTL_S, PublicKey, ReadToken,
    request_message,
};

use super::{UpdateError, lock};

/// Nonces remembered against replays: each while its request's time is
/// within the allowed clock skew, at most this many at once.
pub(crate) const NONCES_KEPT: usize = 2048;

/// What a request's signature covers, as received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The `Authorization` header's value, if there is one.
    pub authorization: Option<&'a [u8]>,
    pub method: &'a str,
    /// The request target exactly as sent.
    pub path: &'a str,
    /// The `Content-Length` header's value, 0 without one.
    pub content_length: u64,
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Signed by the update key: everything.
    Full,
    /// A read token: the status, the logs, the metrics, the status page.
    Read,
}

/// The update key and the nonces seen lately.
#[derive(Debug)]
pub(crate) struct Verifier {
    key: VerifyingKey,
    key_id: String,
    /// Nonces and the times of their requests, oldest first.
    nonces: Mutex<VecDeque<(String, u64)>>,
}

impl Verifier {
    /// `None` if `key` is not a valid ed25519 point.
    pub fn new(key: &PublicKey) -> Option<Verifier> {
        Some(Verifier {
            key: VerifyingKey::from_bytes(&key.0).ok()?,
            key_id: key.key_id(),
            nonces: Mutex::new(VecDeque::new()),
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether `signature` is the update key's over `message`
    /// (`verify_strict`: no malleable or small-order signatures).
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// Checks a read token at `now_ms`: well-formed, this key's, signed by
    /// it, not expired, and not living longer than [`MAX_TOKEN_TTL_S`] (with
    /// the clock skew allowed). Every failure is a 401.
    pub fn check_token(&self, text: &str, now_ms: u64) -> Result<ReadToken, UpdateError> {
        let token = ReadToken::parse(text).ok_or_else(|| {
            UpdateError::Unauthorized(
                "the read token is not valid: make one with `nodeos token`".into(),
            )
        })?;
        if token.key_id != self.key_id {
            return Err(UpdateError::Unauthorized(format!(
                "the read token is for key {}, but this appliance trusts key {}",
                token.key_id, self.key_id
            )));
        }
        let message = ReadToken::message(&token.key_id, token.expires_s, &token.id);
        if !self.verifies(message.as_bytes(), &token.signature) {
            return Err(UpdateError::Unauthorized(format!(
                "the read token's signature does not verify with key {}",
                self.key_id
            )));
        }
        if now_ms / 1000 >= token.expires_s {
            return Err(UpdateError::Unauthorized(format!(
                "the read token {} expired {} s ago: make a new one with `nodeos token`",
                token.id,
                now_ms / 1000 - token.expires_s
            )));
        }
        let longest = now_ms / 1000 + MAX_TOKEN_TTL_S + MAX_CLOCK_SKEW_MS / 1000;
        if token.expires_s > longest {
            return Err(UpdateError::Unauthorized(format!(
                "the read token {} is valid for {} more days, over the {} allowed: make one with `nodeos token`",
                token.id,
                (token.expires_s - now_ms / 1000) / 86_400,
                MAX_TOKEN_TTL_S / 86_400
            )));
        }
        Ok(token)
    }

    /// Checks a request's signature at `now_ms` (the guest's clock), in
    /// this order: a well-formed header (401), the key (403), the
    /// signature (401), the time (401), a fresh nonce (401). The nonce is
    /// remembered only when everything else passed.
    pub fn check(&self, request: &Request<'_>, now_ms: u64) -> Result<(), UpdateError> {
        let Some(value) = request.authorization else {
            return Err(UpdateError::Unauthorized(format!(
                "the request is not signed: it needs an Authorization: {AUTH_SCHEME} header (use `nodeos deploy` or `nodeos status`)"
            )));
        };
        let auth = std::str::from_utf8(value)
            .ok()
            .and_then(Authorization::parse)
            .ok_or_else(|| {
                UpdateError::Unauthorized(format!(
                    "the Authorization header is not a valid {AUTH_SCHEME} signature"
                ))
            })?;
        if auth.key_id != self.key_id {
            return Err(UpdateError::WrongKey {
                theirs: auth.key_id,
                ours: self.key_id.clone(),
            });
        }
        let message = request_message(
            request.method,
            request.path,
            auth.ts_ms,
            &auth.nonce,
            request.content_length,
        );
        if !self.verifies(message.as_bytes(), &auth.signature) {
            return Err(UpdateError::Unauthorized(format!(
                "the request's signature does not verify with key {}",
                self.key_id
            )));
        }
        let skew = now_ms.abs_diff(auth.ts_ms);
        if skew > MAX_CLOCK_SKEW_MS {
            return Err(UpdateError::Unauthorized(format!(
                "the request's time is {} s {} the appliance's clock (at most {} s are allowed): the clocks differ by {} s; set them right",
                skew / 1000,
                if auth.ts_ms > now_ms {
                    "ahead of"
                } else {
                    "behind"
                },
                MAX_CLOCK_SKEW_MS / 1000,
                skew / 1000
            )));
        }
        let nonce = auth.nonce.to_ascii_lowercase();
        let mut seen = lock(&self.nonces);
        // A request whose time is out of the skew window is refused above,
        // so its nonce need not be remembered any more.
        seen.retain(|(_, ts_ms)| ts_ms.saturating_add(MAX_CLOCK_SKEW_MS) >= now_ms);
        if seen.iter().any(|(seen, _)| *seen == nonce) {
            return Err(UpdateError::Replayed { nonce });
        }
        if seen.len() >= NONCES_KEPT {
            // Forgetting one would make its request replayable.
            return Err(UpdateError::Busy(format!(
                "over {NONCES_KEPT} signed requests in {} minutes; try again in a minute",
                2 * MAX_CLOCK_SKEW_MS / 60_000
            )));
        }
        seen.push_back((nonce, auth.ts_ms));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::update::testing::{public_key, read_token, sign_request};

    const NOW: u64 = 1_795_705_201_123;

    fn verifier() -> Verifier {
        Verifier::new(&public_key(&SigningKey::from_bytes(&[1; 32]))).unwrap()
    }

    fn request(header: &str) -> Request<'_> {
        Request {
            authorization: Some(header.as_bytes()),
            method: "POST",
            path: "/v1/update",
            content_length: 42,
        }
    }

    fn signed(key: u8, ts_ms: u64, nonce: u64) -> String {
        sign_request(
            &SigningKey::from_bytes(&[key; 32]),
            "POST",
            "/v1/update",
            42,
            ts_ms,
            nonce,
        )
    }

    #[test]
    fn a_good_request_is_accepted_once() {
        let v = verifier();
        let header = signed(1, NOW, 1);
        v.check(&request(&header), NOW).unwrap();
        let err = v.check(&request(&header), NOW).unwrap_err();
        assert!(matches!(err, UpdateError::Replayed { .. }), "{err}");
        assert_eq!((err.status(), err.code()), (401, "replayed"));
    }

    #[test]
    fn another_key_is_refused_naming_both_ids() {
        let err = verifier()
            .check(&request(&signed(2, NOW, 1)), NOW)
            .unwrap_err();
        assert_eq!((err.status(), err.code()), (403, "wrong_key"));
        let ours = public_key(&SigningKey::from_bytes(&[1; 32])).key_id();
        let theirs = public_key(&SigningKey::from_bytes(&[2; 32])).key_id();
        let text = err.to_string();
        assert!(text.contains(&ours) && text.contains(&theirs), "{text}");
    }

    #[test]
    fn a_signature_over_another_request_is_refused() {
        let v = verifier();
        let header = signed(1, NOW, 1);
        for other in [
            Request {
                content_length: 43,
                ..request(&header)
            },
            Request {
                path: "/v1/status",
                ..request(&header)
            },
            Request {
                method: "GET",
                ..request(&header)
            },
        ] {
            let err = v.check(&other, NOW).unwrap_err();
            assert_eq!((err.status(), err.code()), (401, "unauthorized"), "{err}");
            assert!(err.to_string().contains("does not verify"), "{err}");
        }
        // A key id that matches but a signature made by another key.
        let forged = signed(2, NOW, 1).replace(
            &public_key(&SigningKey::from_bytes(&[2; 32])).key_id(),
            v.key_id(),
        );
        let err = v.check(&request(&forged), NOW).unwrap_err();
        assert_eq!(err.status(), 401, "{err}");
    }

    #[test]
    fn a_time_outside_the_window_is_refused_with_the_skew() {
        let v = verifier();
        let late = NOW + MAX_CLOCK_SKEW_MS + 1000;
        let err = v.check(&request(&signed(1, NOW, 1)), late).unwrap_err();
        assert_eq!(err.status(), 401);
        assert!(
            err.to_string().contains("the clocks differ by 301 s"),
            "{err}"
        );
        let err = v
            .check(&request(&signed(1, late + 600_000, 2)), late)
            .unwrap_err();
        assert!(err.to_string().contains("600 s ahead"), "{err}");
        // Just inside the window passes.
        v.check(&request(&signed(1, NOW - MAX_CLOCK_SKEW_MS, 3)), NOW)
            .unwrap();
    }

    #[test]
    fn a_refused_request_does_not_use_up_its_nonce() {
        let v = verifier();
        let stale = signed(1, NOW - 10 * MAX_CLOCK_SKEW_MS, 7);
        assert!(v.check(&request(&stale), NOW).is_err());
        v.check(&request(&signed(1, NOW, 7)), NOW).unwrap();
    }

    #[test]
    fn nonces_are_remembered_while_their_time_is_valid() {
        let v = verifier();
        for n in 0..NONCES_KEPT as u64 {
            v.check(&request(&signed(1, NOW, n)), NOW).unwrap();
        }
        // None is forgotten to make room: the next is refused instead.
        let full = v.check(&request(&signed(1, NOW, 1 << 40)), NOW);
        assert!(matches!(full, Err(UpdateError::Busy(_))), "{full:?}");
        let later = NOW + MAX_CLOCK_SKEW_MS;
        assert!(matches!(
            v.check(&request(&signed(1, NOW, 0)), later),
            Err(UpdateError::Replayed { .. })
        ));
        // Once their time is out of the window, they are let go.
        let after = later + 1;
        v.check(&request(&signed(1, after, 1 << 40)), after)
            .unwrap();
        assert!(v.check(&request(&signed(1, NOW, 0)), after).is_err());
        assert_eq!(lock(&v.nonces).len(), 1);
    }

    fn token(key: u8, expires_s: u64) -> String {
        read_token(&SigningKey::from_bytes(&[key; 32]), expires_s)
    }

    #[test]
    fn read_tokens_are_checked_for_key_signature_and_expiry() {
        let v = verifier();
        let valid = token(1, NOW / 1000 + 60);
        assert_eq!(v.check_token(&valid, NOW).unwrap().id, "0011223344556677");
        // Tokens are not one-time: a browser sends its cookie again and again.
        v.check_token(&valid, NOW).unwrap();
        v.check_token(&token(1, NOW / 1000 + MAX_TOKEN_TTL_S + 60), NOW)
            .unwrap();
        let forged = {
            let mut t = ReadToken::parse(&valid).unwrap();
            t.expires_s += 3600;
            t.to_string()
        };
        for (bad, says) in [
            (token(1, NOW / 1000), "expired 0 s ago"),
            (
                token(1, NOW / 1000 + MAX_TOKEN_TTL_S + 3600),
                "over the 366 allowed",
            ),
            (token(2, NOW / 1000 + 60), "is for key"),
            (forged, "does not verify"),
            ("Bearer abc".into(), "not valid"),
        ] {
            let err = v.check_token(&bad, NOW).unwrap_err();
            assert_eq!((err.status(), err.code()), (401, "unauthorized"), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn missing_or_malformed_headers_are_unauthorized() {
        let v = verifier();
        let missing = Request {
            authorization: None,
            ..request("")
        };
        let good = signed(1, NOW, 1);
        for (req, says) in [
            (missing, "not signed"),
            (request("Bearer abc"), "not a valid"),
            (request(&good.replace("sig=", "sig=00")), "not a valid"),
            (
                Request {
                    authorization: Some(b"Nodeos-Ed25519 \xff"),
                    ..request("")
                },
                "not a valid",
            ),
        ] {
            let err = v.check(&req, NOW).unwrap_err();
            assert_eq!((err.status(), err.code()), (401, "unauthorized"));
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
