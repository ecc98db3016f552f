//! Finishing JSON a model got stuck in. A small model under a JSON
//! constraint sometimes repeats itself inside a string or a list
//! (`"example.com/example.com/..."`), or rambles on, until `max_tokens`,
//! leaving output that does not parse. When the last tokens are one run
//! repeated [`REPEATS`] times, or when only [`reserve`] tokens are left, the
//! session steers to the shortest end the constraint allows: each step the
//! mask keeps one token, the first of these that it allows: the end of
//! generation; the closing quote and brackets (as many as one token holds); a
//! minimal value (`0`, `""`, `null`, ...). Where none is allowed (a required
//! key still to come, a pattern or minimum length to satisfy) the model
//! chooses among what is allowed, except the token that would repeat its loop
//! once more. Only JSON constraints (and forced tool calls, whose markers
//! hold no quotes) are steered: their nesting is read off the generated
//! bytes. An answer that still cannot end in time ends with `length`, partial.

use toktrie::TokTrie;

/// Repetitions of the same run of tokens that count as a loop.
pub const REPEATS: usize = 4;
/// Longest run (in tokens) looked for.
const MAX_PERIOD: usize = 16;
/// Shortest loop (in tokens) acted on: `0, 0, 0, 0` in a list of numbers is
/// not yet one.
const MIN_LOOP_TOKENS: usize = 12;

/// Where generated JSON stands: inside a string or not, and the open brackets.
#[derive(Debug, Default, Clone)]
pub struct JsonState {
    in_string: bool,
    escaped: bool,
    open: Vec<u8>,
}

impl JsonState {
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' => self.open.push(b'}'),
                b'[' => self.open.push(b']'),
                b'}' | b']' => {
                    self.open.pop();
                }
                _ => {}
            }
        }
    }

    /// Byte strings that move toward the end, best first.
    fn candidates(&self) -> Vec<Vec<u8>> {
        let closers: Vec<u8> = self.open.iter().rev().copied().collect();
        let mut out = Vec::new();
        if self.in_string {
            for n in (0..=closers.len()).rev() {
                let mut c = vec![b'"'];
                c.extend_from_slice(&closers[..n]);
                out.push(c);
            }
            return out;
        }
        for n in (1..=closers.len()).rev() {
            out.push(closers[..n].to_vec());
        }
        for v in ["0", "\"\"", "null", "false", "true", "[]", "{}", "\"", "[", "{", ": ", ":", " ", ", ", ","] {
            out.push(v.as_bytes().to_vec());
        }
        out
    }
}

/// The length of the run `tokens` ends repeating [`REPEATS`] times, if any.
pub fn loop_period(tokens: &[u32]) -> Option<usize> {
    (1..=MAX_PERIOD).find(|p| {
        let n = p * REPEATS;
        n >= MIN_LOOP_TOKENS && tokens.len() >= n && {
            let tail = &tokens[tokens.len() - n..];
            tail.chunks(*p).all(|c| c == &tail[..*p])
        }
    })
}

pub fn looping(tokens: &[u32]) -> bool {
    loop_period(tokens).is_some()
}

/// The token a loop would draw next.
pub fn loop_next(tokens: &[u32]) -> Option<u32> {
    loop_period(tokens).map(|p| tokens[tokens.len() - p])
}

/// Tokens kept in hand to finish JSON when `max_tokens` nears: a fifth of
/// the budget, from 6 to 32.
pub fn reserve(max_tokens: usize) -> usize {
    (max_tokens / 5).clamp(6, 32)
}

/// The token to keep: `end` where the constraint may end now, else the
/// first allowed candidate that is one token of `trie`.
pub fn steer(state: &JsonState, trie: &TokTrie, allowed: impl Fn(u32) -> bool, end: Option<u32>) -> Option<u32> {
    if let Some(e) = end {
        return Some(e);
    }
    candidate_ids(state, trie).into_iter().find(|&t| allowed(t))
}

