// Package spec reads, checks and draws netstation topology files.
//
// A topology file is YAML with snake_case keys. Parse (or Load) decodes it
// and validates it in one pass, reporting every problem at once as a
// *ValidationError whose lines read "file:line: field: message"; unknown
// keys are errors, so a typo never silently drops a setting. Parsing has
// no side effects: a broken file creates nothing. Resolve then fills the
// defaults (subnet, segment, addresses, MACs, kind parameters)
// deterministically, so the plan built from a resolved Topology is the
// same on every run. DOT and Mermaid draw the result.
//
// The keys, all documented with examples in docs/topology.md:
//
//	name          testbed name, ^[a-z][a-z0-9]{0,9}$ (it prefixes kernel names); required
//	subnet        IPv4 CIDR, /8 to /30, in network form; optional: the caller
//	              picks one that avoids the host's routes, a /24 or as large as the
//	              nodes need (see PickSubnetFor)
//	host_access   optional mapping: a veth into the host's namespace
//	  ip          its address; default: the highest usable (.254 in a /24)
//	  segment     its segment; optional when there is one
//	segments      optional list; default: one segment "lan"
//	  - name      ^[a-z][a-z0-9-]{0,14}$, unique
//	nodes         list of at least one node
//	  - name      ^[a-z][a-z0-9-]{0,14}$, unique, not fabric or host; required
//	    kind      cpu | disk | display; required
//	    ip        optional; inside subnet, not network/broadcast, unique;
//	              needs an explicit subnet. Default: from .10 upward in node order
//	    mac       optional; 6-byte unicast, unique. Default: 02:xx:xx:xx:xx:xx
//	              derived from (testbed name, node name)
//	    segment   optional when there is one segment
//	    link      optional mapping
//	      rate    egress rate limit: number + bit|kbit|mbit|gbit (decimal, as tc)
//	    disk      only for kind disk
//	      size    number + B|KiB|MiB|GiB|TiB|KB|MB|GB|TB; default 256MiB
//	    display   only for kind display
//	      width   1-8192, default 1280
//	      height  1-8192, default 720
//	      format  rgba | bgra | rgb, default rgba
//
// Keys planned for later versions (top-level hosts; node host and
// capabilities; link loss, delay, jitter, corrupt, duplicate, reorder) are
// rejected with ErrNotSupported until they exist.
//
// YAML aliases (*name) are rejected: a topology is short enough to write
// out, and expanding aliases is how YAML bombs work. A file holds one
// document of at most MaxFileSize bytes.
package spec
