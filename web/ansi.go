package web

import (
	"fmt"
	"html"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ansiStyle is the SGR state of a terminal at some point of a log.
type ansiStyle struct {
	fg, bg                   string // "" = default; "c3" = palette class; "#rrggbb"
	bold, faint, italic, und bool
}

func (s ansiStyle) plain() bool { return s == ansiStyle{} }

// open writes the span that starts s.
func (s ansiStyle) open(b *strings.Builder) {
	var class []string
	var style []string
	if s.bold {
		class = append(class, "ab")
	}
	if s.faint {
		class = append(class, "af")
	}
	if s.italic {
		class = append(class, "ai")
	}
	if s.und {
		class = append(class, "au")
	}
	for _, c := range [2]struct{ v, pre, prop string }{{s.fg, "f", "color"}, {s.bg, "b", "background-color"}} {
		switch {
		case c.v == "":
		case c.v[0] == '#':
			style = append(style, c.prop+":"+c.v)
		default:
			class = append(class, c.pre+c.v)
		}
	}
	b.WriteString("<span")
	if len(class) > 0 {
		b.WriteString(` class="` + strings.Join(class, " ") + `"`)
	}
	if len(style) > 0 {
		b.WriteString(` style="` + strings.Join(style, ";") + `"`)
	}
	b.WriteString(">")
}

// ANSIRenderer turns lines of terminal output with ANSI colour codes into HTML. It keeps
// the colour state from one line to the next, as a terminal does.
type ANSIRenderer struct{ st ansiStyle }

// Line renders one line (without its newline) as HTML: text escaped, SGR colours as
// spans, every other escape sequence and control character dropped, and a carriage return
// keeping only what follows it.
func (r *ANSIRenderer) Line(line []byte) string {
	if i := lastCR(line); i >= 0 {
		line = line[i+1:]
	}
	var b strings.Builder
	open := false
	if !r.st.plain() {
		r.st.open(&b)
		open = true
	}
	text := make([]byte, 0, len(line))
	flush := func() {
		if len(text) > 0 {
			b.WriteString(html.EscapeString(strings.ToValidUTF8(string(text), "\uFFFD")))
			text = text[:0]
		}
	}
	for i := 0; i < len(line); {
		c := line[i]
		if c == 0x1b {
			flush()
			n, params, final := scanEscape(line[i:])
			i += n
			if final == 'm' {
				prev := r.st
				r.st = applySGR(r.st, params)
				if r.st != prev {
					if open {
						b.WriteString("</span>")
						open = false
					}
					if !r.st.plain() {
						r.st.open(&b)
						open = true
					}
				}
			}
			continue
		}
		if c < 0x20 && c != '\t' || c == 0x7f {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			_, n := utf8.DecodeRune(line[i:])
			text = append(text, line[i:i+n]...)
			i += n
			continue
		}
		text = append(text, c)
		i++
	}
	flush()
	if open {
		b.WriteString("</span>")
	}
	return b.String()
}

func lastCR(line []byte) int {
	// A trailing CR (CRLF line ends) does not erase the line.
	end := len(line)
	for end > 0 && line[end-1] == '\r' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if line[i] == '\r' {
			return i
		}
	}
	return -1
}

// scanEscape reads the escape sequence at the start of s (s[0] is ESC) and returns its
// length, its CSI parameters and its final byte (0 if it is not a CSI sequence).
func scanEscape(s []byte) (n int, params string, final byte) {
	if len(s) < 2 {
		return len(s), "", 0
	}
	switch s[1] {
	case '[':
		for j := 2; j < len(s); j++ {
			if s[j] >= 0x40 && s[j] <= 0x7e {
				return j + 1, string(s[2:j]), s[j]
			}
			if s[j] < 0x20 || s[j] > 0x7e {
				return j, "", 0
			}
		}
		return len(s), "", 0
	case ']', 'P', '_', '^': // OSC, DCS, APC, PM: up to BEL or ST
		for j := 2; j < len(s); j++ {
			if s[j] == 0x07 {
				return j + 1, "", 0
			}
			if s[j] == 0x1b && j+1 < len(s) && s[j+1] == '\\' {
				return j + 2, "", 0
			}
		}
		return len(s), "", 0
	}
	return 2, "", 0
}

// applySGR applies the Select Graphic Rendition parameters p to st.
func applySGR(st ansiStyle, p string) ansiStyle {
	if p == "" {
		return ansiStyle{}
	}
	fields := strings.FieldsFunc(p, func(r rune) bool { return r == ';' || r == ':' })
	num := func(i int) int {
		if i >= len(fields) {
			return -1
		}
		v, err := strconv.Atoi(fields[i])
		if err != nil || v > 255 {
			return -1
		}
		return v
	}
	for i := 0; i < len(fields); i++ {
		v := num(i)
		switch {
		case v == 0:
			st = ansiStyle{}
		case v == 1:
			st.bold = true
		case v == 2:
			st.faint = true
		case v == 3:
			st.italic = true
		case v == 4:
			st.und = true
		case v == 22:
			st.bold, st.faint = false, false
		case v == 23:
			st.italic = false
		case v == 24:
			st.und = false
		case v >= 30 && v <= 37:
			st.fg = "c" + strconv.Itoa(v-30)
		case v == 39:
			st.fg = ""
		case v >= 40 && v <= 47:
			st.bg = "c" + strconv.Itoa(v-40)
		case v == 49:
			st.bg = ""
		case v >= 90 && v <= 97:
			st.fg = "c" + strconv.Itoa(v-90+8)
		case v >= 100 && v <= 107:
			st.bg = "c" + strconv.Itoa(v-100+8)
		case v == 38 || v == 48:
			var col string
			switch num(i + 1) {
			case 5:
				if c := num(i + 2); c >= 0 {
					col = palette256(c)
				}
				i += 2
			case 2:
				r, g, b := num(i+2), num(i+3), num(i+4)
				if r >= 0 && g >= 0 && b >= 0 {
					col = fmt.Sprintf("#%02x%02x%02x", r, g, b)
				}
				i += 4
			default:
				i = len(fields)
			}
			if col != "" {
				if v == 38 {
					st.fg = col
				} else {
					st.bg = col
				}
			}
		}
	}
	return st
}

// palette256 names colour c of the xterm 256-colour palette.
func palette256(c int) string {
	switch {
	case c < 16:
		return "c" + strconv.Itoa(c)
	case c < 232:
		c -= 16
		lv := func(x int) int {
			if x == 0 {
				return 0
			}
			return 55 + 40*x
		}
		return fmt.Sprintf("#%02x%02x%02x", lv(c/36), lv(c/6%6), lv(c%6))
	default:
		g := 8 + 10*(c-232)
		return fmt.Sprintf("#%02x%02x%02x", g, g, g)
	}
}
