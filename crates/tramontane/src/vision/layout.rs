//! Where an image's rows go in the prompt: the chat template writes one image
//! token per image; the processor replaces it by the image's grid of merged
//! patches, a row of image tokens and a break token per row, the last break
//! turned into an end token (`[IMG]`… `[IMG_BREAK]` … `[IMG_END]`).

use crate::error::{Error, Result};

/// The image tokens' ids, as the tokenizer spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageTokens {
    pub image: u32,
    pub row_break: u32,
    pub end: u32,
}

/// `ids` with image token `k` (in order) expanded to `grids[k]` (rows,
/// columns); also, per expanded image, the positions its embedding rows go
/// to (one per image token, row by row). Every image token needs a grid and
/// every grid an image token: a mismatch is an INVALID_REQUEST.
pub fn expand(ids: &[u32], tokens: ImageTokens, grids: &[(usize, usize)]) -> Result<(Vec<u32>, Vec<Vec<usize>>)> {
    let placeholders = ids.iter().filter(|&&t| t == tokens.image).count();
    if placeholders != grids.len() {
        return Err(Error::InvalidRequest(format!(
            "the prompt has {placeholders} image placeholders for {} images (the chat template writes one per image part)",
            grids.len()
        )));
    }
    let extra: usize = grids.iter().map(|(r, c)| r * (c + 1)).sum();
    let mut out = Vec::with_capacity(ids.len() + extra);
    let mut rows = Vec::with_capacity(grids.len());
    let mut next = grids.iter();
    for &t in ids {
        if t != tokens.image {
            out.push(t);
            continue;
        }
        let &(r, c) = next.next().ok_or_else(|| Error::Internal("image grids ran out".into()))?;
        if r == 0 || c == 0 {
            return Err(Error::InvalidRequest(format!("an image of {r}x{c} tokens")));
        }
        let mut at = Vec::with_capacity(r * c);
        for row in 0..r {
            for _ in 0..c {
                at.push(out.len());
                out.push(tokens.image);
            }
            out.push(if row + 1 == r { tokens.end } else { tokens.row_break });
        }
        rows.push(at);
    }
    Ok((out, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: ImageTokens = ImageTokens { image: 10, row_break: 12, end: 13 };

    #[test]
    fn grids_expand_row_by_row() {
        let (ids, rows) = expand(&[1, 10, 5, 10], T, &[(2, 3), (1, 1)]).unwrap();
        assert_eq!(ids, vec![1, 10, 10, 10, 12, 10, 10, 10, 13, 5, 10, 13]);
        assert_eq!(rows, vec![vec![1, 2, 3, 5, 6, 7], vec![10]]);
        assert!(expand(&[1, 10], T, &[]).is_err(), "a placeholder without an image");
        assert!(expand(&[1], T, &[(1, 1)]).is_err(), "an image without a placeholder");
    }
}
