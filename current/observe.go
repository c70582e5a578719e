package current

// Observed is the state of a term as a value: its value when ok, why it failed, or
// what it waits for. See Observe.
type Observed[T any] struct {
	State   State       `json:"state"`
	Active  ActiveState `json:"active"`
	Message string      `json:"message,omitempty"`
	// Kind says whose fault a failure is (empty unless a job failed).
	Kind FailureKind `json:"failure_kind,omitempty"`
	// Lines are the log lines that explain a job's failure (see WithLines).
	Lines []string `json:"failing_lines,omitempty"`
	Value T        `json:"value"`
}

type observeImpl struct{ mk func(out output) any }

func (o *observeImpl) compute(n *node) output { return okOut(o.mk(n.inputs[0].out)) }

// display shows the node as ok whatever its input's state: that state is its value.
func (o *observeImpl) display(_ *node, out output) (State, string) { return out.state, out.msg }

// Observe is always ok, with t's state as its value, so a pipeline can report progress
// (a status saying which jobs still run) before every input has a value.
func Observe[T any](t Term[T]) Term[Observed[T]] {
	return Term[Observed[T]]{newNode("observe", "state", &observeImpl{func(out output) any {
		return Observed[T]{State: out.state, Active: out.active, Message: out.msg, Kind: out.kind, Lines: out.lines, Value: as[T](out.value)}
	}}, t.n)}
}
