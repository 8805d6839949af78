//! Decoding a growing list of ids piece by piece, for printing tokens as they are sampled.
//!
//! One token can hold part of a multi-byte UTF-8 character (byte-level BPE), so decoding tokens one at a
//! time would print U+FFFD halves. [`TextStream`] decodes all the ids so far and hands out only the new
//! text up to the last complete character: trailing replacement characters are held back until the next
//! ids complete them (or [`TextStream::finish`] gives them out as they are).

use super::Tokenizer;

pub struct TextStream<'t> {
    tok: &'t Tokenizer,
    ids: Vec<u32>,
    /// Bytes of the decoded text already handed out.
    done: usize,
}

impl<'t> TextStream<'t> {
    pub fn new(tok: &'t Tokenizer) -> Self {
        TextStream { tok, ids: vec![], done: 0 }
    }

    /// Add one id; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids);
        let stable = text.trim_end_matches('\u{FFFD}');
        self.take(stable)
    }

    /// The text still held back (an incomplete character at the end, as U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = self.tok.decode(&self.ids);
        self.take(&text)
    }

    fn take(&mut self, text: &str) -> String {
        let piece = text.get(self.done..).unwrap_or_default().to_string();
        self.done = self.done.max(text.len());
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_byte_characters_come_out_whole() {
        let tok = Tokenizer::from_hf(crate::tokenizer::gpt2::build().unwrap()).unwrap();
        let text = "héllo → 世界 ok";
        let mut s = TextStream::new(&tok);
        let mut out = String::new();
        for id in tok.encode(text) {
            let piece = s.push(id);
            assert!(!piece.contains('\u{FFFD}'), "a broken character was printed: {piece:?}");
            out += &piece;
        }
        out += &s.finish();
        assert_eq!(out, text);
    }
}
