package current

import (
	"bufio"
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// LogRule explains failures whose log matches Pattern (a Go regexp applied to each line):
// the failure's message becomes Explanation.
type LogRule struct {
	ID          int64     `json:"id"`
	Pattern     string    `json:"pattern"`
	Explanation string    `json:"explanation"`
	Created     time.Time `json:"created"`
}

type compiledRule struct {
	LogRule
	re *regexp.Regexp
}

func checkRule(pattern, explanation string) (*regexp.Regexp, error) {
	if strings.TrimSpace(pattern) == "" {
		return nil, invalid("log rule: pattern is empty")
	}
	if strings.TrimSpace(explanation) == "" {
		return nil, invalid("log rule: explanation is empty")
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, invalid("log rule: pattern: %v", err)
	}
	return re, nil
}

// LogRules lists the log rules, oldest first (the first matching rule wins).
func (e *Engine) LogRules() ([]LogRule, error) {
	rs, err := e.db.db.Query(`SELECT id, pattern, explanation, created_at FROM log_rules ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list log rules: %w", err)
	}
	defer rs.Close()
	var out []LogRule
	for rs.Next() {
		var r LogRule
		var created int64
		if err := rs.Scan(&r.ID, &r.Pattern, &r.Explanation, &created); err != nil {
			return nil, fmt.Errorf("list log rules: %w", err)
		}
		r.Created = time.Unix(0, created)
		out = append(out, r)
	}
	return out, rs.Err()
}

// AddLogRule adds a rule; a pattern that is not a valid regexp is refused.
func (e *Engine) AddLogRule(pattern, explanation string) (LogRule, error) {
	if _, err := checkRule(pattern, explanation); err != nil {
		return LogRule{}, err
	}
	now := time.Now()
	res, err := e.db.db.Exec(`INSERT INTO log_rules (pattern, explanation, created_at) VALUES (?, ?, ?)`, pattern, explanation, now.UnixNano())
	if err != nil {
		return LogRule{}, fmt.Errorf("add log rule: %w", err)
	}
	id, _ := res.LastInsertId()
	return LogRule{ID: id, Pattern: pattern, Explanation: explanation, Created: now}, nil
}

// UpdateLogRule replaces the pattern and explanation of rule id.
func (e *Engine) UpdateLogRule(id int64, pattern, explanation string) error {
	if _, err := checkRule(pattern, explanation); err != nil {
		return err
	}
	res, err := e.db.db.Exec(`UPDATE log_rules SET pattern = ?, explanation = ? WHERE id = ?`, pattern, explanation, id)
	if err != nil {
		return fmt.Errorf("update log rule %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("log rule", strconv.FormatInt(id, 10))
	}
	return nil
}

// DeleteLogRule removes rule id.
func (e *Engine) DeleteLogRule(id int64) error {
	res, err := e.db.db.Exec(`DELETE FROM log_rules WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete log rule %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("log rule", strconv.FormatInt(id, 10))
	}
	return nil
}

func (e *Engine) compiledRules() []compiledRule {
	rules, err := e.LogRules()
	if err != nil {
		e.log.Warn("log rules", "err", err)
		return nil
	}
	out := make([]compiledRule, 0, len(rules))
	for _, r := range rules {
		if re, err := regexp.Compile(r.Pattern); err == nil {
			out = append(out, compiledRule{r, re})
		}
	}
	return out
}

// logTail is the last part of a log searched by the rules.
const logTail = 1 << 20

func readTail(path string) ([]byte, error) {
	f, err := openLogFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := st.Size() - logTail
	if off < 0 {
		off = 0
	}
	return io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
}

// matchLine returns the first line of log matching re (1-based number relative to the tail).
func matchLine(log []byte, re *regexp.Regexp) (int, string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64*1024), logTail)
	for i := 1; sc.Scan(); i++ {
		if re.Match(sc.Bytes()) {
			return i, sc.Text(), true
		}
	}
	return 0, "", false
}

// explain returns the explanation of the first rule matching the log at path.
func (e *Engine) explain(path string) string {
	rules := e.compiledRules()
	if len(rules) == 0 {
		return ""
	}
	log, err := readTail(path)
	if err != nil {
		return ""
	}
	for _, r := range rules {
		if _, _, ok := matchLine(log, r.re); ok {
			return r.Explanation
		}
	}
	return ""
}

// RuleMatch is the outcome of testing a pattern against one failed job's log.
type RuleMatch struct {
	JobID   string `json:"job_id"`
	Op      string `json:"op"`
	Label   string `json:"label"`
	Matched bool   `json:"matched"`
	Line    int    `json:"line,omitempty"` // line number within the searched tail
	Text    string `json:"text,omitempty"`
	Error   string `json:"error,omitempty"` // the log could not be read
}

// TestLogRule tries pattern against the logs of the n most recent failed jobs (default 20)
// without storing anything.
func (e *Engine) TestLogRule(pattern string, n int) ([]RuleMatch, error) {
	re, err := checkRule(pattern, "-")
	if err != nil {
		return nil, err
	}
	if n <= 0 {
		n = 20
	}
	rows, err := e.db.rows(`SELECT `+rowCols+` FROM results WHERE state = 'failed' AND log_deleted = 0 ORDER BY finished_at DESC LIMIT ?`, n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	out := make([]RuleMatch, 0, len(rows))
	for _, r := range rows {
		m := RuleMatch{JobID: strconv.FormatInt(r.ID, 10), Op: r.Op, Label: r.Label}
		log, err := readTail(e.logPath(r.ID))
		if err != nil {
			m.Error = err.Error()
		} else {
			m.Line, m.Text, m.Matched = matchLine(log, re)
		}
		out = append(out, m)
	}
	return out, nil
}
