//go:build race

package dgram_test

// raceEnabled: the race detector makes sync.Pool (x/net's message
// headers) drop items at random, which turns into allocations the
// allocation checks would blame on the Conn.
const raceEnabled = true
