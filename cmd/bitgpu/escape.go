package main

import (
	"fmt"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable returns s with everything a terminal could interpret escaped, so a string taken from
// a file (a GGUF's general.name, a tensor name, a tokenizer key, an error quoting any of them)
// prints as exactly what it says on exactly one line: control characters (newline, carriage
// return, ESC, DEL, the C1 range), Unicode format characters (bidirectional overrides) and
// invalid UTF-8 bytes become Go-style escapes (\n, \r, \t, \x1b, \u202e); a backslash stays as is.
// Printable text, spaces included, passes through unchanged.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !isSafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case isSafeRune(r):
			b.WriteString(s[i : i+n])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}

// isSafeRune reports whether r prints as itself without moving the cursor to another line or
// changing how the terminal shows what follows.
func isSafeRune(r rune) bool {
	return r == ' ' || (unicode.IsPrint(r) && !unicode.Is(unicode.Cf, r))
}

// sameFile reports whether a and b are the same open file (terminal, pipe or regular file), as
// when a shell redirects 2>&1; false when either cannot be examined.
func sameFile(a, b *os.File) bool {
	sa, err := a.Stat()
	if err != nil {
		return false
	}
	sb, err := b.Stat()
	return err == nil && os.SameFile(sa, sb)
}
