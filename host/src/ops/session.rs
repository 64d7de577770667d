//! The status page's login: a browser cannot send `Authorization: Bearer`
//! on a plain page load, so the page's form takes an operator key once
//! (`POST /status/login`) and answers with a session cookie.
//!
//! The cookie holds no key: it is `<expiry>.<HMAC-SHA256 of the expiry>`
//! under a secret made at start (from the system's random source), so it
//! is good only on this process, only until it expires ([`SESSION_TTL`]),
//! and a restart ends every session. It is sent `HttpOnly` (no script
//! reads it), `SameSite=Strict` (no other site's page or form sends it)
//! and only to `/status`. A key in a URL (`/status?key=`) would end up in
//! proxy logs, browser history and `Referer` headers; this does not.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cookie's name.
pub const COOKIE: &str = "triggerfish_status";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// Makes and checks session cookies.
pub struct Sessions {
    secret: [u8; 32],
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new()
    }
}

impl Sessions {
    /// A fresh secret from the system's random source.
    pub fn new() -> Sessions {
        let mut secret = [0u8; 32];
        let mut filled = 0;
        while filled < secret.len() {
            match rustix::rand::getrandom(
                &mut secret[filled..],
                rustix::rand::GetRandomFlags::empty(),
            ) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("the system's random source failed: {e}"),
            }
        }
        Sessions { secret }
    }

    fn mac(&self, expires: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(b"triggerfish status session\0");
        mac.update(&expires.to_be_bytes());
        mac
    }

    /// A new session's cookie value, good for [`SESSION_TTL`] from `now`.
    pub fn start(&self, now: SystemTime) -> String {
        let expires = unix_seconds(now + SESSION_TTL);
        let tag = self.mac(expires).finalize().into_bytes();
        format!("{expires}.{}", crate::encoding::hex(&tag))
    }

    /// Whether a cookie value is a session of this process, unexpired.
    pub fn is_valid(&self, value: &str, now: SystemTime) -> bool {
        let Some((expires, tag)) = value.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return false;
        };
        let Some(tag) = unhex(tag) else {
            return false;
        };
        expires > unix_seconds(now) && self.mac(expires).verify_slice(&tag).is_ok()
    }

    /// The `Set-Cookie` value for a new session.
    pub fn set_cookie(&self, now: SystemTime) -> String {
        format!(
            "{COOKIE}={}; Path=/status; HttpOnly; SameSite=Strict; Max-Age={}",
            self.start(now),
            SESSION_TTL.as_secs()
        )
    }

    /// The `Set-Cookie` value that ends a session in the browser.
    pub fn clear_cookie() -> String {
        format!("{COOKIE}=; Path=/status; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    /// Whether a request's `Cookie` headers carry a valid session.
    pub fn check_headers(&self, headers: &http::HeaderMap, now: SystemTime) -> bool {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && self.is_valid(value, now))
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_belong_to_their_process() {
        let sessions = Sessions::new();
        let now = SystemTime::now();
        let value = sessions.start(now);
        assert!(sessions.is_valid(&value, now));
        assert!(!sessions.is_valid(&value, now + SESSION_TTL + Duration::from_secs(1)));
        assert!(
            !Sessions::new().is_valid(&value, now),
            "another process's secret"
        );
        let (expires, tag) = value.split_once('.').unwrap();
        let later = format!("{}.{tag}", expires.parse::<u64>().unwrap() + 3600);
        assert!(!sessions.is_valid(&later, now), "a forged expiry");
        assert!(!sessions.is_valid("garbage", now));
        assert!(!sessions.is_valid("1.zz", now));

        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            format!("a=b; {COOKIE}={value}").parse().unwrap(),
        );
        assert!(sessions.check_headers(&headers, now));
    }
}
