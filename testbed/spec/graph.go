package spec

import (
	"fmt"
	"strings"
)

// graphSegments returns the segment names to draw: the declared ones, or
// the default segment when there are none yet.
func (t *Topology) graphSegments() []string {
	if len(t.Segments) == 0 {
		return []string{DefaultSegment}
	}
	names := make([]string, len(t.Segments))
	for i, s := range t.Segments {
		names[i] = s.Name
	}
	return names
}

// segmentOf returns the segment a node or host port hangs off.
func (t *Topology) segmentOf(name string) string {
	if name == "" && len(t.Segments) <= 1 {
		return t.graphSegments()[0]
	}
	return name
}

// nodeLabel lists a node's name, kind, address and kind parameters.
func nodeLabel(n *Node) []string {
	lines := []string{n.Name, string(n.Kind)}
	if n.IP.IsValid() {
		lines = append(lines, n.IP.String())
	}
	if n.Disk != nil && n.Disk.SizeBytes > 0 {
		lines = append(lines, FormatSize(n.Disk.SizeBytes))
	}
	if d := n.Display; d != nil && d.Width > 0 && d.Height > 0 {
		lines = append(lines, fmt.Sprintf("%dx%d %s", d.Width, d.Height, d.Format))
	}
	return lines
}

func hostLabel(h *HostAccess) []string {
	lines := []string{"host"}
	if h.IP.IsValid() {
		lines = append(lines, h.IP.String())
	}
	return lines
}

// linkLabel says what a node's link does to its frames: rate, loss,
// corruption, delay, or "down"; empty for a clean link.
func linkLabel(l LinkParams) string {
	if l.Down {
		return "DOWN"
	}
	var parts []string
	if l.RateBits > 0 {
		parts = append(parts, FormatRate(l.RateBits))
	}
	if l.LossPPM > 0 {
		parts = append(parts, "loss "+FormatPercent(l.LossPPM))
	}
	if l.CorruptPPM > 0 {
		parts = append(parts, "corrupt "+FormatPercent(l.CorruptPPM))
	}
	if l.Delay > 0 {
		parts = append(parts, "delay "+l.Delay.String())
	}
	return strings.Join(parts, ", ")
}

// dotShapes draws each kind in a shape that hints at what it is.
var dotShapes = map[Kind]string{KindCPU: "box3d", KindDisk: "cylinder", KindDisplay: "tab"}

// DOT renders the topology as a Graphviz graph: each segment a switch,
// each node labelled with its kind and address, each link with its rate.
// Resolve first to see addresses and defaults.
func (t *Topology) DOT() string {
	var b strings.Builder
	title := t.Name
	if t.Subnet.IsValid() {
		title += " " + t.Subnet.String()
	}
	fmt.Fprintf(&b, "graph %s {\n", dotQuote(t.Name))
	fmt.Fprintf(&b, "\tlabel=%s;\n\tlabelloc=t;\n", dotQuote(title))
	b.WriteString("\tnode [fontname=\"Helvetica\"];\n\tedge [fontname=\"Helvetica\", fontsize=10];\n")
	for _, s := range t.graphSegments() {
		fmt.Fprintf(&b, "\t%s [shape=box, style=\"rounded,filled\", fillcolor=\"#dddddd\", label=%s];\n",
			dotQuote("segment:"+s), dotQuote(s+"\nswitch"))
	}
	if h := t.HostAccess; h != nil {
		fmt.Fprintf(&b, "\t%s [shape=house, label=%s];\n", dotQuote("host"), dotQuote(strings.Join(hostLabel(h), "\n")))
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		shape := dotShapes[n.Kind]
		if shape == "" {
			shape = "ellipse"
		}
		fmt.Fprintf(&b, "\t%s [shape=%s, label=%s];\n", dotQuote("node:"+n.Name), shape, dotQuote(strings.Join(nodeLabel(n), "\n")))
	}
	if h := t.HostAccess; h != nil {
		fmt.Fprintf(&b, "\t%s -- %s;\n", dotQuote("host"), dotQuote("segment:"+t.segmentOf(h.Segment)))
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		fmt.Fprintf(&b, "\t%s -- %s", dotQuote("node:"+n.Name), dotQuote("segment:"+t.segmentOf(n.Segment)))
		if l := linkLabel(n.Link); l != "" {
			style := ""
			if n.Link.Down {
				style = ", style=dashed, color=red"
			}
			fmt.Fprintf(&b, " [label=%s%s]", dotQuote(l), style)
		}
		b.WriteString(";\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// dotQuote makes s a DOT string literal; newlines become DOT's \n.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", "")
	return `"` + r.Replace(s) + `"`
}

// Mermaid renders the same graph as DOT in Mermaid flowchart syntax, for
// Markdown pages. Identifiers are positional (s0, n0, host) so that any
// name renders safely.
func (t *Topology) Mermaid() string {
	var b strings.Builder
	title := t.Name
	if t.Subnet.IsValid() {
		title += " " + t.Subnet.String()
	}
	fmt.Fprintf(&b, "---\ntitle: %s\n---\nflowchart LR\n", mermaidText(title))
	segs := t.graphSegments()
	segID := map[string]string{}
	for i, s := range segs {
		id := fmt.Sprintf("s%d", i)
		segID[s] = id
		fmt.Fprintf(&b, "    %s{{\"%s\"}}\n", id, mermaidText(s+"\nswitch"))
	}
	// A node on an undeclared segment still gets drawn, on its own.
	idOf := func(seg string) string {
		seg = t.segmentOf(seg)
		if id, ok := segID[seg]; ok {
			return id
		}
		id := fmt.Sprintf("s%d", len(segID))
		segID[seg] = id
		fmt.Fprintf(&b, "    %s{{\"%s\"}}\n", id, mermaidText(seg+"\nswitch"))
		return id
	}
	if h := t.HostAccess; h != nil {
		fmt.Fprintf(&b, "    host[/\"%s\"\\]\n", mermaidText(strings.Join(hostLabel(h), "\n")))
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		open, close := "[\"", "\"]"
		switch n.Kind {
		case KindDisk:
			open, close = "[(\"", "\")]"
		case KindDisplay:
			open, close = "[/\"", "\"/]"
		case KindCPU:
			open, close = "[[\"", "\"]]"
		}
		fmt.Fprintf(&b, "    n%d%s%s%s\n", i, open, mermaidText(strings.Join(nodeLabel(n), "\n")), close)
	}
	if h := t.HostAccess; h != nil {
		fmt.Fprintf(&b, "    host --- %s\n", idOf(h.Segment))
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		seg := idOf(n.Segment)
		if l := linkLabel(n.Link); l != "" {
			fmt.Fprintf(&b, "    n%d ---|\"%s\"| %s\n", i, mermaidText(l), seg)
		} else {
			fmt.Fprintf(&b, "    n%d --- %s\n", i, seg)
		}
	}
	return b.String()
}

// mermaidText escapes label text: quotes and markup characters become
// Mermaid entity codes, newlines become line breaks.
func mermaidText(s string) string {
	r := strings.NewReplacer(`"`, "#quot;", "<", "#lt;", ">", "#gt;", "#", "#35;", "\r", "", "\n", "<br/>")
	return r.Replace(s)
}
