//go:build race

package stack

// raceEnabled: the race detector makes sync.Pool drop items at random,
// which turns into allocations that the allocation tests would blame on
// the stack.
const raceEnabled = true
