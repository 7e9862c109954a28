//go:build race

package afpacket

// raceEnabled: the race detector slows the stack several times over;
// bounds on latency widen under it (what must hold stays checked).
const raceEnabled = true
