package dashboard

import (
	"strings"

	"github.com/charmbracelet/x/ansi"
)

// Column helpers. Every row of a table is built from fixed-width cells
// that depend only on the terminal width, so columns do not move when the
// cursor moves or the data changes.

// fit truncates s to w cells, ending in "..." when cut, and pads it to w.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if ansi.StringWidth(s) > w {
		if w <= 3 {
			s = ansi.Truncate(s, w, "")
		} else {
			s = ansi.Truncate(s, w, "...")
		}
	}
	return s + strings.Repeat(" ", w-ansi.StringWidth(s))
}

// fitRight is fit aligned right, for numbers.
func fitRight(s string, w int) string {
	if ansi.StringWidth(s) >= w {
		return fit(s, w)
	}
	return strings.Repeat(" ", w-ansi.StringWidth(s)) + s
}

// cursor is the selection mark: ASCII and the same width on every row,
// so rows do not shift as the selection moves.
func cursor(selected bool) string {
	if selected {
		return "> "
	}
	return "  "
}

// bar draws an ASCII progress bar of width w (brackets included) for
// part of whole.
func bar(part, whole int64, w int) string {
	inner := w - 2
	if inner < 1 {
		return ""
	}
	n := 0
	if whole > 0 && part > 0 {
		n = int(float64(inner) * float64(min(part, whole)) / float64(whole))
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", inner-n) + "]"
}

// wrap splits s into lines of at most w cells, at most max lines (the
// last one truncated), for error messages in a panel.
func wrap(s string, w, max int) []string {
	if w <= 0 || max <= 0 {
		return nil
	}
	var out []string
	for _, para := range strings.Split(s, "\n") {
		r := []rune(para)
		for len(r) > w && len(out) < max-1 {
			cut := w
			for i := w; i > w/2; i-- {
				if r[i] == ' ' {
					cut = i
					break
				}
			}
			out = append(out, string(r[:cut]))
			for cut < len(r) && r[cut] == ' ' {
				cut++
			}
			r = r[cut:]
		}
		if len(out) >= max {
			break
		}
		out = append(out, fit(string(r), w))
	}
	return out
}

// window returns the range [start, end) of n rows to show in h lines so
// that row sel is visible.
func window(n, sel, h int) (int, int) {
	if h <= 0 {
		return 0, 0
	}
	start := 0
	if sel >= h {
		start = sel - h + 1
	}
	end := min(n, start+h)
	return start, end
}
