package dgram

import "testing"

// TestAdjacent: only a buffer that starts where the last one ends, inside
// the same backing array, merges into its iovec.
func TestAdjacent(t *testing.T) {
	big := make([]byte, 300)
	a, b, c := big[0:100], big[100:200], big[200:300]
	other := make([]byte, 100)
	for _, tc := range []struct {
		name string
		x, y []byte
		want bool
	}{
		{"next in the array", a, b, true},
		{"merged run and the next", big[0:200], c, true},
		{"a gap", a, c, false},
		{"backwards", b, a, false},
		{"another array", a, other, false},
		{"capped at its end", big[0:100:100], b, false},
		{"empty", a, big[100:100], false},
	} {
		if got := adjacent(tc.x, tc.y); got != tc.want {
			t.Errorf("%s: adjacent = %v, want %v", tc.name, got, tc.want)
		}
	}
}
