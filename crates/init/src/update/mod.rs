//! Signed A/B updates inside the guest.
