package current

import (
	"fmt"
	"time"
)

// RetentionReport says what one run of log retention deleted.
type RetentionReport struct {
	Deleted int   `json:"deleted"`
	Freed   int64 `json:"freed_bytes"`
}

// EnforceRetention deletes the logs of finished jobs older than LogMaxAge, then the
// oldest ones while all logs take more than LogMaxBytes. The engine runs it every
// RetentionEvery; the results stay, with their logs marked deleted.
func (e *Engine) EnforceRetention() (RetentionReport, error) {
	var rep RetentionReport
	if e.cfg.LogMaxAge <= 0 && e.cfg.LogMaxBytes <= 0 {
		return rep, nil
	}
	type victim struct {
		id   int64
		size int64
	}
	var victims []victim
	if e.cfg.LogMaxAge > 0 {
		cutoff := time.Now().Add(-e.cfg.LogMaxAge).UnixNano()
		rs, err := e.db.db.Query(`SELECT id, log_size FROM results WHERE log_deleted = 0 AND finished_at > 0 AND finished_at < $1`, cutoff)
		if err != nil {
			return rep, fmt.Errorf("log retention: %w", err)
		}
		for rs.Next() {
			var v victim
			if err := rs.Scan(&v.id, &v.size); err != nil {
				rs.Close()
				return rep, fmt.Errorf("log retention: %w", err)
			}
			victims = append(victims, v)
		}
		rs.Close()
	}
	if err := e.deleteLogs(victims2ids(victims, func(v victim) int64 { return v.id }), &rep, victims2ids(victims, func(v victim) int64 { return v.size })); err != nil {
		return rep, err
	}
	if e.cfg.LogMaxBytes > 0 {
		var total int64
		if err := e.db.db.QueryRow(`SELECT COALESCE(SUM(log_size), 0) FROM results WHERE log_deleted = 0 AND finished_at > 0`).Scan(&total); err != nil {
			return rep, fmt.Errorf("log retention: %w", err)
		}
		if total > e.cfg.LogMaxBytes {
			rs, err := e.db.db.Query(`SELECT id, log_size FROM results WHERE log_deleted = 0 AND finished_at > 0 ORDER BY finished_at`)
			if err != nil {
				return rep, fmt.Errorf("log retention: %w", err)
			}
			var ids, sizes []int64
			for rs.Next() && total > e.cfg.LogMaxBytes {
				var id, size int64
				if err := rs.Scan(&id, &size); err != nil {
					rs.Close()
					return rep, fmt.Errorf("log retention: %w", err)
				}
				ids, sizes = append(ids, id), append(sizes, size)
				total -= size
			}
			rs.Close()
			if err := e.deleteLogs(ids, &rep, sizes); err != nil {
				return rep, err
			}
		}
	}
	if rep.Deleted > 0 {
		e.log.Info("log retention", "deleted", rep.Deleted, "freed_bytes", rep.Freed)
		e.metrics.logsDeleted.Add(float64(rep.Deleted))
	}
	return rep, nil
}

func victims2ids[V any](vs []V, f func(V) int64) []int64 {
	out := make([]int64, len(vs))
	for i, v := range vs {
		out[i] = f(v)
	}
	return out
}

func (e *Engine) deleteLogs(ids []int64, rep *RetentionReport, sizes []int64) error {
	if len(ids) == 0 {
		return nil
	}
	tx, err := e.db.db.Begin()
	if err != nil {
		return fmt.Errorf("log retention: %w", err)
	}
	for i, id := range ids {
		if err := e.logs.remove(id); err != nil {
			e.log.Warn("log retention: delete log", "job", id, "err", err)
			continue
		}
		if _, err := tx.Exec(`UPDATE results SET log_deleted = 1 WHERE id = $1`, id); err != nil {
			tx.Rollback()
			return fmt.Errorf("log retention: %w", err)
		}
		rep.Deleted++
		rep.Freed += sizes[i]
	}
	return tx.Commit()
}

// finishAbandoned finishes jobs interrupted by a restart that no pipeline wanted again
// within InterruptedGrace.
func (e *Engine) finishAbandoned() {
	if time.Since(e.started) < e.cfg.InterruptedGrace {
		return
	}
	now := time.Now().UnixNano()
	res, err := e.db.db.Exec(`UPDATE results SET state = 'failed', failure_kind = $1, rebuild = 1, finished_at = $2,
		message = 'interrupted by a restart and not wanted again' WHERE state = 'interrupted' AND ready_at < $3`,
		string(FailInterrupted), now, e.started.UnixNano())
	if err != nil {
		e.log.Warn("finish interrupted jobs", "err", err)
		return
	}
	if n, _ := res.RowsAffected(); n > 0 {
		e.log.Info("finished interrupted jobs no pipeline wanted again", "jobs", n)
	}
}
