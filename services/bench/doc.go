// Package bench is the continuous benchmarking service: a repository that opts in
// with a bench section in .kiln.yml has its benchmarks run on its branches and pull
// requests, their results (current-bench's JSON format) stored, plotted and judged
// against noise, and significant changes reported on the forge.
package bench
