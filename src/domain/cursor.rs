//! The keyset cursor a list page's `_links.next.href` carries: where the next page starts in the
//! sort order (the sort key and the id of the last audience sent), so that following the link
//! reads the next rows from the index instead of skipping `start` of them. It is opaque to
//! clients: the position, then a MAC over the position and the listing it belongs to (the
//! sandbox, the sort, the filters), so a cursor altered, made up or taken from another sandbox or
//! listing is refused. `start` and `_page.next` keep their meaning: a client that computes
//! `start` itself simply sends no cursor.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::ApiError;

/// The value of the sort column at a position: the times are integers, the other sort fields text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    Int(i64),
    Text(String),
}

/// A position in one listing: the page that starts at `start` begins right after the audience
/// `(key, id)` in the listing's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub start: i64,
    pub key: SortKey,
    pub id: Uuid,
}

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in a cursor.
const MAC_BYTES: usize = 16;
const VERSION: u8 = 1;

fn mac(secret: &[u8], scope: &str, payload: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(b"audience-list-cursor\0");
    mac.update(scope.as_bytes());
    mac.update(b"\0");
    mac.update(payload);
    mac
}

impl Cursor {
    /// The cursor as sent in a link: URL-safe base64 of the position and its MAC. `scope` names
    /// the listing (see `ListQuery::cursor_scope`).
    pub fn seal(&self, secret: &[u8], scope: &str) -> String {
        let mut payload = vec![VERSION];
        payload.extend_from_slice(&self.start.to_be_bytes());
        payload.extend_from_slice(self.id.as_bytes());
        match &self.key {
            SortKey::Int(n) => {
                payload.push(b'i');
                payload.extend_from_slice(&n.to_be_bytes());
            }
            SortKey::Text(s) => {
                payload.push(b't');
                payload.extend_from_slice(s.as_bytes());
            }
        }
        let tag = mac(secret, scope, &payload).finalize().into_bytes();
        payload.extend_from_slice(&tag[..MAC_BYTES]);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// Reads a cursor sent back for the listing `scope`; anything but one this server sealed for
    /// that listing is a 400 naming `cursor`.
    pub fn open(token: &str, secret: &[u8], scope: &str) -> Result<Cursor, ApiError> {
        let bad = || {
            ApiError::bad_param(
                "cursor",
                "is not a cursor of this listing; follow `_links.next.href` as it was sent, or page with `start` alone",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        // version, start, id, kind, MAC
        if bytes.len() < 1 + 8 + 16 + 1 + MAC_BYTES || bytes[0] != VERSION {
            return Err(bad());
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_BYTES);
        mac(secret, scope, payload)
            .verify_truncated_left(tag)
            .map_err(|_| bad())?;
        let start = i64::from_be_bytes(payload[1..9].try_into().map_err(|_| bad())?);
        let id = Uuid::from_slice(&payload[9..25]).map_err(|_| bad())?;
        let key = match (payload[25], &payload[26..]) {
            (b'i', n) => SortKey::Int(i64::from_be_bytes(n.try_into().map_err(|_| bad())?)),
            (b't', s) => SortKey::Text(String::from_utf8(s.to_vec()).map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        Ok(Cursor { start, key, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(key: SortKey) -> Cursor {
        Cursor {
            start: 40,
            key,
            id: Uuid::from_u128(7),
        }
    }

    #[test]
    fn round_trips_within_its_listing_only() {
        for key in [SortKey::Int(-5), SortKey::Text("näme, with ünicode".into())] {
            let c = cursor(key);
            let token = c.seal(b"secret", "sandbox-a|updateTime:desc|");
            assert_eq!(
                Cursor::open(&token, b"secret", "sandbox-a|updateTime:desc|").unwrap(),
                c
            );
            for (secret, scope) in [
                (&b"other"[..], "sandbox-a|updateTime:desc|"),
                (b"secret", "sandbox-b|updateTime:desc|"),
                (b"secret", "sandbox-a|updateTime:asc|"),
            ] {
                let err = Cursor::open(&token, secret, scope).unwrap_err();
                assert!(err.message.contains("'cursor'"), "{}", err.message);
            }
        }
    }

    #[test]
    fn altered_or_garbage_cursors_are_refused() {
        let token = cursor(SortKey::Int(1_700_000_000_000)).seal(b"k", "s");
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[3] ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(bytes);
        for t in [
            altered.as_str(),
            "",
            "abc",
            "!!!!",
            &token[..token.len() - 2],
        ] {
            assert!(Cursor::open(t, b"k", "s").is_err(), "{t}");
        }
    }
}
