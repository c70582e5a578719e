package current

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Op is a cached operation: a build (its result depends only on its input) or a publish
// (it sets something outside, identified by Key, to its input). An operation runs once
// per (Name, key digest); its result, failure included, is kept in the store.
type Op[In, Out any] struct {
	// Name identifies the operation in the store; keep it stable.
	Name string
	// Publish marks an operation that sets something outside: while a new run is going,
	// its node shows the previous (latched) outcome.
	Publish bool
	// Key identifies the result (its history, its latch). Default: the input's JSON.
	// When the key stays the same but the input changes, the operation runs again.
	Key func(In) string
	// Label is a short description of the input for people (default: the key).
	Label func(In) string
	// Run does the work, writing its log to j. In and Out must encode as JSON.
	Run func(ctx context.Context, j *Job, in In) (Out, error)
	// Pool names the pool the jobs run in ("" is the pool "default").
	Pool string
	// Level is the confirmation level of the jobs (zero: LevelHarmless).
	Level Level
	// Timeout bounds one attempt (zero: none).
	Timeout time.Duration
	// NoRetry keeps the engine from retrying infrastructure failures of the jobs (for
	// operations that retry by themselves); the failure keeps its kind.
	NoRetry bool
	// ValidFor makes results expire after this long, so they are rebuilt (zero: never).
	ValidFor time.Duration
	// Jitter is the fraction of ValidFor by which expiries are spread (default 0.1).
	Jitter float64

	once sync.Once
	d    *opDef
}

type opDef struct {
	name     string
	publish  bool
	pool     string
	level    Level
	timeout  time.Duration
	noRetry  bool
	validFor time.Duration
	jitter   float64
	encode   func(in any) (key, label string, inJSON []byte, err error)
	run      func(ctx context.Context, j *Job, in any) (any, error)
	decode   func([]byte) (any, error)
	decodeIn func([]byte) (any, error)
}

func (op *Op[In, Out]) def() *opDef {
	op.once.Do(func() {
		d := &opDef{
			name: op.Name, publish: op.Publish, pool: op.Pool, level: op.Level,
			timeout: op.Timeout, noRetry: op.NoRetry, validFor: op.ValidFor, jitter: op.Jitter,
		}
		if d.level == 0 {
			d.level = LevelHarmless
		}
		if d.jitter <= 0 {
			d.jitter = 0.1
		}
		if d.jitter > 1 {
			d.jitter = 1
		}
		if d.pool == "" {
			d.pool = "default"
		}
		d.encode = func(v any) (string, string, []byte, error) {
			in := as[In](v)
			b, err := json.Marshal(in)
			if err != nil {
				return "", "", nil, fmt.Errorf("%s: encode input: %w", op.Name, err)
			}
			key := string(b)
			if op.Key != nil {
				key = op.Key(in)
			}
			label := key
			if op.Label != nil {
				label = op.Label(in)
			}
			if len(label) > 200 {
				label = label[:200] + "…"
			}
			return key, label, b, nil
		}
		d.run = func(ctx context.Context, j *Job, v any) (any, error) {
			if op.Run == nil {
				return nil, fmt.Errorf("operation %s has no Run function", op.Name)
			}
			return op.Run(ctx, j, as[In](v))
		}
		d.decode = func(b []byte) (any, error) {
			var out Out
			if err := json.Unmarshal(b, &out); err != nil {
				return nil, err
			}
			return out, nil
		}
		d.decodeIn = func(b []byte) (any, error) {
			var in In
			if err := json.Unmarshal(b, &in); err != nil {
				return nil, err
			}
			return in, nil
		}
		op.d = d
	})
	return op.d
}

// Do is the result of running op on the value of in.
func Do[In, Out any](op *Op[In, Out], in Term[In]) Term[Out] {
	return Term[Out]{newNode("op", op.Name, &opImpl{def: op.def()}, in.n)}
}

