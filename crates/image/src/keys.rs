//! Update signing keys: ed25519 key pairs made by `nodeos keygen`.
//!
//! The private key is a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`, the
//! format `openssl genpkey -algorithm ed25519` writes), mode 0600. The
//! public key sits beside it in `<file>.pub` as one line,
//! `ed25519:<64 hex digits>`, the form package.json's settings take.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// The prefix of a public key's text form.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// The DER of a PKCS#8 v1 `PrivateKeyInfo` for Ed25519 (RFC 8410) up to the
/// 32-byte seed: what OpenSSL writes and reads. (ed25519-dalek's own encoder
/// writes v2 with the public key, which OpenSSL 3.0 refuses.)
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} already exists; nodeos never overwrites a key (choose another --out, or delete it yourself if it is unused)", path.display())]
    Exists { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("{}: not an ed25519 private key in PKCS#8 PEM form ({reason})", path.display())]
    NotAKey { path: PathBuf, reason: String },
}

/// A new key pair from the operating system's randomness.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// Where the public key of the private key file `private` goes.
pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// `ed25519:<hex>`.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", crate::hex(key.as_bytes()))
}

/// Writes `key` to `private` (mode 0600) and its public half to
/// `<private>.pub` (mode 0644). Neither file may exist (both are created
/// with O_EXCL); if either cannot be written, neither is left behind.
pub fn write_pair(key: &SigningKey, private: &Path) -> Result<(), KeyError> {
    let public = public_path(private);
    write_new(private, 0o600, private_pem(key).as_bytes())?;
    let line = format!("{}\n", public_key_text(&key.verifying_key()));
    if let Err(e) = write_new(&public, 0o644, line.as_bytes()) {
        let _ = std::fs::remove_file(private);
        return Err(e);
    }
    Ok(())
}

/// The PKCS#8 v1 PEM of `key`.
fn private_pem(key: &SigningKey) -> String {
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    let body = base64::engine::general_purpose::STANDARD.encode(&der);
    der.fill(0);
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}

/// Creates `path` (failing if it exists), writes `bytes` and syncs; removes
/// the file again if writing fails.
fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io(e)
            }
        })?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(io(e));
    }
    Ok(())
}

/// Reads a private key file `write_pair` (or openssl) wrote.
pub fn read_private(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::NotAKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use ed25519_dalek::{Signer, Verifier};

    use super::*;

    #[test]
    fn a_written_pair_reads_back_and_signs_for_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("update-key.pem");
        let key = generate().unwrap();
        write_pair(&key, &private).unwrap();

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&private), 0o600);
        assert_eq!(mode(&public_path(&private)), 0o644);
        let pem = std::fs::read_to_string(&private).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");

        let read = read_private(&private).unwrap();
        assert_eq!(read.to_bytes(), key.to_bytes());
        let line = std::fs::read_to_string(public_path(&private)).unwrap();
        let hex = line.trim_end().strip_prefix(PUBLIC_KEY_PREFIX).unwrap();
        assert_eq!(hex.len(), 64);
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let public = VerifyingKey::from_bytes(&bytes.try_into().unwrap()).unwrap();
        let signature = read.sign(b"bundle");
        public.verify(b"bundle", &signature).unwrap();
    }

    #[test]
    fn the_private_key_file_is_the_pkcs8_v1_openssl_writes() {
        // RFC 8410, 10.3: the example private key, as `openssl genpkey
        // -algorithm ed25519` writes keys; its public key is the one
        // `openssl pkey -pubout` derives from it (RFC 8410, 10.1).
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rfc8410.pem");
        std::fs::write(&path, pem).unwrap();
        let key = read_private(&path).unwrap();
        assert_eq!(
            public_key_text(&key.verifying_key()),
            "ed25519:19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
        assert_eq!(private_pem(&key), pem);
    }

    #[test]
    fn two_keys_differ() {
        assert_ne!(
            generate().unwrap().to_bytes(),
            generate().unwrap().to_bytes()
        );
    }

    #[test]
    fn an_existing_private_or_public_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("k.pem");
        std::fs::write(&private, "precious").unwrap();
        let err = write_pair(&generate().unwrap(), &private).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&private).unwrap(), "precious");
        assert!(!public_path(&private).exists());

        let other = dir.path().join("other.pem");
        std::fs::write(public_path(&other), "precious").unwrap();
        let err = write_pair(&generate().unwrap(), &other).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert!(
            !other.exists(),
            "no private key may be left without its public half"
        );
        assert_eq!(
            std::fs::read_to_string(public_path(&other)).unwrap(),
            "precious"
        );
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(read_private(&path), Err(KeyError::NotAKey { .. })));
    }
}
