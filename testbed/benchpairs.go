package testbed

import "errors"

// BenchPairs is the (from, to) pairs a bench measures: every ordered pair
// of nodes with matrix, else from -> to where an empty end is the plan's
// first node (from) or its second (to), the other one if that is the
// given end.
func (p *Plan) BenchPairs(from, to string, matrix bool) ([][2]string, error) {
	if matrix {
		var pairs [][2]string
		for _, a := range p.Nodes {
			for _, b := range p.Nodes {
				if a.Name != b.Name {
					pairs = append(pairs, [2]string{a.Name, b.Name})
				}
			}
		}
		return pairs, nil
	}
	if from == "" || to == "" {
		if len(p.Nodes) < 2 {
			return nil, errors.New("bench needs two peripherals")
		}
		if from == "" {
			from = p.Nodes[0].Name
			if from == to {
				from = p.Nodes[1].Name
			}
		}
		if to == "" {
			to = p.Nodes[1].Name
			if to == from {
				to = p.Nodes[0].Name
			}
		}
	}
	return [][2]string{{from, to}}, nil
}
