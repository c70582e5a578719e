package current

import (
	"fmt"
	"slices"
)

// State is the state of one node of the graph (or of the value it outputs).
type State int

// The node states.
const (
	// StateActive: the value is not known yet; Active says why.
	StateActive State = iota
	// StateOk: the node has a value.
	StateOk
	// StateFailed: the node's own work failed; Message says why.
	StateFailed
	// StateBlocked: the node cannot run because an input failed or is not ready yet.
	StateBlocked
)

func (s State) String() string {
	switch s {
	case StateActive:
		return "active"
	case StateOk:
		return "ok"
	case StateFailed:
		return "failed"
	case StateBlocked:
		return "blocked"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// MarshalText renders the state as its name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ActiveState says what an active node is doing.
type ActiveState int

// The active sub-states.
const (
	// ActiveReady: waiting to start (pool slot, input, first read).
	ActiveReady ActiveState = iota
	// ActiveRunning: the work is running.
	ActiveRunning
	// ActiveWaitingForConfirmation: held until an operator confirms it.
	ActiveWaitingForConfirmation
)

func (a ActiveState) String() string {
	switch a {
	case ActiveReady:
		return "ready"
	case ActiveRunning:
		return "running"
	case ActiveWaitingForConfirmation:
		return "waiting-for-confirmation"
	}
	return fmt.Sprintf("active(%d)", int(a))
}

// MarshalText renders the active state as its name.
func (a ActiveState) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// output is what a node hands to its dependents.
type output struct {
	state  State // StateOk, StateFailed or StateActive (never StateBlocked)
	active ActiveState
	value  any
	msg    string
	// kind and lines describe a failure: whose fault it is and the log lines that
	// explain it (see WithLines). Failures not made by a job have neither.
	kind  FailureKind
	lines []string
}

// passOn is o without its value: the state of an input a node cannot compute without.
func (o output) passOn() output { o.value = nil; return o }

func okOut(v any) output             { return output{state: StateOk, value: v} }
func failOut(msg string) output      { return output{state: StateFailed, msg: msg} }
func activeOut(a ActiveState) output { return output{state: StateActive, active: a} }

// sameOutput reports whether two outputs are certainly equal (comparable values only).
func sameOutput(a, b output) bool {
	if a.state != b.state || a.active != b.active || a.msg != b.msg || a.kind != b.kind || !slices.Equal(a.lines, b.lines) {
		return false
	}
	return equalValues(a.value, b.value)
}
