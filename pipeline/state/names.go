package state

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// File names of batch keys in a per-instance state directory. Keys are arbitrary strings (user
// ids, emails), so a name keeps the bytes that are safe everywhere and %-escapes the rest:
//   - lower-case ASCII letters, digits and - @ + = are kept, and _ . after the first byte;
//   - upper-case letters are escaped too, so "Ana" and "ana" differ on case-insensitive file
//     systems (macOS, Windows), and so is every non-ASCII byte (macOS would otherwise rewrite the
//     Unicode normalisation of a name);
//   - a leading "." or "_" is escaped (names never hide, never climb, and never meet the
//     directory's own files, which all start with "."), as is a trailing "." (Windows drops it)
//     and the first letter of a Windows device name (con, nul, com1, ...);
//   - "" is _default, as in remote state;
//   - a name longer than maxKeyName keeps a readable prefix and ends in "~" and a hash of the key;
//     "~" appears in no other name, and such a file's key is read from the file itself.
//
// Escapes use upper-case hex and every other letter is lower case, so a name is its key's only
// spelling even after case folding.

// maxKeyName leaves room for ".json.backup", the temp prefix and suffix within 255 bytes.
const maxKeyName = 160

const defaultKeyName = "_default"

func keySafe(c byte, first bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '@', c == '+', c == '=':
		return true
	case c == '_', c == '.':
		return !first
	}
	return false
}

// keyName is the file name (without ".json") of a batch key.
func keyName(key string) string {
	if key == "" {
		return defaultKeyName
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		last := i == len(key)-1
		if keySafe(c, i == 0) && !(last && c == '.') && !(i == 0 && windowsDevice(key)) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteString(strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	name := b.String()
	if len(name) <= maxKeyName {
		return name
	}
	sum := sha256.Sum256([]byte(key))
	return cutEscaped(name, 100) + "~" + hex.EncodeToString(sum[:16])
}

// cutEscaped shortens an escaped name to at most n bytes without splitting an escape.
func cutEscaped(name string, n int) string {
	name = name[:n]
	if i := strings.LastIndexByte(name, '%'); i >= 0 && i > len(name)-3 {
		name = name[:i]
	}
	return name
}

// windowsDevice reports whether the part of key before its first "." is a reserved device name
// on Windows, where "con.json" cannot be created.
func windowsDevice(key string) bool {
	base, _, _ := strings.Cut(key, ".")
	switch base {
	case "con", "prn", "aux", "nul":
		return true
	}
	return len(base) == 4 && (base[:3] == "com" || base[:3] == "lpt") && base[3] >= '0' && base[3] <= '9'
}

// hashedName reports whether name is the shortened form, whose key only the file knows.
func hashedName(name string) bool { return strings.Contains(name, "~") }

// nameKey decodes a name made by keyName; ok is false for hashed names and for any name keyName
// would not have made (a file someone else put there).
func nameKey(name string) (string, bool) {
	if name == defaultKeyName {
		return "", true
	}
	if name == "" || hashedName(name) {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(name) || !upperHex(name[i+1]) || !upperHex(name[i+2]) {
			return "", false
		}
		v, _ := hex.DecodeString(strings.ToLower(name[i+1 : i+3]))
		b.WriteByte(v[0])
		i += 2
	}
	key := b.String()
	return key, key != "" && keyName(key) == name
}

func upperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }
