//! Update signing keys: ed25519 key pairs made by `nodeos keygen`.
//!
//! The private key is a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`, the
//! format `openssl genpkey -algorithm ed25519` writes), mode 0600. The
//! public key sits beside it in `<file>.pub` as one line,
//! `ed25519:<64 hex digits>`, the form package.json's settings take.
//!
//! Besides making keys, this module reads them back ([`read_private`],
//! [`read_public`]) and signs the requests `nodeos deploy` and `nodeos
//! status` send to an appliance's update agent ([`sign_request`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use nodeos_manifest::update::{self, Authorization, PublicKey};

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
    #[error("{}: not an ed25519 public key ({reason}); a key file is a private key PEM (-----BEGIN PRIVATE KEY-----, as `nodeos keygen` writes), a public key PEM (-----BEGIN PUBLIC KEY-----) or one line ed25519:<64 hex digits> (the .pub file)", path.display())]
    NotAPublicKey { path: PathBuf, reason: String },
    #[error("there is no key file {}", path.display())]
    Missing { path: PathBuf },
}

/// A new key pair from the operating system's randomness.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// The default private key file: `$XDG_CONFIG_HOME/nodeos/update-key.pem`,
/// else `$HOME/.config/nodeos/update-key.pem` (empty variables count as
/// unset); `None` if neither variable is set.
pub fn default_path_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|home| home.join(".config")))?;
    Some(base.join("nodeos").join("update-key.pem"))
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

/// Reads a private key file `write_pair` (or openssl) wrote: the key that
/// signs bundles and requests.
pub fn read_private(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read_text(path)?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::NotAKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads a public key from any of the forms a key file takes: a private
/// key PEM (its public half), a public key PEM (SubjectPublicKeyInfo, what
/// `openssl pkey -pubout` writes) or a `.pub` line `ed25519:<hex>`.
pub fn read_public(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read_text(path)?;
    let not_a_key = |reason: String| KeyError::NotAPublicKey {
        path: path.to_owned(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN PRIVATE KEY-----") {
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| not_a_key(e.to_string()))?;
        return Ok(public_key(&key));
    }
    if trimmed.starts_with("-----BEGIN PUBLIC KEY-----") {
        let key =
            VerifyingKey::from_public_key_pem(trimmed).map_err(|e| not_a_key(e.to_string()))?;
        return Ok(PublicKey(key.to_bytes()));
    }
    if trimmed.starts_with(PUBLIC_KEY_PREFIX) {
        let key = PublicKey::parse(trimmed).map_err(not_a_key)?;
        verifying_key(&key).ok_or_else(|| not_a_key("not a point on the curve".to_owned()))?;
        return Ok(key);
    }
    Err(not_a_key("unrecognised contents".to_owned()))
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            KeyError::Missing {
                path: path.to_owned(),
            }
        } else {
            KeyError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// The public half of `key`, in the form the manifest and package.json use.
pub fn public_key(key: &SigningKey) -> PublicKey {
    PublicKey(key.verifying_key().to_bytes())
}

/// `key` as a key that verifies; `None` if its bytes are not a point on
/// the curve.
pub fn verifying_key(key: &PublicKey) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&key.0).ok()
}

/// Whether `signature` is `key`'s signature of `message` (ed25519
/// `verify_strict`, as the update agent checks).
pub fn verify(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
    verifying_key(key).is_some_and(|k| {
        k.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    })
}

/// `key`'s signature of `message`.
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    key.sign(message).to_bytes()
}

/// The `Authorization` header value of a request to the update agent:
/// `Nodeos-Ed25519 key=…,ts=<now>,nonce=<16 fresh hex digits>,sig=…`, a
/// signature over [`update::request_message`].
pub fn sign_request(
    key: &SigningKey,
    method: &str,
    path: &str,
    content_length: u64,
) -> Result<String, KeyError> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| KeyError::Random(e.to_string()))?;
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(sign_request_at(
        key,
        method,
        path,
        content_length,
        ts_ms,
        &crate::hex(&nonce),
    )
    .header())
}

/// A read token ([`update::ReadToken`]) signed by `key`, valid until
/// `expires_s` (unix seconds).
pub fn read_token(key: &SigningKey, expires_s: u64) -> Result<update::ReadToken, KeyError> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| KeyError::Random(e.to_string()))?;
    let id = crate::hex(&id);
    let key_id = public_key(key).key_id();
    let message = update::ReadToken::message(&key_id, expires_s, &id);
    Ok(update::ReadToken {
        signature: sign(key, message.as_bytes()),
        key_id,
        expires_s,
        id,
    })
}

