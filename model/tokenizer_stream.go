package model

import "unicode/utf8"

// StreamDecoder turns generated token ids into text as they arrive without ever splitting a UTF-8
// character: a byte-level token can end in the middle of a character (an emoji is often two or
// three tokens), so bytes of an unfinished character are held back until the token that
// completes them arrives. Control tokens (Tokenizer.IsControl) produce no text. Pieces come from
// Tokenizer.TokenBytes, so SentencePiece's leading-space strip of Decode is not applied. Bytes that
// can never form a valid character are passed through as they are, so the concatenation of all
// Push results and Flush equals the concatenated TokenBytes of the non-control ids. Not safe for
// concurrent use.
type StreamDecoder struct {
	tok     Tokenizer
	pending []byte
}

// NewStreamDecoder returns a StreamDecoder reading pieces from tok.
func NewStreamDecoder(tok Tokenizer) *StreamDecoder { return &StreamDecoder{tok: tok} }

// Push adds id and returns the text that is now complete: every byte received so far except a
// trailing, still incomplete UTF-8 sequence. It returns "" while a character is unfinished.
func (d *StreamDecoder) Push(id int) string {
	if d.tok == nil || d.tok.IsControl(id) {
		return ""
	}
	d.pending = append(d.pending, d.tok.TokenBytes(id)...)
	n := completeUTF8Prefix(d.pending)
	if n == 0 {
		return ""
	}
	s := string(d.pending[:n])
	d.pending = append(d.pending[:0], d.pending[n:]...)
	return s
}

// Flush returns the bytes still held (an unfinished character at the end of generation) and
// resets the decoder.
func (d *StreamDecoder) Flush() string {
	s := string(d.pending)
	d.pending = d.pending[:0]
	return s
}

// completeUTF8Prefix returns the length of b without its trailing incomplete UTF-8 sequence: the
// start of the last character (at most 3 bytes back) is found, and if the bytes from there are a
// valid but unfinished encoding they are excluded.
func completeUTF8Prefix(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}
