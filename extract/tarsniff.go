package extract

// isTarHeader reports whether b (at least 512 bytes) is a tar header block
// whose checksum is right. DetectCompression asks this before looking for
// compression magic, so a plain tar whose first name starts with gzip,
// zstd, bzip2 or xz magic bytes is read as the tar it is. The reverse
// mistake needs a compressed stream whose bytes 148..155 happen to spell
// in octal the sum of its first 512 bytes: not something data does by
// chance, and a hostile producer gains nothing by it (the stream is then
// read as a tar and checked as one).
func isTarHeader(b []byte) bool {
	if len(b) < 512 {
		return false
	}
	want, ok := parseOctal(b[148:156])
	if !ok {
		return false
	}
	var unsigned, signed int64
	for i, c := range b[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}

// parseOctal reads a tar numeric field: optional leading spaces, octal
// digits, then NULs or spaces to the end. At least one digit.
func parseOctal(f []byte) (int64, bool) {
	i := 0
	for i < len(f) && f[i] == ' ' {
		i++
	}
	var n int64
	digits := 0
	for ; i < len(f) && f[i] >= '0' && f[i] <= '7'; i++ {
		n = n<<3 | int64(f[i]-'0')
		digits++
	}
	for ; i < len(f); i++ {
		if f[i] != 0 && f[i] != ' ' {
			return 0, false
		}
	}
	return n, digits > 0
}
