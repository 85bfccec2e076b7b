package model

// unreachablePreToken looks for a token on which HF's `ignore_merges` changes the result: one
// that a pre-token can equal (its bytes, cut by the pre-tokenizer pattern alone, are one whole
// pre-token, and the token is the byte-level form of those bytes) but that applying the merges
// to those bytes does not produce as the single token it is. With ignore_merges such a
// pre-token is emitted whole, without it merged into other tokens; with no such token the flag
// cannot change any tokenization. It returns the token of lowest id found, or found false.
//
// Checking a token in isolation covers every context: the pattern's alternatives read no text
// after the match except the look-ahead of `\s+(?!\S)`, which succeeds at the end of the text,
// so a string that is a pre-token somewhere is also the single pre-token of itself.
func (t *BPETokenizer) unreachablePreToken() (tok string, id int, found bool) {
	for id, tok := range t.tokens {
		if t.ids[tok] != id || tok == "" {
			continue // a duplicate string (t.ids keeps one id) or an empty slot
		}
		raw := ByteLevelDecode(tok)
		if ByteLevelEncode(string(raw)) != tok {
			continue // not in the byte-level alphabet: no pre-token maps to it
		}
		if pieces := t.preTokenize(string(raw)); len(pieces) != 1 || pieces[0] != string(raw) {
			continue
		}
		if got := t.mergeWord(tok, nil); len(got) != 1 || got[0] != id {
			return tok, id, true
		}
	}
	return "", 0, false
}
