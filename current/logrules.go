package current

import (
	"bufio"
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
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
	var id int64
	err := e.db.db.QueryRow(`INSERT INTO log_rules (pattern, explanation, created_at) VALUES ($1, $2, $3) RETURNING id`,
		pattern, explanation, now.UnixNano()).Scan(&id)
	if err != nil {
		return LogRule{}, fmt.Errorf("add log rule: %w", err)
	}
	return LogRule{ID: id, Pattern: pattern, Explanation: explanation, Created: now}, nil
}

// UpdateLogRule replaces the pattern and explanation of rule id.
func (e *Engine) UpdateLogRule(id int64, pattern, explanation string) error {
	if _, err := checkRule(pattern, explanation); err != nil {
		return err
	}
	res, err := e.db.db.Exec(`UPDATE log_rules SET pattern = $1, explanation = $2 WHERE id = $3`, pattern, explanation, id)
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
	res, err := e.db.db.Exec(`DELETE FROM log_rules WHERE id = $1`, id)
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

func readTail(store logStore, id int64) ([]byte, error) {
	f, err := store.open(id)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.size()
	if err != nil {
		return nil, err
	}
	off := max(size-logTail, 0)
	return io.ReadAll(io.NewSectionReader(f, off, size-off))
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

// explain returns the explanation of the first rule matching job id's log.
func (e *Engine) explain(id int64) string {
	rules := e.compiledRules()
	if len(rules) == 0 {
		return ""
	}
	log, err := readTail(e.logs, id)
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
	rows, err := e.db.rows(`SELECT `+rowCols+` FROM results WHERE state = 'failed' AND log_deleted = 0 ORDER BY finished_at DESC LIMIT $1`, n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	out := make([]RuleMatch, 0, len(rows))
	for _, r := range rows {
		m := RuleMatch{JobID: strconv.FormatInt(r.ID, 10), Op: r.Op, Label: r.Label}
		log, err := readTail(e.logs, r.ID)
		if err != nil {
			m.Error = err.Error()
		} else {
			m.Line, m.Text, m.Matched = matchLine(log, re)
		}
		out = append(out, m)
	}
	return out, nil
}
