//! `nodeos token [URL]`: a read token, signed offline with the update key,
//! for what cannot sign each request: Prometheus (`Authorization: Bearer`)
//! and a browser (the status page's login link). It reads the status, the
//! logs, the metrics and the status page; it cannot update or profile.

use std::path::PathBuf;
use std::time::Duration;

use nodeos_image::keys;
use nodeos_manifest::update::MAX_TOKEN_TTL_S;

use crate::agent_client::Endpoint;
use crate::exit::Exit;
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Print the status page's login link for the appliance at this URL
    /// (http://HOST:PORT) instead of the bare token.
    #[arg(value_name = "URL")]
    url: Option<String>,
    /// How long the token is valid: 30s, 10m, 12h, 30d (at most 366d).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_ttl)]
    ttl: Duration,
    /// The private key that signs the token [default:
    /// $XDG_CONFIG_HOME/nodeos/update-key.pem, else
    /// ~/.config/nodeos/update-key.pem].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
        .filter(|ttl| (1..=MAX_TOKEN_TTL_S).contains(&ttl.as_secs()))
        .ok_or_else(|| {
            format!(
                "give a duration from 1s to {}d: 30s, 10m, 12h, 30d",
                MAX_TOKEN_TTL_S / 86_400
            )
        })
}

pub fn run(args: TokenArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let endpoint = args.url.as_deref().map(Endpoint::parse).transpose()?;
    let (key, path) = crate::agent_client::signing_key(args.key)?;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = keys::read_token(&key, now_s + args.ttl.as_secs())?;
    ui.note(&format!(
        "read token {} of key {} ({}), valid for {} s: it reads the status, logs, metrics and status page, nothing more; rotate the key to revoke it",
        token.id,
        token.key_id,
        path.display(),
        args.ttl.as_secs()
    ));
    match endpoint {
        Some(endpoint) => println!("{}/?token={token}", endpoint.url()),
        None => println!("{token}"),
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        for bad in ["0s", "367d", "10", "d", "1y", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
