package model

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStreamDecoderHoldsPartialCharacters(t *testing.T) {
	tok := newTestBPE(t, "llama-bpe")
	d := NewStreamDecoder(tok)
	// Byte tokens have id = byte value. "é" is C3 A9, "😀" is F0 9F 98 80.
	require.Equal(t, "", d.Push(0xC3))
	require.Equal(t, "é", d.Push(0xA9))
	require.Equal(t, "", d.Push(0xF0))
	require.Equal(t, "", d.Push(0x9F))
	require.Equal(t, "", d.Push(0x98))
	require.Equal(t, "😀", d.Push(0x80))
	require.Equal(t, "hello", d.Push(tHELLO))
	require.Equal(t, "", d.Push(tEOT), "control tokens produce no text")
	require.Equal(t, "<tool>", d.Push(tTool), "user-defined tokens are text")
	// A character cut short by a complete token is invalid and passed through as is.
	require.Equal(t, "", d.Push(0xE4))
	require.Equal(t, "\xe4hello", d.Push(tHELLO))
	require.Equal(t, "\xff", d.Push(0xFF))
	// The unfinished tail comes out of Flush.
	require.Equal(t, "", d.Push(0xE4))
	require.Equal(t, "", d.Push(0xB8))
	require.Equal(t, "\xe4\xb8", d.Flush())
	require.Equal(t, "", d.Flush())
	require.Equal(t, "", d.Push(-1), "out-of-range ids produce nothing")
	require.Equal(t, "", NewStreamDecoder(nil).Push(1))
}

func TestCompleteUTF8Prefix(t *testing.T) {
	require.Equal(t, 0, completeUTF8Prefix(nil))
	require.Equal(t, 3, completeUTF8Prefix([]byte("abc")))
	require.Equal(t, 1, completeUTF8Prefix([]byte("a\xf0\x9f\x98")))
	require.Equal(t, 5, completeUTF8Prefix([]byte("a\xf0\x9f\x98\x80")))
	require.Equal(t, 2, completeUTF8Prefix([]byte("\xf0a")), "invalid lead byte is complete")
	require.Equal(t, 4, completeUTF8Prefix([]byte("\x80\x80\x80\x80")), "stray continuation bytes pass")
}
