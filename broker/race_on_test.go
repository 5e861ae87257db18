//go:build race

package broker_test

// raceEnabled: the race detector instruments every frame, so stack sizes
// measured in a -race build say nothing about a normal one.
const raceEnabled = true
