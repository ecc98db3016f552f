//! Rules for byte ranges over HTTP shared by the native and browser sources
//! (the CLI's blocking client, the browser package's `fetch`): what a response
//! to a Range request must say to be used, and how many failures a read may
//! have before it is an error. Pure: no I/O, no waiting; each source reads the
//! headers and sleeps its own way.

/// Waits before the retries of a failed request or body (then it is a NETWORK
/// error): four attempts in about two seconds.
pub const BACKOFF_MS: [u64; 3] = [250, 500, 1000];
/// Failed attempts of one read in all, progress or not: a server that drops
/// every connection after a few bytes ends in an error, not an endless crawl.
pub const MAX_FAILURES: u32 = 12;
/// The first allocation of a read; it grows only with the bytes received.
pub const FIRST_CAPACITY: u64 = 1 << 20;
/// [`ModelSource::read_all`](super::ModelSource::read_all) of a file whose
/// stated size is over the limit reads up to the limit, in pieces of this
/// size, to tell a server that lies about the length (its body ends early: a
/// NETWORK error) from a file that really is too big (MODEL_FORMAT).
pub const PROBE: u64 = 1 << 20;

/// The headers a response is checked by, as the transport read them (trimmed).
#[derive(Clone, Default, Debug)]
pub struct Head {
    /// Content-Length.
    pub length: Option<u64>,
    /// Content-Range.
    pub range: Option<String>,
    /// ETag, without its weak marker (see [`etag`]).
    pub etag: Option<String>,
}

/// Where a response's body lies in its file: the file's size (`None`: a 200
/// without Content-Length) and the offsets of its first byte and of the byte
/// after its last.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Span {
    pub size: Option<u64>,
    pub start: u64,
    pub end: Option<u64>,
}

/// A response that does not fit its file: worth retrying (`.0`: the server
/// may answer right next time) or not, and why (`.1`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Misfit(pub bool, pub String);

/// An ETag header's value without its weak marker (compression may turn a
/// strong one weak).
pub fn etag(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix("W/").unwrap_or(v).to_string()
}

/// `bytes a-b/total` (`total` may be `*`: unknown).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
}

/// A response whose ETag differs from the first response's is of a file that
/// changed on the server meanwhile (not worth retrying).
pub fn same_etag(want: Option<&str>, got: Option<&str>) -> Result<(), Misfit> {
    match (want, got) {
        (Some(want), Some(got)) if want != got => {
            Err(Misfit(false, format!("the file changed on the server during the download (ETag {want} became {got})")))
        }
        _ => Ok(()),
    }
}

/// Where the body of a response (`status`, `head`) to a request from byte
/// `from` lies, checked against what is known of the file: its size once
/// learnt (`known`), the first response's ETag (`etag`). A 206 must start at
/// `from`, name the file's size and agree with its Content-Length; a 200 (the
/// server ignored the Range) must be the whole file.
pub fn span(status: u16, head: &Head, from: u64, known: Option<u64>, etag: Option<&str>) -> Result<Span, Misfit> {
    same_etag(etag, head.etag.as_deref())?;
    match status {
        200 => match (known, head.length) {
            // The server ignored the Range: fine if it is the whole file.
            (Some(k), Some(n)) if n != k => Err(Misfit(true, format!("a 200 answer of {n} bytes to a Range request for bytes {from}- of a {k}-byte file"))),
            (Some(_), None) => Err(Misfit(true, format!("a 200 answer without Content-Length to a Range request for bytes {from}-"))),
            (_, n) => Ok(Span { size: n, start: 0, end: n }),
        },
        206 => {
            let Some(cr) = head.range.as_deref() else {
                return Err(Misfit(true, "a 206 answer without Content-Range".into()));
            };
            let bad = |why: String| Misfit(true, format!("a 206 answer to a request for bytes {from}- with Content-Range {cr:?}: {why}"));
            let (a, b, total) = parse_content_range(cr).ok_or_else(|| bad("not `bytes first-last/size`".into()))?;
            let size = match (known, total) {
                (Some(k), Some(t)) if k != t => return Err(bad(format!("the file has {k} bytes"))),
                (Some(k), _) => k,
                (None, Some(t)) => t,
                (None, None) => return Err(bad("no file size".into())),
            };
            if a != from {
                return Err(bad(format!("it starts at byte {a}")));
            }
            if b < a || b >= size {
                return Err(bad("the range is not inside the file".into()));
            }
            if let Some(n) = head.length.filter(|&n| n != b - a + 1) {
                return Err(bad(format!("its Content-Length is {n}, the range {} bytes", b - a + 1)));
            }
            Ok(Span { size: Some(size), start: a, end: Some(b + 1) })
        }
        s => Err(Misfit(true, format!("an unexpected status {s}"))),
    }
}

