package current

import (
	"fmt"
	"strings"
)

// Level is how much harm a job can do; jobs above the engine's confirm level wait for an
// operator's confirmation.
type Level int

// The confirmation levels, from least to most risky.
const (
	LevelHarmless Level = iota + 1
	LevelMostlyHarmless
	LevelAverage
	LevelAboveAverage
	LevelDangerous
)

var levelNames = []string{"", "harmless", "mostly-harmless", "average", "above-average", "dangerous"}

func (l Level) String() string {
	if l >= LevelHarmless && l <= LevelDangerous {
		return levelNames[l]
	}
	if l == 0 {
		return "unset"
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// ParseLevel reads a level name (harmless, mostly-harmless, average, above-average,
// dangerous).
func ParseLevel(s string) (Level, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	for i, n := range levelNames {
		if i > 0 && n == t {
			return Level(i), nil
		}
	}
	return 0, &InvalidError{Msg: fmt.Sprintf("unknown confirmation level %q (want one of %s)", s, strings.Join(levelNames[1:], ", "))}
}

// MarshalText renders the level as its name.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a level name.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