func digestOf(parts ...string) string {
	h := sha256.New()
	var buf [24]byte
	for _, p := range parts {
		b := strconv.AppendInt(buf[:0], int64(len(p)), 10)
		h.Write(append(b, ':'))
		io.WriteString(h, p)
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}

type entryKey struct{ op, digest string }

// entry is the live state of one (operation, key): its latest finished result and the
// job running for it, shared by every node wanting it.
type entry struct {
	e      *Engine
	def    *opDef
	k      entryKey
	refs   int
	nodes  []*node // the nodes reading it (usually one)
	last   *jobRow // latest finished (or interrupted) row
	value  any
	hasVal bool
	job    *runningJob
	timer  *time.Timer

	input any // the latest input wanted; encoded again when a job starts
	idig  string
	label string
	err   string
	// errKind is the failure kind of err; a store write that failed (disk full) is
	// retried by the entry's timer.
	errKind FailureKind
	// retries counts the retries in a row after a failed start or a disk-full failure.
	retries int
}

type opImpl struct {
	def   *opDef
	ent   *entry
	has   bool
	inVer uint64

	// The digests of the key and the encoded input of version encVer, and its label.
	enc    bool
	encVer uint64
	kdig   string
	idig   string
	label  string
}

func (o *opImpl) compute(n *node) output {
	e := n.e
	e.ops[o.def.name] = o.def
	in := n.inputs[0]
	if in.out.state != StateOk {
		o.detach(n)
		return in.out.passOn()
	}
	if o.has && o.ent != nil && in.ver == o.inVer {
		return o.ent.output()
	}
	if !o.enc || o.encVer != in.ver {
		key, label, b, err := o.def.encode(in.out.value)
		if err != nil {
			o.detach(n)
			o.has = false
			return failOut(err.Error())
		}
		o.kdig, o.idig, o.label = digestOf(o.def.name, key), digestOf(string(b)), label
		o.enc, o.encVer = true, in.ver
	}
	k := entryKey{o.def.name, o.kdig}
	ent := e.entries[k]
	if ent == nil {
		// Read from the store with the other keys wanted in this pass.
		o.detach(n)
		e.wantLookup(k, o.def, n)
		return activeOut(ActiveReady)
	}
	o.has, o.inVer = true, in.ver
	if ent != o.ent {
		o.detach(n)
		o.has = true
		o.ent = ent
		ent.refs++
		ent.nodes = append(ent.nodes, n)
	}
	ent.want(o.idig, in.out.value, o.label)
	return ent.output()
}

func (o *opImpl) detach(n *node) {
	if o.ent != nil {
		o.ent.nodes = slices.DeleteFunc(o.ent.nodes, func(m *node) bool { return m == n })
		n.e.entRels = append(n.e.entRels, o.ent)
		o.ent = nil
	}
	o.has = false
}

func (o *opImpl) start(n *node) {}

func (o *opImpl) stop(n *node) { o.detach(n) }

func (o *opImpl) display(n *node, out output) (State, string) {
	in := n.inputs[0].out
	if in.state == StateFailed {
		return StateBlocked, "input failed: " + in.msg
	}
	if in.state == StateActive {
		return StateBlocked, "waiting for input " + n.inputs[0].label
	}
	if o.ent != nil && o.ent.job != nil {
		return StateActive, o.ent.job.reason()
	}
	return out.state, out.msg
}

func (o *opImpl) activeState() (ActiveState, bool) {
	if o.ent != nil && o.ent.job != nil {
		return o.ent.job.activeState(), true
	}
	return 0, false
}

func (o *opImpl) jobInfo(n *node) (string, bool) {
	if o.ent == nil {
		return "", false
	}
	if o.ent.job != nil {
		return o.ent.job.id, o.ent.def.publish && o.ent.last != nil && o.ent.last.finished()
	}
	if o.ent.last != nil {
		return fmt.Sprint(o.ent.last.ID), false
	}
	return "", false
}

type lookup struct {
	def   *opDef
	nodes []*node
}

func (e *Engine) wantLookup(k entryKey, def *opDef, n *node) {
	lk := e.lookups[k]
	if lk == nil {
		lk = &lookup{def: def}
		e.lookups[k] = lk
	}
	lk.nodes = append(lk.nodes, n)
}

// loadLookups reads the latest rows of the keys wanted in this pass, many per query,
// and makes their entries.
func (e *Engine) loadLookups() {
	byOp := map[string][]string{}
	for k := range e.lookups {
		byOp[k.op] = append(byOp[k.op], k.digest)
	}
	rows := map[entryKey]*jobRow{}
	failed := map[string]error{}
	for op, digests := range byOp {
		for len(digests) > 0 {
			chunk := digests[:min(len(digests), 400)]
			digests = digests[len(chunk):]
			got, err := e.db.latestMany(op, chunk)
			if err != nil {
				failed[op] = err
				break
			}
			for _, r := range got {
				rows[entryKey{op, r.Digest}] = r
			}
		}
	}
	for k, lk := range e.lookups {
		ent := &entry{e: e, def: lk.def, k: k}
		if err := failed[k.op]; err != nil {
			ent.err = err.Error()
		}
		ent.setLast(rows[k])
		e.entries[k] = ent
		e.fresh = append(e.fresh, ent)
		for _, n := range lk.nodes {
			e.markDirty(n)
		}
	}
	clear(e.lookups)
	e.metrics.entries.Set(float64(len(e.entries)))
}

// setLast makes r the entry's latest row. A finished row's encoded input and output are
// dropped once decoded (the entry keeps the value, the store the bytes); an interrupted
// row keeps its input to be resumed with.
func (ent *entry) setLast(r *jobRow) {
	ent.last = r
	ent.value, ent.hasVal = nil, false
	if r == nil {
		return
	}
	if r.State == "ok" {
		v, err := ent.def.decode(r.Output)
		if err == nil {
			ent.value, ent.hasVal = v, true
		} else {
			ent.e.log.Warn("cached result no longer decodes; it will be rebuilt", "op", r.Op, "job", r.ID, "err", err)
		}
	}
	if r.finished() {
		r.Input, r.Output = nil, nil
	}
}

func (ent *entry) finalOutput() output {
	r := ent.last
	switch {
	case r == nil:
		return activeOut(ActiveReady)
	case r.State == "ok" && ent.hasVal:
		return okOut(ent.value)
	case r.State == "failed":
		return output{state: StateFailed, msg: r.Message, kind: r.FailureKind, lines: r.FailingLines}
	}
	return activeOut(ActiveReady)
}

func (ent *entry) output() output {
	if ent.err != "" {
		return output{state: StateFailed, msg: ent.err, kind: ent.errKind}
	}
	if ent.job != nil {
		if ent.def.publish && ent.last != nil && ent.last.finished() {
			return ent.finalOutput()
		}
		return activeOut(ent.job.activeState())
	}
	return ent.finalOutput()
}

func (ent *entry) expired(now time.Time) bool {
	return ent.last.ExpiresAt != 0 && now.UnixNano() >= ent.last.ExpiresAt
}

// want makes sure the entry's result is for input digest idig, starting a job if needed.
func (ent *entry) want(idig string, in any, label string) {
	ent.input, ent.idig, ent.label = in, idig, label
	if j := ent.job; j != nil {
		if j.idig == idig {
			return
		}
		j.cancel(errSuperseded)
		ent.job = nil
	}
	ent.launch(false)
}

// launch starts a job if the entry's result is missing, unfinished, stale or (when
// retrying) a disk-full failure; it arms the timer of an expiry or of a retry otherwise.
func (ent *entry) launch(retrying bool) {
	idig := ent.idig
	last := ent.last
	switch {
	case last == nil:
		ent.start(LaneUrgent, nil)
	case !last.finished():
		if last.InputDigest == idig {
			ent.start(last.Lane, last)
		} else {
			ent.start(LaneUrgent, nil)
		}
	case last.InputDigest != idig || last.Rebuild || ent.expired(time.Now()) || (last.State == "ok" && !ent.hasVal):
		ent.start(LaneBackground, nil)
	case last.State == "failed" && last.FailureKind == FailDiskFull:
		if retrying {
			ent.start(LaneBackground, nil)
		} else {
			ent.armRetry()
		}
	default:
		ent.armExpiry()
	}
}

// armRetry starts the entry's job again after a backoff: its last build failed, or could
// not be recorded, because a disk was full. Nothing else would start it again (its input
// is unchanged), so without this the entry would keep the failure once space returns.
func (ent *entry) armRetry() {
	if ent.timer != nil {
		return
	}
	e := ent.e
	d := e.retryDelay(ent.retries + 1)
	ent.retries++
	e.log.Warn("job starts again after a backoff", "op", ent.def.name, "key", ent.label, "in", d, "retry", ent.retries)
	ent.timer = time.AfterFunc(d, func() {
		e.post(func() {
			ent.timer = nil
			if ent.refs > 0 && ent.job == nil {
				ent.err, ent.errKind = "", ""
				ent.launch(true)
				ent.touch()
			}
		})
	})
}

// startFailed records that a job could not be started; a failed store write is retried.
func (ent *entry) startFailed(err error) {
	ent.err, ent.errKind = err.Error(), KindOf(err)
	ent.e.log.Error("start job", "op", ent.def.name, "key", ent.label, "err", err)
	ent.armRetry()
}

func (ent *entry) armExpiry() {
	if ent.timer != nil || ent.last == nil || ent.last.ExpiresAt == 0 {
		return
	}
	e := ent.e
	d := time.Until(time.Unix(0, ent.last.ExpiresAt))
	ent.timer = time.AfterFunc(d, func() {
		e.post(func() {
			ent.timer = nil
			if ent.refs > 0 && ent.job == nil && ent.last != nil && ent.expired(time.Now()) {
				ent.start(LaneBackground, nil)
				ent.touch()
			}
		})
	})
}

func (ent *entry) stopTimer() {
	if ent.timer != nil {
		ent.timer.Stop()
		ent.timer = nil
	}
}

// touch marks every node of the entry for re-evaluation.
func (ent *entry) touch() {
	for _, n := range ent.nodes {
		ent.e.markDirty(n)
	}
}

// start records a new build (or resumes an interrupted one) and runs it.
func (ent *entry) start(lane Lane, resume *jobRow) {
	e := ent.e
	if ctx := e.runContext(); ctx.Err() != nil {
		return // stopping: the job is started by the next Run that wants it
	}
	ent.stopTimer()
	ent.err = ""
	var row jobRow
	if resume != nil {
		row = *resume
		row.State = "ready"
		if err := e.db.setState(row.ID, "ready"); err != nil {
			ent.startFailed(fmt.Errorf("resume job %d of %s: %w", row.ID, ent.def.name, err))
			return
		}
	} else {
		if ent.input == nil {
			ent.err = "no input to start a job with"
			return
		}
		key, _, b, err := ent.def.encode(ent.input)
		if err != nil {
			ent.err = err.Error()
			return
		}
		build := 1
		if ent.last != nil {
			build = ent.last.Build + 1
		}
		if j, _ := e.db.latest(ent.k.op, ent.k.digest); j != nil && j.Build >= build {
			build = j.Build + 1
		}
		row = jobRow{
			Op: ent.def.name, Digest: ent.k.digest, Key: key, Label: ent.label, Build: build,
			InputDigest: ent.idig, Input: b, State: "ready", Level: ent.def.level, Lane: lane,
			ReadyAt: time.Now().UnixNano(),
		}
		if err := e.db.insert(&row); err != nil {
			ent.startFailed(err)
			return
		}
	}
	j := e.newJob(ent, &row, resume != nil)
	ent.job = j
	if resume != nil {
		ent.last = nil
		if prev, _ := e.db.history(ent.k.op, ent.k.digest, 2); len(prev) == 2 && prev[1].finished() {
			ent.setLast(prev[1])
		}
	}
	e.metrics.jobsStarted.WithLabelValues(ent.def.name, string(lane)).Inc()
	e.jobWG.Add(1)
	go e.runJob(j)
}

// finished takes the final row of job j.
func (ent *entry) finished(j *runningJob, r *jobRow) {
	e := ent.e
	if ent.job == j {
		ent.job = nil
		ent.setLast(r)
		if r.FailureKind != FailDiskFull {
			ent.retries = 0
		}
		if ent.refs > 0 {
			switch {
			case r.Rebuild || !r.finished():
				// Auto-cancelled, but wanted again meanwhile.
				ent.want(ent.idig, ent.input, ent.label)
			case r.FailureKind == FailDiskFull:
				ent.armRetry()
			default:
				ent.armExpiry()
			}
		}
		ent.touch()
	}
	if ent.refs == 0 && ent.job == nil {
		e.forget(ent)
	}
}

func (e *Engine) forget(ent *entry) {
	ent.stopTimer()
	if e.entries[ent.k] == ent {
		delete(e.entries, ent.k)
		e.metrics.entries.Set(float64(len(e.entries)))
	}
}

// unrefEntry drops a node's reference at the end of a pass; a job nobody wants any
// more is cancelled.
func (e *Engine) unrefEntry(ent *entry) {
	ent.refs--
	if ent.refs > 0 {
		return
	}
	if ent.job != nil {
		ent.job.cancel(errNotNeeded)
		return
	}
	e.forget(ent)
}

// expiry is when a result finished at t expires: validFor after t, less a random part
// of up to jitter*validFor so that results made together do not expire together.
func expiry(t time.Time, validFor time.Duration, jitter float64) int64 {
	if validFor <= 0 {
		return 0
	}
	spread := time.Duration(rand.Float64() * jitter * float64(validFor))
	return t.Add(validFor - spread).UnixNano()
}