/// The candidates of `state` that are single tokens, best first.
pub fn candidate_ids(state: &JsonState, trie: &TokTrie) -> Vec<u32> {
    state.candidates().iter().filter_map(|c| trie.token_id(c)).collect()
}

/// Characters tried, one token each, to reach a place where a candidate is
/// allowed (an email needs `@` and a domain before its closing quote, a date
/// its digits and dashes, ...).
const ALPHABET: &[u8] = b"a0A@.-_:/ TZ+1#=";
/// How many characters ahead such a place is looked for.
pub const LOOKAHEAD: usize = 3;

/// The single-byte tokens of [`ALPHABET`].
pub fn alphabet(trie: &TokTrie) -> Vec<u32> {
    ALPHABET.iter().filter_map(|b| trie.token_id(&[*b])).collect()
}

/// The first token of the shortest run of `alphabet` tokens (at most
/// [`LOOKAHEAD`]) after which one of `targets` is valid; `valid(tokens)` says
/// how many of `tokens` the constraint accepts from where it stands.
pub fn path_to(targets: &[u32], alphabet: &[u32], mut valid: impl FnMut(&[u32]) -> usize) -> Option<u32> {
    let mut frontier: Vec<Vec<u32>> = vec![Vec::new()];
    for _ in 0..LOOKAHEAD {
        let mut next = Vec::new();
        for p in &frontier {
            for &a in alphabet {
                let mut q = p.clone();
                q.push(a);
                if valid(&q) != q.len() {
                    continue;
                }
                for &t in targets {
                    q.push(t);
                    let ok = valid(&q) == q.len();
                    q.pop();
                    if ok {
                        return q.first().copied();
                    }
                }
                next.push(q);
            }
        }
        // Bounded work: the widest level is cut to what a step can afford.
        next.truncate(64);
        frontier = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_runs_repeated() {
        let run: Vec<u32> = [5, 6, 7].repeat(4);
        assert!(looping(&run));
        assert!(!looping(&run[1..]));
        assert!(!looping(&[1, 1, 1, 1]), "short runs are not loops yet");
        assert!(looping(&[9; 12]));
        let mut x: Vec<u32> = (0..40).collect();
        assert!(!looping(&x));
        x.extend([1, 2].repeat(8));
        assert!(looping(&x));
        assert_eq!(loop_period(&x), Some(4), "the shortest run that repeats four times and is long enough");
        assert_eq!(loop_next(&x), Some(1));
        assert_eq!((reserve(8), reserve(100), reserve(4096)), (6, 20, 32));
    }

    #[test]
    fn paths_reach_a_closer() {
        // Tokens are bytes here; "valid" is the regex [a-z]+@[a-z]+" as a prefix check.
        let valid = |t: &[u32]| -> usize {
            let s: Vec<u8> = t.iter().map(|&x| x as u8).collect();
            let mut n = 0;
            let (mut at, mut after) = (false, 0);
            for (i, &b) in s.iter().enumerate() {
                let ok = match b {
                    b'a'..=b'z' => true,
                    b'@' => !at && i > 0 && { at = true; true },
                    b'"' => at && after > 0,
                    _ => false,
                };
                if !ok { break; }
                if at && b != b'@' { after += 1; }
                n += 1;
            }
            n
        };
        let alphabet: Vec<u32> = b"0@a".iter().map(|&b| b as u32).collect();
        assert_eq!(path_to(&[b'"' as u32], &alphabet, |t| valid(&[&[b'x' as u32][..], t].concat()) - 1), Some(b'@' as u32));
        assert_eq!(path_to(&[b'"' as u32], &alphabet[..1], |t| valid(t)), None);
    }

    #[test]
    fn json_state_follows_strings_and_brackets() {
        let mut s = JsonState::default();
        s.push(br#"{"a": [1, {"b": "x\"}]"#);
        assert!(s.in_string);
        assert_eq!(s.candidates()[0], b"\"}]}");
        s.push(br#"", "c": "#);
        assert!(!s.in_string);
        assert_eq!(s.candidates()[0], b"}]}");
        assert_eq!(s.candidates()[2], b"}");
    }
}