/// The attempts of one operation (opening a file, one read).
#[derive(Default, Debug)]
pub struct Tries {
    /// Requests made (with the response a read started on).
    pub attempts: u32,
    /// Failures since the last byte of progress.
    pub failures: u32,
    /// Failures in all.
    pub total: u32,
}

impl Tries {
    /// Bytes arrived: the retries start afresh (the total stays).
    pub fn progress(&mut self) {
        self.failures = 0;
    }

    /// A failed attempt (`what` happened): `Ok(ms)` to wait before the next
    /// one, or `Err` with the message of the error to give up with.
    pub fn fail(&mut self, what: String) -> Result<u64, String> {
        self.failures += 1;
        self.total += 1;
        let n = self.attempts.max(1);
        if self.failures as usize > BACKOFF_MS.len() || self.total > MAX_FAILURES {
            let s = if n == 1 { "" } else { "s" };
            return Err(format!("{what}, after {n} attempt{s}"));
        }
        Ok(BACKOFF_MS[self.failures as usize - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(length: Option<u64>, range: Option<&str>, etag: Option<&str>) -> Head {
        Head { length, range: range.map(String::from), etag: etag.map(String::from) }
    }

    fn misfit(r: Result<Span, Misfit>) -> Misfit {
        r.expect_err("a misfit")
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 99, Some(100))));
        assert_eq!(parse_content_range("  bytes 5 - 9 / 10 "), Some((5, 9, Some(10))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes=5-9/10"), None);
        assert_eq!(parse_content_range("items 5-9/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("bytes 5-9"), None);
        assert_eq!(parse_content_range("bytes -5-9/10"), None);
        assert_eq!(parse_content_range("bytes 5-9/ten"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn etags_lose_their_weak_marker() {
        assert_eq!(etag(" W/\"abc\" "), "\"abc\"");
        assert_eq!(etag("\"abc\""), "\"abc\"");
    }

    #[test]
    fn a_right_206_is_its_range() {
        let h = head(Some(60), Some("bytes 40-99/100"), None);
        assert_eq!(span(206, &h, 40, Some(100), None), Ok(Span { size: Some(100), start: 40, end: Some(100) }));
        // The size learnt from the first 206, a Content-Length not given, an
        // unknown total once the size is known.
        assert_eq!(span(206, &head(None, Some("bytes 0-9/100"), None), 0, None, None), Ok(Span { size: Some(100), start: 0, end: Some(10) }));
        assert_eq!(span(206, &head(None, Some("bytes 10-19/*"), None), 10, Some(100), None), Ok(Span { size: Some(100), start: 10, end: Some(20) }));
    }

    #[test]
    fn a_wrong_206_is_retried() {
        let cases = [
            (head(Some(50), Some("bytes 50-99/100"), None), "it starts at byte 50"),
            (head(Some(60), Some("bytes 40-99/120"), None), "the file has 100 bytes"),
            (head(Some(59), Some("bytes 40-99/100"), None), "its Content-Length is 59, the range 60 bytes"),
            (head(Some(61), Some("bytes 40-100/100"), None), "the range is not inside the file"),
            (head(None, Some("bytes 40-39/100"), None), "the range is not inside the file"),
            (head(None, Some("bytes 40-99"), None), "not `bytes first-last/size`"),
            (head(Some(60), None, None), "without Content-Range"),
        ];
        for (h, says) in cases {
            let Misfit(again, why) = misfit(span(206, &h, 40, Some(100), None));
            assert!(again, "{why}");
            assert!(why.contains(says), "`{why}` should say {says:?}");
        }
        let Misfit(again, why) = misfit(span(206, &head(None, Some("bytes 0-9/*"), None), 0, None, None));
        assert!(again && why.contains("no file size"), "{why}");
    }

    #[test]
    fn a_200_to_a_range_request_must_be_the_whole_file() {
        assert_eq!(span(200, &head(Some(100), None, None), 40, Some(100), None), Ok(Span { size: Some(100), start: 0, end: Some(100) }));
        let Misfit(again, why) = misfit(span(200, &head(Some(60), None, None), 40, Some(100), None));
        assert!(again && why.contains("a 200 answer of 60 bytes") && why.contains("100-byte file"), "{why}");
        let Misfit(again, why) = misfit(span(200, &head(None, None, None), 40, Some(100), None));
        assert!(again && why.contains("without Content-Length"), "{why}");
        // Opening a file: whatever it is (a chunked body has no length yet).
        assert_eq!(span(200, &head(Some(7), None, None), 0, None, None), Ok(Span { size: Some(7), start: 0, end: Some(7) }));
        assert_eq!(span(200, &head(None, None, None), 0, None, None), Ok(Span { size: None, start: 0, end: None }));
    }

    #[test]
    fn a_changed_etag_is_not_retried() {
        let h = head(Some(60), Some("bytes 40-99/100"), Some("\"b\""));
        let Misfit(again, why) = misfit(span(206, &h, 40, Some(100), Some("\"a\"")));
        assert!(!again && why.contains("ETag \"a\" became \"b\""), "{why}");
        assert!(span(206, &h, 40, Some(100), Some("\"b\"")).is_ok());
        // No ETag on either side: nothing to compare.
        assert!(span(206, &h, 40, Some(100), None).is_ok());
        assert!(span(206, &head(Some(60), Some("bytes 40-99/100"), None), 40, Some(100), Some("\"a\"")).is_ok());
        assert_eq!(same_etag(Some("x"), Some("x")), Ok(()));
    }

    #[test]
    fn other_statuses_are_retried() {
        let Misfit(again, why) = misfit(span(304, &Head::default(), 0, None, None));
        assert!(again && why.contains("unexpected status 304"), "{why}");
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let mut t = Tries { attempts: 1, ..Default::default() };
        assert_eq!(t.fail("a".into()), Ok(250));
        assert_eq!(t.fail("b".into()), Ok(500));
        assert_eq!(t.fail("c".into()), Ok(1000));
        assert_eq!(t.fail("the download ended".into()), Err("the download ended, after 1 attempt".into()));
        // Progress starts the backoff afresh ...
        let mut t = Tries::default();
        for _ in 0..3 {
            t.attempts += 1;
            assert!(t.fail("x".into()).is_ok());
        }
        t.progress();
        assert_eq!(t.fail("x".into()), Ok(250));
        assert_eq!(t.total, 4);
        // ... but not the total: a server that drops every connection after a
        // few bytes ends in an error.
        let mut t = Tries::default();
        for i in 1..=MAX_FAILURES {
            t.attempts += 1;
            assert!(t.fail("x".into()).is_ok(), "failure {i}");
            t.progress();
        }
        t.attempts += 1;
        let n = MAX_FAILURES + 1;
        assert_eq!(t.fail("dropped".into()), Err(format!("dropped, after {n} attempts")));
    }
}
