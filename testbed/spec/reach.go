package spec

import (
	"fmt"
	"strings"
)

// Warnings lists what is valid but probably not meant: today, nodes that
// can never reach each other because they sit on different segments (a
// segment is one layer-2 network, a bridge of its own; nothing routes
// between segments).
func (t *Topology) Warnings() []string {
	var order []string
	on := map[string][]string{}
	for _, n := range t.Nodes {
		s := n.Segment
		if s == "" {
			s = DefaultSegment
			if len(t.Segments) == 1 {
				s = t.Segments[0].Name
			}
		}
		if _, ok := on[s]; !ok {
			order = append(order, s)
		}
		on[s] = append(on[s], n.Name)
	}
	if len(order) < 2 {
		return nil
	}
	var parts []string
	for _, s := range order {
		parts = append(parts, fmt.Sprintf("%s (%s)", s, strings.Join(on[s], ", ")))
	}
	return []string{fmt.Sprintf("nodes on different segments can never reach each other (nothing routes between segments): %s",
		strings.Join(parts, "; "))}
}
