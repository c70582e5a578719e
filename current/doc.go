// Package current is kiln's incremental pipeline engine.
//
// A pipeline is ordinary Go code that builds a graph of typed values (Term[T]) from
// inputs (monitors, variables) through pure steps (Map, Pair, Bind, ListMap, ...) and
// cached operations (Do with an Op: builds and publishes). An Engine evaluates the graph,
// re-evaluates only what depends on a changed input, runs operations as jobs with logs,
// keeps every result in SQLite and offers the introspection and control a console needs.
// See docs/engine.md.
package current