/// [`sign_request`] with the time and nonce given.
pub fn sign_request_at(
    key: &SigningKey,
    method: &str,
    path: &str,
    content_length: u64,
    ts_ms: u64,
    nonce: &str,
) -> Authorization {
    let message = update::request_message(method, path, ts_ms, nonce, content_length);
    Authorization {
        key_id: public_key(key).key_id(),
        ts_ms,
        nonce: nonce.to_owned(),
        signature: sign(key, message.as_bytes()),
    }
}

/// Whether `header` is a well-formed `Authorization` value signed by `key`
/// for this method, path and body length (the agent also checks the time
/// and that the nonce is fresh).
pub fn check_request(
    key: &PublicKey,
    header: &str,
    method: &str,
    path: &str,
    content_length: u64,
) -> bool {
    let Some(auth) = Authorization::parse(header) else {
        return false;
    };
    let message = update::request_message(method, path, auth.ts_ms, &auth.nonce, content_length);
    auth.key_id == key.key_id() && verify(key, message.as_bytes(), &auth.signature)
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

    #[test]
    fn the_default_key_lives_in_the_user_config_directory() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            default_path_from(env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/nodeos/update-key.pem"))
        );
        assert_eq!(
            default_path_from(env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.config/nodeos/update-key.pem"))
        );
        assert_eq!(default_path_from(env(&[])), None);
    }

    #[test]
    fn read_public_takes_a_private_pem_a_public_pem_or_a_pub_line() {
        // RFC 8410, 10.1 and 10.3: the same key pair in both PEM forms.
        let private = "-----BEGIN PRIVATE KEY-----\n\
                       MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                       -----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\n\
                      MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
                      -----END PUBLIC KEY-----\n";
        let text = "ed25519:19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in [
            ("private.pem", private.to_owned()),
            ("public.pem", public.to_owned()),
            ("key.pub", format!("{text}\n")),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            assert_eq!(read_public(&path).unwrap().to_string(), text, "{name}");
        }
    }

    #[test]
    fn read_public_names_the_accepted_forms() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(
            read_public(&missing),
            Err(KeyError::Missing { .. })
        ));
        assert!(matches!(
            read_private(&missing),
            Err(KeyError::Missing { .. })
        ));
        for junk in [
            "hello\n",
            "ed25519:1234\n",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            let path = dir.path().join("junk");
            std::fs::write(&path, junk).unwrap();
            let err = read_public(&path).unwrap_err();
            assert!(matches!(err, KeyError::NotAPublicKey { .. }), "{err}");
            let message = err.to_string();
            for form in [
                "BEGIN PRIVATE KEY",
                "BEGIN PUBLIC KEY",
                "ed25519:<64 hex digits>",
            ] {
                assert!(message.contains(form), "{message}");
            }
        }
    }

    #[test]
    fn signed_requests_verify_only_for_what_was_signed() {
        let key = generate().unwrap();
        let public = public_key(&key);
        let header = sign_request(&key, "POST", update::UPDATE_PATH, 1234).unwrap();
        assert!(header.starts_with("Nodeos-Ed25519 key="), "{header}");
        assert!(check_request(
            &public,
            &header,
            "POST",
            update::UPDATE_PATH,
            1234
        ));
        assert!(!check_request(
            &public,
            &header,
            "POST",
            update::UPDATE_PATH,
            1235
        ));
        assert!(!check_request(
            &public,
            &header,
            "GET",
            update::UPDATE_PATH,
            1234
        ));
        assert!(!check_request(
            &public,
            &header,
            "POST",
            update::STATUS_PATH,
            1234
        ));
        let other = public_key(&generate().unwrap());
        assert!(!check_request(
            &other,
            &header,
            "POST",
            update::UPDATE_PATH,
            1234
        ));

        let auth = Authorization::parse(&header).unwrap();
        assert_eq!(auth.key_id, public.key_id());
        assert_eq!(auth.nonce.len(), 16);
        let again = Authorization::parse(&sign_request(&key, "GET", "/", 0).unwrap()).unwrap();
        assert_ne!(auth.nonce, again.nonce, "a fresh nonce per request");
    }
}
