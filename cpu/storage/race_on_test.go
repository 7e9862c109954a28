//go:build race

package storage_test

// raceEnabled: the race detector slows client, disk and the disk's child
// process several times over; timeouts widen under it.
const raceEnabled = true
